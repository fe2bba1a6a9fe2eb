"""A session speaks a recording (``POST /session-2d/{id}/speak_audio``): real server on
loopback, real WebSocket client, real espeak-ng speech as the upload; the mouth comes from
the audio viseme estimator, barge-in works as for text, bad uploads are 4xx."""

from __future__ import annotations

import asyncio
import io
import wave

import httpx
from websockets.asyncio.client import connect

from lipcore.speech._synthdata import synthesize

from .conftest import Received, RunningServer, is_json, recv_one, recv_until
from .test_flow import open_session

TEXT = "Mama und Papa bauen am Meer ein Boot."


def _wav(text: str, repeat: int = 1) -> tuple[bytes, float]:
    u = synthesize(text, "de")
    pcm = u.pcm.tobytes() * repeat
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(u.sample_rate)  # 22 050 Hz: the server resamples to the session's rate
        w.writeframes(pcm)
    return buf.getvalue(), len(pcm) / 2 / u.sample_rate * 1000.0


def test_speak_audio_plays_the_recording_with_estimated_visemes(server: RunningServer) -> None:
    wav, duration_ms = _wav(TEXT)

    async def body() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            s = await open_session(client, server)
            sid = s["session_id"]
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)  # hello
                r = await client.post(
                    f"{server.url}/session-2d/{sid}/speak_audio",
                    files={"audio": ("speech.wav", wav, "audio/wav")},
                    data={"text": TEXT, "language": "de"},
                )
                assert r.status_code == 200 and r.json() == {"ok": True}, r.text
                await recv_until(ws, rec, is_json("utterance_end", utterance=1))
                start = rec.json("utterance_start")[0]
                assert start["sample_rate"] == 16000 and start["text"] == TEXT
                got_ms = sum(len(p) for _, p in rec.audio(1)) / 2 / 16000 * 1000
                assert abs(got_ms - duration_ms) < 5
                frames = [f for m in rec.json("visemes") for f in m["frames"]]
                assert sum(1 for f in frames if f["weights"].get("MBP", 0) >= 0.5) >= 4
                assert frames[-1]["weights"] == {}

                # barge-in: a long recording, stopped at its first audio
                long_wav, _ = _wav(TEXT, repeat=8)
                r = await client.post(
                    f"{server.url}/session-2d/{sid}/speak_audio",
                    files={"audio": ("long.wav", long_wav, "audio/wav")},
                )
                assert r.status_code == 200, r.text
                await recv_until(ws, rec, lambda it: it[0] == "audio" and it[1].utterance == 2)
                r = await client.post(f"{server.url}/session-2d/{sid}/stop")
                assert r.status_code == 200
                _, stop = await recv_until(ws, rec, is_json("stop"))
                assert stop["utterance"] == 2 and stop["at_pts_ms"] < 8 * duration_ms / 2
                u = (await client.get(f"{server.url}/session-2d/{sid}/usage")).json()
                assert u["tts_characters"] == 0  # a recording costs no TTS

                bad = await client.post(
                    f"{server.url}/session-2d/{sid}/speak_audio",
                    files={"audio": ("x.mp3", b"ID3" + bytes(range(256)) * 8, "audio/mpeg")},
                )
                assert bad.status_code == 422 and bad.json()["error"] == "bad_audio", bad.text

    asyncio.run(body())
