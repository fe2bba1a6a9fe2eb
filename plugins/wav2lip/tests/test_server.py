"""Variant C through the real server: a session on a Wav2Lip avatar receives, beside the audio,
the mouth patches of each utterance as binary frames of kind 2 (docs/protocol.md), one per
video frame of its audio, on the utterance's audio timeline."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from lipcore_wav2lip.patches import decode_patch_frame
from websockets.asyncio.client import connect

from lipcore.server import ServerSettings, create_app

pytestmark = pytest.mark.slow


def _serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    return url, server, thread


def test_session_on_a_wav2lip_avatar_streams_mouth_patches(
    grace_hopper_path: Path,
    face_model_path: Path,
    tiny_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lipcore.avatar.store import build_avatar

    monkeypatch.setenv("LIPCORE_WAV2LIP_MODEL", str(tiny_model_path))
    data = tmp_path / "data"
    build_avatar(grace_hopper_path, data / "avatars" / "a_w2l_test", backend="onnx",
                 seconds=3.0, avatar_id="a_w2l_test", face_model=face_model_path)  # fmt: skip
    url, server, thread = _serve(create_app(settings=ServerSettings(data_dir=data)))
    try:

        async def run() -> tuple[list[Any], list[bytes], dict[str, Any]]:
            async with httpx.AsyncClient() as http:
                s = (await http.post(f"{url}/session-2d",
                                     json={"avatar_id": "a_w2l_test", "voice_id": "de"})).json()
                patches: list[Any] = []
                audio: list[bytes] = []
                async with connect(s["ws_url"]) as ws:
                    hello = json.loads(await ws.recv())
                    assert hello["lipsync"]["type"] == "onnx"
                    # The mouth comes as patches at the avatar's 25 fps, and hello says so
                    # (issue 18: it said the 30 fps viseme rate); no model file for clients.
                    assert hello["fps"] == 25.0 and hello["viseme_fps"] == 30.0, hello
                    assert "model_url" not in hello["lipsync"], hello["lipsync"]
                    await ws.send(json.dumps({"type": "speak", "text": "Mama baut ein Boot."}))
                    while True:
                        msg = await asyncio.wait_for(ws.recv(), 30)
                        if isinstance(msg, bytes):
                            if msg[0] == 2:
                                patches.append(decode_patch_frame(msg))
                            else:
                                audio.append(msg)
                            continue
                        ev = json.loads(msg)
                        assert ev["type"] != "error", ev
                        if ev["type"] == "utterance_end":
                            return patches, audio, ev
            raise AssertionError("unreachable")

        patches, audio, end = asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(10)
    assert audio, "no audio frames"
    # One patch per 25 fps video frame of the utterance's audio, in order, on its timeline.
    expected = end["duration_ms"] * 25 / 1000
    assert abs(len(patches) - expected) <= 2, (len(patches), expected)
    pts = [p.pts_ms for p in patches]
    assert pts == sorted(pts) and pts[0] == 0.0
    assert all(p.utterance == 1 for p in patches)


def test_without_a_model_the_server_offers_no_wav2lip_and_says_so(
    grace_hopper_path: Path,
    face_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No model configured (issue 18 item 4, 11): GET /backends marks onnx unavailable with the
    reason; a session on a Wav2Lip avatar is a 503 server fault with that reason, and no session
    is left behind; the avatar's listing carries a name and a thumbnail."""
    from lipcore.avatar.store import build_avatar

    monkeypatch.delenv("LIPCORE_WAV2LIP_MODEL", raising=False)
    data = tmp_path / "data"
    build_avatar(grace_hopper_path, data / "avatars" / "a_w2l_nomodel", backend="onnx",
                 seconds=3.0, avatar_id="a_w2l_nomodel", face_model=face_model_path,
                 name="Grace")  # fmt: skip
    url, server, thread = _serve(create_app(settings=ServerSettings(data_dir=data)))
    try:
        with httpx.Client(base_url=url) as http:
            backends = http.get("/backends").json()
            by_type = {b["type"]: b for b in backends["backends"]}
            assert by_type["onnx"]["available"] is False
            assert "LIPCORE_WAV2LIP_MODEL" in by_type["onnx"]["reason"]
            assert by_type["sprites"]["available"] is True and by_type["sprites"]["reason"] is None
            assert backends["default"] in by_type
            r = http.post("/session-2d", json={"avatar_id": "a_w2l_nomodel", "voice_id": "de"})
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["error"] == "backend_unavailable", body
            assert "LIPCORE_WAV2LIP_MODEL" in body["detail"], body
            assert http.get("/healthz").json()["sessions"] == 0
            av = http.get("/avatars/a_w2l_nomodel").json()
            assert av["name"] == "Grace"
            assert av["thumbnail_url"] and av["lipsync_assets"].get("model_url") is None
            thumb = http.get(av["thumbnail_url"])
            assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_model_failing_at_run_time_is_reported_as_such(
    grace_hopper_path: Path,
    face_model_path: Path,
    tiny_model_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model that loads but fails inside ONNX Runtime while rendering: the client gets the
    wav2lip_model_run error with its reason, not "internal error" (issue 18 item 8)."""
    import onnxruntime
    from lipcore_wav2lip import runtime

    from lipcore.avatar.store import build_avatar

    def broken(self: Any, mel: Any, face: Any) -> Any:
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail(
            "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv")

    monkeypatch.setenv("LIPCORE_WAV2LIP_MODEL", str(tiny_model_path))
    data = tmp_path / "data"
    build_avatar(grace_hopper_path, data / "avatars" / "a_w2l_runfail", backend="onnx",
                 seconds=3.0, avatar_id="a_w2l_runfail", face_model=face_model_path)  # fmt: skip
    url, server, thread = _serve(create_app(settings=ServerSettings(data_dir=data)))
    try:

        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient() as http:
                r = await http.post(f"{url}/session-2d",
                                    json={"avatar_id": "a_w2l_runfail", "voice_id": "de"})
                assert r.status_code == 200, r.text
                s = r.json()
                # Loaded and trial-checked at session creation; it breaks only now.
                monkeypatch.setattr(runtime.Wav2LipModel, "_run_raw", broken)
                async with connect(s["ws_url"]) as ws:
                    json.loads(await ws.recv())
                    await ws.send(json.dumps({"type": "speak", "text": "Mama baut ein Boot."}))
                    while True:
                        msg = await asyncio.wait_for(ws.recv(), 30)
                        if isinstance(msg, bytes):
                            continue
                        ev = json.loads(msg)
                        if ev["type"] == "error":
                            return dict(ev)
            raise AssertionError("unreachable")

        ev = asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(10)
    assert ev["code"] == "wav2lip_model_run", ev
    assert "internal error" not in ev["message"] and "Wav2Lip model" in ev["message"], ev
