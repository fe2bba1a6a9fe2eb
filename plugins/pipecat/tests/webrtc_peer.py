"""A WebRTC peer in its own process (as a real one would be): aiortc receives a bot's audio and
video and keeps every frame with its arrival time (CLOCK_MONOTONIC, shared with the test).

    python webrtc_peer.py OUT.npz SECONDS
    stdout: one line, the offer {"sdp", "type"}; stdin: one line, the answer
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np


def _mono(frame: Any) -> np.ndarray:
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    a = a.reshape(-1, channels) if a.shape[0] == 1 else a.T
    return a.astype(np.float32).mean(axis=1)


async def main(out: str, seconds: float) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="sendrecv")
    audio: list[tuple[float, np.ndarray]] = []
    video: list[tuple[float, np.ndarray]] = []
    rate = [0]
    tasks: list[asyncio.Task[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                now = time.monotonic()
                if track.kind == "audio":
                    rate[0] = frame.sample_rate
                    audio.append((now, _mono(frame)))
                else:
                    video.append((now, frame.to_ndarray(format="rgb24")))

        tasks.append(asyncio.ensure_future(read()))

    await pc.setLocalDescription(await pc.createOffer())
    print(json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}),
          flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    answer = json.loads(line)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await pc.close()
    np.savez(out, rate=rate[0],
             audio_t=np.array([t for t, _ in audio]),
             audio_n=np.array([len(x) for _, x in audio]),
             audio=np.concatenate([x for _, x in audio]) if audio else np.zeros(0, np.float32),
             video_t=np.array([t for t, _ in video]),
             video=np.stack([f for _, f in video]) if video else np.zeros((0, 1, 1, 3), np.uint8))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
