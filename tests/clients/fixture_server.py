"""A small protocol-v1 server with a synthetic avatar and *known* audio, for the web client's
browser tests.

Why not only the real server: here the audio is tone bursts at known times and the viseme frames
open the mouth exactly during the bursts, so a test can check the page's mouth against the
sound it plays with no TTS or mapper in between (an off-by-latency bug shows as a lag). The
real ``lipcore serve`` is exercised by ``test_web_real_server.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

WEB_DIR = Path(__file__).resolve().parents[2] / "src" / "lipcore" / "web"
CLASSES = ["Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH"]
OPENNESS = {
    "Rest": 0.0,
    "AI": 1.0,
    "E": 0.6,
    "U": 0.35,
    "O": 0.8,
    "MBP": 0.0,
    "FV": 0.15,
    "L": 0.5,
    "WQ": 0.3,
    "R": 0.4,
    "CH": 0.35,
    "TH": 0.3,
}
W, H, FPS, N_FRAMES = 400, 500, 25.0, 50
ROI = {"x": 140, "y": 320, "w": 120, "h": 72}
SAMPLE_RATE = 22050
#: Tone bursts (start_ms, end_ms) of the fixture utterance: where the mouth must be open.
BURSTS = [(200, 420), (560, 760), (900, 1180), (1320, 1480)]
#: A text with "long" in it gets one long vowel instead: time to look at the open mouth.
LONG_BURSTS = [(200, 1400)]
UTTERANCE_MS = 1700.0
VISEME_STEP_MS = 1000.0 / 30
CHUNK_MS = 100.0


def _face(dx: float = 0.0, dy: float = 0.0) -> Image.Image:
    img = Image.new("RGB", (W, H), (38, 44, 58))
    d = ImageDraw.Draw(img)
    d.ellipse((90 + dx, 80 + dy, 310 + dx, 430 + dy), fill=(222, 184, 160))
    d.ellipse((140 + dx, 200 + dy, 180 + dx, 220 + dy), fill=(60, 50, 50))
    d.ellipse((220 + dx, 200 + dy, 260 + dx, 220 + dy), fill=(60, 50, 50))
    d.line((170 + dx, 356 + dy, 230 + dx, 356 + dy), fill=(150, 70, 70), width=5)
    return img


def _mouth_cell(openness: float) -> Image.Image:
    """One ROI-sized sprite: skin with lips opened by ``openness`` (0 = the photo's line)."""
    photo = _face().crop((ROI["x"], ROI["y"], ROI["x"] + ROI["w"], ROI["y"] + ROI["h"]))
    d = ImageDraw.Draw(photo)
    cx, cy = ROI["w"] / 2, 36
    if openness <= 0.02:
        return photo
    hh = 2 + 22 * openness
    d.rectangle((0, 0, ROI["w"], ROI["h"]), fill=(222, 184, 160))
    d.ellipse((cx - 34, cy - hh / 2 - 4, cx + 34, cy + hh / 2 + 4), fill=(150, 70, 70))
    d.ellipse((cx - 28, cy - hh / 2, cx + 28, cy + hh / 2), fill=(40, 12, 16))
    return photo


def build_avatar(directory: Path) -> dict[str, Any]:
    """Write the synthetic avatar's files; return its AvatarizeResponse body (relative URLs)."""
    from lipcore.media import write_mp4

    directory.mkdir(parents=True, exist_ok=True)
    affines = []
    frames = []
    for i in range(N_FRAMES):
        ph = 2 * math.pi * i / N_FRAMES
        dx, dy = round(3 * math.sin(ph)), round(2 * math.sin(2 * ph))
        frames.append(np.asarray(_face(dx, dy)))
        affines.append([1.0, 0.0, float(dx), 0.0, 1.0, float(dy)])
    write_mp4(directory / "idle.mp4", frames, FPS)
    (directory / "mouth_track.json").write_text(json.dumps({"fps": FPS, "affines": affines}))
    cols, rows = 4, 3
    atlas = Image.new("RGB", (cols * ROI["w"], rows * ROI["h"]))
    for i, c in enumerate(CLASSES):
        atlas.paste(_mouth_cell(OPENNESS[c]), ((i % cols) * ROI["w"], (i // cols) * ROI["h"]))
    atlas.save(directory / "atlas.png")
    mask = Image.new("L", (ROI["w"], ROI["h"]), 0)
    ImageDraw.Draw(mask).ellipse((12, 8, ROI["w"] - 12, ROI["h"] - 8), fill=255)
    mask.filter(ImageFilter.GaussianBlur(5)).save(directory / "mask_mouth.png")
    (directory / "atlas.json").write_text(
        json.dumps(
            {
                "grid": {"cols": cols, "rows": rows},
                "classes": CLASSES,
                "mask": "mask_mouth.png",
                "roi": ROI,
                "image": "atlas.png",
            }
        )
    )
    # Variant B, as lipcore_meshwarp writes it: the ROI texture with the mouth closed (alpha =
    # mask), the interior, forward targets pulling the lower half down, and per class the
    # inner-lip opening polygon the client fills with the interior.
    gcols, grows = 16, 12
    tex = _mouth_cell(0.0).convert("RGBA")
    tex.putalpha(mask.filter(ImageFilter.GaussianBlur(5)))
    tex.save(directory / "mesh_texture.png")
    interior = Image.new("RGBA", (ROI["w"], ROI["h"]), (40, 12, 16, 255))
    ImageDraw.Draw(interior).rectangle((35, 26, 85, 33), fill=(235, 230, 220, 255))
    interior.save(directory / "interior.png")
    targets: dict[str, list[list[float]]] = {}
    openings: dict[str, list[list[float]]] = {}
    for c in CLASSES:
        pts = []
        for r in range(grows):
            for q in range(gcols):
                u, v = q / (gcols - 1), r / (grows - 1)
                bump = math.sin(math.pi * u) * math.sin(math.pi * v)
                pts.append([0.0, (14.0 if v > 0.5 else -4.0) * OPENNESS[c] * bump])
        targets[c] = pts
        hh = 18.0 * OPENNESS[c]
        openings[c] = [[60 + 28 * math.cos(2 * math.pi * k / 24),
                        36 + 1 + hh * math.sin(2 * math.pi * k / 24)] for k in range(24)]
    (directory / "meshdef.json").write_text(json.dumps({
        "grid": {"cols": gcols, "rows": grows}, "roi": ROI, "targets": targets,
        "warp": "forward", "classes": CLASSES, "openings": openings,
        "texture": "mesh_texture.png", "interior": "interior.png", "mask": "mask_mouth.png"}))

    def describe(kind: str) -> dict[str, Any]:
        lip: dict[str, Any] = {
            "type": kind,
            "mask_url": f"/files/{kind}/mask_mouth.png",
            "roi": ROI,
            "mouth_track_url": f"/files/{kind}/mouth_track.json",
        }
        if kind == "sprites":
            lip["atlas_url"] = "/files/sprites/atlas.json"
        else:
            lip["meshdef_url"] = "/files/mesh/meshdef.json"
        return {
            "avatar_id": f"fixture_{kind}",
            "idle_url": f"/files/{kind}/idle.mp4",
            "lipsync_assets": lip,
        }

    return {"sprites": describe("sprites"), "mesh": describe("mesh")}


def burst_gain(t_ms: float | np.ndarray, bursts: list[tuple[int, int]] = BURSTS) -> Any:
    """Envelope of the fixture utterance at ``t_ms``: 1 inside a burst, 10 ms linear edges."""
    t = np.asarray(t_ms, dtype=np.float64)
    g = np.zeros_like(t)
    for a, b in bursts:
        g = np.maximum(g, np.clip(np.minimum(t - a, b - t) / 10.0 + 0.5, 0.0, 1.0))
    return g


def utterance_pcm(bursts: list[tuple[int, int]] = BURSTS) -> bytes:
    n = int(SAMPLE_RATE * UTTERANCE_MS / 1000)
    t_ms = np.arange(n) / SAMPLE_RATE * 1000.0
    x = 0.4 * burst_gain(t_ms, bursts) * np.sin(2 * np.pi * 220.0 * t_ms / 1000.0)
    return (x * 32767).astype("<i2").tobytes()


def frame(payload: bytes, utterance: int, pts_ms: float) -> bytes:
    return struct.pack("<BBHId", 1, 1, 0, utterance, pts_ms) + payload


class Session:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.utterance = 0
        self.task: asyncio.Task[None] | None = None
        self.sent_ms = 0.0

    async def play(self, n: int, text: str) -> None:
        bursts = LONG_BURSTS if "long" in text else BURSTS
        pcm = utterance_pcm(bursts)
        await self.ws.send_text(
            json.dumps(
                {
                    "type": "utterance_start",
                    "utterance": n,
                    "sample_rate": SAMPLE_RATE,
                    "text": text,
                    "server_time_ms": time.time() * 1000,
                }
            )
        )
        step = int(SAMPLE_RATE * CHUNK_MS / 1000) * 2
        pts = 0.0
        next_frame = 0.0
        for off in range(0, len(pcm), step):
            chunk = pcm[off : off + step]
            end = pts + len(chunk) / 2 / SAMPLE_RATE * 1000
            frames = []
            while next_frame < end:
                g = float(burst_gain(next_frame, bursts))
                frames.append({"pts_ms": next_frame, "weights": {"AI": g} if g > 0.001 else {}})
                next_frame += VISEME_STEP_MS
            await self.ws.send_text(
                json.dumps({"type": "visemes", "utterance": n, "frames": frames})
            )
            await self.ws.send_bytes(frame(chunk, n, pts))
            self.sent_ms = end
            pts = end
            await asyncio.sleep(CHUNK_MS / 1000 / 4)  # 4× real time, like a fast TTS
        await self.ws.send_text(
            json.dumps(
                {"type": "utterance_end", "utterance": n, "duration_ms": pts, "reason": "done"}
            )
        )

    async def stop(self, reason: str) -> None:
        # Like the real server (docs/protocol.md): the stop is sent even when the utterance has
        # been sent in full, since the client may still be playing it.
        if self.task and not self.task.done():
            self.task.cancel()
        await self.ws.send_text(
            json.dumps(
                {
                    "type": "stop",
                    "utterance": self.utterance,
                    "at_pts_ms": self.sent_ms,
                    "ramp_ms": 150,
                    "reason": reason,
                }
            )
        )


def create_fixture_app(avatar_dir: Path) -> Starlette:
    avatars = build_avatar(avatar_dir / "sprites")
    build_avatar(avatar_dir / "mesh")
    tokens: dict[str, str] = {}

    async def list_avatars(request: Request) -> JSONResponse:
        return JSONResponse(list(avatars.values()))

    async def get_avatar(request: Request) -> JSONResponse:
        kind = request.path_params["avatar_id"].removeprefix("fixture_")
        if kind == "hologram":
            # An avatar of a lip-sync type the page does not know (a newer plugin's).
            av = json.loads(json.dumps(avatars["sprites"]))
            av["avatar_id"] = "fixture_hologram"
            av["lipsync_assets"]["type"] = "hologram"
            return JSONResponse(av)
        if kind == "glitch":
            # A plugin kind whose web renderer module does not load (not JavaScript at all).
            av = json.loads(json.dumps(avatars["sprites"]))
            av["avatar_id"] = "fixture_glitch"
            av["lipsync_assets"]["type"] = "glitch"
            av["lipsync_assets"]["renderer_url"] = "/files/sprites/atlas.json"
            return JSONResponse(av)
        if kind not in avatars:
            return JSONResponse({"detail": "no such avatar"}, status_code=404)
        return JSONResponse(avatars[kind])

    async def voices(request: Request) -> JSONResponse:
        return JSONResponse([{"id": "tone", "name": "Tone bursts", "language": "en"}])

    async def session(request: Request) -> JSONResponse:
        body = await request.json()
        sid = "s_" + secrets.token_hex(4)
        tokens[sid] = secrets.token_urlsafe(8)
        host = request.headers["host"]
        assert body["avatar_id"].startswith("fixture_")
        return JSONResponse(
            {"session_id": sid, "ws_url": f"ws://{host}/ws/{sid}?token={tokens[sid]}"}
        )

    async def ws_endpoint(ws: WebSocket) -> None:
        sid = ws.path_params["sid"]
        await ws.accept()
        if tokens.get(sid) != ws.query_params.get("token"):
            await ws.close(4401)
            return
        s = Session(ws)
        await ws.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "protocol": 1,
                    "session_id": sid,
                    "fps": 30.0,
                    "classes": CLASSES,
                    "audio": {"format": "s16le", "sample_rate": SAMPLE_RATE, "channels": 1},
                    "lipsync": avatars["sprites"]["lipsync_assets"],
                    "server_time_ms": time.time() * 1000,
                    "viseme_events": "batched",
                    "lead_ms": 0.0,
                    "resumed": False,
                }
            )
        )
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                if msg["type"] == "ping":
                    await ws.send_text(
                        json.dumps(
                            {
                                "type": "pong",
                                "id": msg["id"],
                                "client_time_ms": msg["client_time_ms"],
                                "server_time_ms": time.time() * 1000,
                            }
                        )
                    )
                elif msg["type"] == "speak":
                    if msg.get("barge_in"):
                        await s.stop("barge_in")
                    s.utterance += 1
                    s.task = asyncio.create_task(s.play(s.utterance, msg["text"]))
                elif msg["type"] == "stop":
                    await s.stop("client")
        except WebSocketDisconnect:
            if s.task:
                s.task.cancel()

    return Starlette(
        routes=[
            Route("/avatars", list_avatars),
            Route("/avatars/{avatar_id}", get_avatar),
            Route("/voices", voices),
            Route("/session-2d", session, methods=["POST"]),
            WebSocketRoute("/ws/{sid}", ws_endpoint),
            Mount("/files", StaticFiles(directory=avatar_dir)),
            Mount("/", StaticFiles(directory=WEB_DIR, html=True)),
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with uvicorn on loopback in a thread; yield its base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="auto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
