"""The full REST + WebSocket flow against a real server on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lipcore.server.protocol import HEADER_SIZE

from .conftest import FAKE_AVATAR_ID, Received, RunningServer, is_json, recv_one, recv_until


async def open_session(client: httpx.AsyncClient, srv: RunningServer, *, tts: str = "replay",
                       voice: str = "test", headers: dict[str, str] | None = None
                       ) -> dict[str, Any]:
    r = await client.post(f"{srv.url}/session-2d", headers=headers,
                          json={"avatar_id": FAKE_AVATAR_ID, "voice_id": voice, "tts": tts})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_speak_flow_rest_and_ws(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            assert s["ws_url"].startswith(server.ws_base + "/ws/" + s["session_id"] + "?token=")
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                _kind, hello = await recv_one(ws, rec)
                assert hello["type"] == "hello" and hello["protocol"] == 1
                assert hello["session_id"] == s["session_id"] and hello["resumed"] is False
                assert hello["lipsync"]["type"] == "sprites"
                assert hello["lipsync"]["atlas_url"].endswith("/atlas.json")
                assert hello["classes"][0] == "Rest" and "MBP" in hello["classes"]

                r = await client.post(f"{server.url}/session-2d/{s['session_id']}/speak",
                                      json={"text": "Hallo mein Freund, wie geht es dir?"})
                assert r.status_code == 200 and r.json() == {"ok": True}
                await recv_until(ws, rec, is_json("utterance_end", utterance=1))

            start = rec.json("utterance_start")[0]
            assert start["utterance"] == 1 and start["sample_rate"] == 16000
            assert start["text"] == "Hallo mein Freund, wie geht es dir?"
            audio = rec.audio(1)
            assert audio, "no audio frames"
            # pts on the utterance's audio timeline: contiguous chunks from 0
            pts = [h.pts_ms for h, _ in audio]
            assert pts[0] == 0.0
            expected = 0.0
            for h, payload in audio:
                assert h.pts_ms == pytest.approx(expected, abs=0.01)
                expected += len(payload) / 2 / 16000 * 1000
            end = rec.json("utterance_end")[0]
            assert end["duration_ms"] == pytest.approx(expected, abs=1)
            frames = [f for m in rec.json("visemes") if not m.get("provisional")
                      for f in m["frames"]]
            assert len(frames) > 20
            fpts = [f["pts_ms"] for f in frames]
            assert fpts == sorted(fpts) and len(set(fpts)) == len(fpts)
            # The replay's 100 ms chunks are shorter than the mapper's look-ahead: the first
            # audio leaves with a guess at its frames, each of which a final frame replaces.
            guessed = [f["pts_ms"] for m in rec.json("visemes") if m.get("provisional")
                       for f in m["frames"]]
            assert guessed and set(guessed) <= set(fpts)
            kinds = [i[1]["type"] if i[0] == "json" else "audio" for i in rec.items]
            assert kinds.index("visemes") < kinds.index("audio")  # a mouth for the first audio
            assert any(f["weights"] for f in frames), "the mouth never moved"
            assert frames[-1]["weights"] == {} or sum(frames[-1]["weights"].values()) < 0.05
            # order: start before audio before end
            kinds = [i[1]["type"] if i[0] == "json" else "audio" for i in rec.items]
            assert kinds.index("utterance_start") < kinds.index("audio")
            assert kinds.index("utterance_end") == len(kinds) - 1

            u = (await client.get(f"{server.url}/session-2d/{s['session_id']}/usage")).json()
            assert u["utterances"] == 1
            assert u["tts_characters"] == len("Hallo mein Freund, wie geht es dir?")
            assert u["audio_seconds"] == pytest.approx(expected / 1000, abs=0.01)

    asyncio.run(body())


def test_single_viseme_events_and_ws_speak(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"] + "&visemes=single") as ws:
                _, hello = await recv_one(ws, rec)
                assert hello["viseme_events"] == "single"
                await ws.send('{"type": "speak", "text": "Oma baut Boote"}')
                await recv_until(ws, rec, is_json("utterance_end"))
            assert not rec.json("visemes")
            single = rec.json("viseme")
            assert len(single) > 10 and all(v["utterance"] == 1 for v in single)
            assert any(v["weights"].get("MBP", 0) > 0.3 for v in single), "no bilabial closure"

    asyncio.run(body())


def test_ping_pong_clock(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                await ws.send('{"type": "ping", "id": 5, "client_time_ms": 123.5}')
                _, pong = await recv_until(ws, rec, is_json("pong"))
            assert pong["id"] == 5 and pong["client_time_ms"] == 123.5
            import time
            assert abs(pong["server_time_ms"] - time.time() * 1000) < 5000

    asyncio.run(body())


def test_text_deltas_stream_into_tts(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server, tts="realtime")
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                for d in ["Hal", "lo Welt, ", "wie geht ", "es dir"]:
                    await ws.send(f'{{"type": "text_delta", "delta": "{d}"}}')
                # audio starts before the turn is complete (the TTS is fed incrementally)
                await recv_until(ws, rec, lambda i: i[0] == "audio")
                assert not rec.json("utterance_end")
                await asyncio.sleep(0.2)
                await ws.send('{"type": "text_end"}')
                await recv_until(ws, rec, is_json("utterance_end"))
            start = rec.json("utterance_start")[0]
            assert start["text"] is None
            assert server.tts["realtime"].texts[-1] == "Hallo Welt, wie geht es dir"
            u = (await client.get(f"{server.url}/session-2d/{s['session_id']}/usage")).json()
            assert u["tts_characters"] == len("Hallo Welt, wie geht es dir")

    asyncio.run(body())


def test_queue_of_utterances_numbered(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                for text in ["eins", "zwei", "drei"]:
                    r = await client.post(f"{server.url}/session-2d/{s['session_id']}/speak",
                                          json={"text": text})
                    assert r.status_code == 200
                await recv_until(ws, rec, is_json("utterance_end", utterance=3))
            assert [m["utterance"] for m in rec.json("utterance_start")] == [1, 2, 3]
            assert [m["text"] for m in rec.json("utterance_start")] == ["eins", "zwei", "drei"]

    asyncio.run(body())


def test_delete_session_closes_socket(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                r = await client.delete(f"{server.url}/session-2d/{s['session_id']}")
                assert r.status_code == 200
                with pytest.raises(ConnectionClosed) as exc:
                    await recv_one(ws, rec)
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 1000
            r = await client.post(f"{server.url}/session-2d/{s['session_id']}/speak",
                                  json={"text": "hallo"})
            assert r.status_code == 410 and r.json()["error"] == "session_expired"

    asyncio.run(body())


def test_binary_header_is_16_bytes(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            async with connect(s["ws_url"]) as ws:
                await ws.recv()
                await ws.send('{"type": "speak", "text": "ja"}')
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(msg, bytes):
                        break
            assert msg[0] == 1 and msg[1] == 1 and msg[2:4] == b"\0\0"
            assert int.from_bytes(msg[4:8], "little") == 1
            assert (len(msg) - HEADER_SIZE) % 2 == 0

    asyncio.run(body())


def test_stop_after_the_utterance_finished_says_how_far_it_was_sent(
    server: RunningServer,
) -> None:
    """The client may still be playing an utterance the server has finished sending: a stop
    then names that utterance and where its audio ended (not 0)."""

    async def body() -> None:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                await ws.send('{"type": "speak", "text": "Oma baut Boote"}')
                _, end = await recv_until(ws, rec, is_json("utterance_end", utterance=1))
                await ws.send('{"type": "stop"}')
                _, stop = await recv_until(ws, rec, is_json("stop"))
            assert stop["utterance"] == 1
            assert stop["at_pts_ms"] == pytest.approx(end["duration_ms"], abs=0.2)

    asyncio.run(body())


def test_inline_visemes_ride_in_the_audio_frames(server: RunningServer) -> None:
    """visemes=inline: each chunk's frames travel in front of its audio in one binary frame
    (kind 3); the frames, the audio and their timing are those of the batched form."""

    usage: dict[str, dict[str, Any]] = {}

    async def session(mode: str) -> Received:
        async with httpx.AsyncClient() as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"] + "&visemes=" + mode) as ws:
                _, hello = await recv_one(ws, rec)
                assert hello["viseme_events"] == mode
                await ws.send('{"type": "speak", "text": "Oma baut Boote am Meer"}')
                await recv_until(ws, rec, is_json("utterance_end"))
            r = await client.get(f"{server.url}/session-2d/{s['session_id']}/usage")
            usage[mode] = r.json()
        return rec

    async def body() -> None:
        inline, batched = await session("inline"), await session("batched")
        # The session's usage counts the audio whichever form carried it.
        assert usage["inline"]["audio_seconds"] == pytest.approx(
            usage["batched"]["audio_seconds"]
        )
        assert usage["inline"]["audio_seconds"] > 1.0
        carried = [i for i in inline.items if len(i) == 3 and i[0] == "json"]
        assert len(carried) > 10
        # Only a last step without audio (the mouth closing after the sound) comes as text.
        assert len(inline.json("visemes")) - len(carried) <= 1
        assert inline.json("visemes") == batched.json("visemes")
        assert [(h.pts_ms, p) for h, p in inline.audio(1)] == [
            (h.pts_ms, p) for h, p in batched.audio(1)
        ]
        kinds = {h.kind for h, _ in inline.audio(1)}
        assert kinds <= {1, 3} and 3 in kinds

    asyncio.run(body())
