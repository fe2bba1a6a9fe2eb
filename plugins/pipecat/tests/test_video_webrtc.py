"""LipcoreVideoService end to end over Pipecat's SmallWebRTC transport (aiortc) on loopback: a
pipeline (LipcoreTTSService on espeak-ng → LipcoreVideoService → SmallWebRTCTransport) sends
video and audio to an aiortc peer; what the peer receives (frames and sound, placed by their
arrival) is written to an MP4 that ``lipcore eval sync`` measures within ``lipcore say``'s
bounds. Also frame-level: an interruption stops the sound at once and brings the mouth to rest
within 200 ms; unknown frames pass; no timings falls back to the audio-only estimate."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lipcore_pipecat import LipcoreTimingsFrame, LipcoreTTSService, LipcoreVideoService
from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from lipcore.avatar.store import Avatar, build_avatar
from lipcore.engine import Engine

pytestmark = pytest.mark.slow

SENTENCE = "Maybe the people on the boat bring more apples."


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
           face_model_path: Path, engine: Engine) -> Avatar:
    from PIL import Image

    photo = np.asarray(Image.open(grace_hopper_path).convert("RGB"))
    photo = np.ascontiguousarray(photo[40:552, :512])
    return build_avatar(photo, tmp_path_factory.mktemp("pc-avatar") / "grace512",
                        backend="sprites", seconds=3.0, fps=25.0, engine=engine,
                        face_model=face_model_path, avatar_id="grace512")


# -- frame level ------------------------------------------------------------------------------


def _idle_hashes(svc: LipcoreVideoService) -> set[str]:
    return {hashlib.sha1(f.tobytes()).hexdigest() for f in svc.renderer.shared.idle}


@dataclass
class _AppData(DataFrame):
    payload: str = ""


def test_interruption_rests_the_mouth_within_200_ms(avatar: Avatar, engine: Engine) -> None:
    tts = LipcoreTTSService(engine=engine, voice="en-us", emit_timings=True)
    svc = LipcoreVideoService(avatar, engine=engine)
    marker = _AppData(payload="keep me")
    down_seq, _ = asyncio.run(run_test(
        Pipeline([tts, svc]),
        frames_to_send=[TTSSpeakFrame("One two three four five six seven eight nine ten."),
                        marker, SleepFrame(1.0), InterruptionFrame(), SleepFrame(0.8)]))
    down: list[Frame] = list(down_seq)
    i = next(k for k, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = down[:i], down[i + 1:]
    assert sum(isinstance(f, TTSAudioRawFrame) for f in before) > 10  # it was speaking
    # Not one sample of the interrupted speech after the interruption.
    assert not [f for f in after if isinstance(f, TTSAudioRawFrame)]
    # The mouth ramps to rest: within 200 ms (5 frames at 25 fps) the picture is the idle
    # loop's own (the photo's mouth), and stays so.
    images = [f for f in after if isinstance(f, OutputImageRawFrame)]
    assert len(images) >= 15
    idle = _idle_hashes(svc)
    rest_from = next(k for k, f in enumerate(images)
                     if all(hashlib.sha1(g.image).hexdigest() in idle for g in images[k:]))
    assert rest_from * 1000 / svc.fps <= 200, rest_from
    assert hashlib.sha1(images[0].image).hexdigest() not in idle  # it did ramp, not jump
    # Frames the service does not know pass through untouched.
    assert marker in down and next(f for f in down if f is marker).payload == "keep me"
    # Every image is sync_with_audio (timed by the transport's audio queue).
    assert all(f.sync_with_audio for f in images)


def test_one_image_per_frame_of_audio_and_the_stop_after_it(avatar: Avatar,
                                                            engine: Engine) -> None:
    tts = LipcoreTTSService(engine=engine, voice="en-us")  # words only: no phoneme timings
    svc = LipcoreVideoService(avatar, engine=engine)
    down, _ = asyncio.run(run_test(Pipeline([tts, svc]), frames_to_send=[
        TTSSpeakFrame("Hello there."), SleepFrame(2.5)]))
    kinds = [type(f) for f in down]
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    # Each audio frame holds exactly one video frame of sound (24 kHz / 25 fps) and follows
    # its image.
    assert audio and {len(f.audio) // 2 for f in audio} == {960}
    for k, f in enumerate(down):
        if isinstance(f, TTSAudioRawFrame):
            assert isinstance(down[k - 1], OutputImageRawFrame)
    # The TTS's stop frame leaves after the utterance's last audio, not before it.
    last_audio = max(k for k, t in enumerate(kinds) if t is TTSAudioRawFrame)
    assert kinds.index(TTSStoppedFrame) > last_audio
    # Word timings moved the mouth (not the idle picture) while speaking.
    idle = _idle_hashes(svc)
    speaking = [down[k - 1] for k, f in enumerate(down) if isinstance(f, TTSAudioRawFrame)]
    assert sum(hashlib.sha1(f.image).hexdigest() not in idle for f in speaking) > 5


class _DropTimings(FrameProcessor):
    """Stands in for a TTS service that gives no timings at all."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, (TTSTextFrame, LipcoreTimingsFrame)):
            await self.push_frame(frame, direction)


def test_no_timings_falls_back_to_the_audio_only_estimator(avatar: Avatar,
                                                           engine: Engine) -> None:
    from lipcore.live import EnergyVisemeEstimator

    class Counting(EnergyVisemeEstimator):
        streams = 0

        def stream(self, **kwargs: Any) -> Any:
            Counting.streams += 1
            return super().stream(**kwargs)

    tts = LipcoreTTSService(engine=engine, voice="en-us")
    svc = LipcoreVideoService(avatar, engine=engine, estimator=Counting())
    down, _ = asyncio.run(run_test(Pipeline([tts, _DropTimings(), svc]), frames_to_send=[
        TTSSpeakFrame("Hello there, how are you?"), SleepFrame(2.5)]))
    speaking = [down[k - 1] for k, f in enumerate(down) if isinstance(f, TTSAudioRawFrame)]
    assert len(speaking) > 25 and Counting.streams >= 1
    idle = _idle_hashes(svc)
    moved = sum(hashlib.sha1(f.image).hexdigest() not in idle for f in speaking)
    assert moved > 0.3 * len(speaking), (moved, len(speaking))


def test_the_engines_audio_only_estimator_is_taken_when_installed(avatar: Avatar,
                                                                   engine: Engine) -> None:
    """Where the engine has an estimator registry (``engine.audio_viseme_estimator()``) its
    default is used; without one, or with none installed, the renderer's fallback."""
    from lipcore.errors import PluginNotFoundError
    from lipcore.live import EnergyVisemeEstimator

    class Mine(EnergyVisemeEstimator):
        name = "mine"

    class WithRegistry(Engine):
        def audio_viseme_estimator(self, name: str | None = None) -> Any:
            return Mine()

    class NoneInstalled(Engine):
        def audio_viseme_estimator(self, name: str | None = None) -> Any:
            raise PluginNotFoundError("no audio viseme estimator installed")

    got = LipcoreVideoService(avatar, engine=WithRegistry()).renderer.estimator
    assert isinstance(got, Mine)
    fallback = LipcoreVideoService(avatar, engine=NoneInstalled()).renderer.estimator
    assert type(fallback) is EnergyVisemeEstimator
    given = Mine()
    assert LipcoreVideoService(avatar, engine=WithRegistry(),
                               estimator=given).renderer.estimator is given


# -- WebRTC end to end ----------------------------------------------------------------------


async def _webrtc_session(avatar: Avatar, engine: Engine, seconds: float, timings: str,
                          out: Path) -> dict[str, Any]:
    """The bot in this process, the peer (``webrtc_peer.py``) in its own."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    peer = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("webrtc_peer.py")), str(out),
        str(seconds), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert peer.stdout is not None and peer.stdin is not None
    offer = json.loads(await asyncio.wait_for(peer.stdout.readline(), 60))
    conn = SmallWebRTCConnection()
    await conn.initialize(sdp=offer["sdp"], type=offer["type"])
    answer = conn.get_answer()
    peer.stdin.write((json.dumps({"sdp": answer["sdp"], "type": answer["type"]}) + "\n").encode())
    await peer.stdin.drain()

    tts = LipcoreTTSService(engine=engine, voice="en-us", emit_timings=timings == "phonemes")
    video = LipcoreVideoService(avatar, engine=engine)
    transport = SmallWebRTCTransport(conn, TransportParams(
        audio_out_enabled=True, audio_out_sample_rate=24000, video_out_enabled=True,
        video_out_width=video.width, video_out_height=video.height,
        video_out_framerate=video.transport_framerate))
    worker = PipelineWorker(Pipeline([transport.input(), tts, video, transport.output()]),
                            params=PipelineParams(audio_out_sample_rate=24000),
                            idle_timeout_secs=None, enable_rtvi=False)
    later: list[asyncio.Task[None]] = []

    @transport.event_handler("on_client_connected")
    async def _connected(_t: Any, _c: Any) -> None:
        async def speak() -> None:
            await asyncio.sleep(1.0)  # the peer's jitter buffers settle on the idle loop
            await worker.queue_frame(TTSSpeakFrame(SENTENCE))
        later.append(asyncio.ensure_future(speak()))

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.ensure_future(runner.run())
    await asyncio.wait_for(peer.wait(), seconds + 60)
    await worker.cancel()
    await asyncio.wait_for(run, 10)
    data = dict(np.load(out))
    return {"data": data, "fps": video.fps, "late": video.late_ticks,
            "frames": video.frames_pushed}


def _write_received(got: dict[str, Any], fps: int, out: Path, engine: Engine) -> dict[str, Any]:
    """The received frames and sound as one MP4, both placed by arrival time, and the true
    timings of the sentence beside it (where its audio is found in the received sound)."""
    import soxr

    from lipcore.media import VideoWriter

    rate = int(got["rate"])
    times, video = got["video_t"], got["video"]
    assert len(video) > 100 and len(got["audio"]), (len(video), len(got["audio"]))
    t0 = float(times[0])
    # The audio stream is continuous (silence is sent too); its clock is anchored at the
    # packet that arrived with the least delay (what a jitter buffer does).
    ends = np.cumsum(got["audio_n"])
    anchor = float(np.min(got["audio_t"] - ends / rate))
    pcm = got["audio"]
    start = round((t0 - anchor) * rate)
    pcm = pcm[start:] if start >= 0 else np.concatenate([np.zeros(-start, np.float32), pcm])
    # Video on a fixed grid at fps: the newest frame received by each grid time (what a
    # player shows).
    n_frames = min(int((times[-1] - t0) * fps), int(len(pcm) / rate * fps))
    grid = t0 + np.arange(n_frames) / fps
    idx = np.searchsorted(times, grid, side="right") - 1
    frames = [video[max(0, i)] for i in idx]
    pcm = pcm[: round(n_frames * rate / fps)]
    # Where the sentence is in the received sound: cross-correlation with the TTS's own audio.
    utt = asyncio.run(_reference(engine))
    ref = np.frombuffer(b"".join(utt["audio"]), "<i2").astype(np.float32)
    ref = soxr.resample(ref, utt["rate"], rate)
    size = 1 << int(np.ceil(np.log2(len(pcm) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(pcm, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: len(pcm)]))
    offset_ms = lag * 1000.0 / rate
    with VideoWriter(out, fps, audio=np.clip(pcm, -32768, 32767).astype(np.int16),
                     sample_rate=rate, crf=18) as writer:
        for f in frames:
            writer.write(f)
    data = {"version": 1, "text": SENTENCE, "language": utt["language"], "voice": "en-us",
            "fps": fps, "timings_given": "phonemes", "audio_offset_ms": offset_ms,
            "lead_ms": engine.settings.lead_ms, "sample_rate": rate,
            "video": {"file": out.name, "frames": n_frames},
            "phonemes": [{"phoneme": p.phoneme, "start_ms": p.start_ms, "end_ms": p.end_ms,
                          "word": p.word} for p in utt["phonemes"]]}
    out.with_suffix(".timings.json").write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    return data


async def _reference(engine: Engine) -> dict[str, Any]:
    utt = await engine.utterance(SENTENCE, voice="en-us")
    audio = [step.chunk.audio async for step in utt]
    return {"audio": audio, "rate": utt.sample_rate, "phonemes": utt.phonemes,
            "language": utt.language}


@pytest.mark.parametrize("timings", ["phonemes", "words"])
def test_webrtc_peer_receives_lip_synced_video(avatar: Avatar, engine: Engine,
                                               tmp_path: Path, timings: str) -> None:
    """``phonemes``: LipcoreTTSService's own times; ``words``: only Pipecat's word starts (what
    e.g. Pipecat's ElevenLabs service gives), each word's length estimated."""
    from typer.testing import CliRunner

    from lipcore.cli import app

    session = asyncio.run(_webrtc_session(avatar, engine, seconds=7.0, timings=timings,
                                          out=tmp_path / "received.npz"))
    out = tmp_path / "received.mp4"
    # What a display shows: the newest frame received at each tick of a 50 Hz grid, finer
    # than the ~27 images a second that arrive, so the recording itself drops no image (a
    # 25 Hz grid would, now and then a one-image /p b m/ closure).
    data = _write_received(session["data"], 2 * session["fps"], out, engine)
    # The sentence was heard: it sits after the moment it was asked for.
    assert data["audio_offset_ms"] > 500
    res = CliRunner().invoke(app, ["eval", "sync", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    print("webrtc", timings, report, "late ticks", session["late"], "frames", session["frames"])
    # lipcore say's bounds: the mouth is not late by more than a frame and at most 60 ms
    # early, and at least 90 % of the /p b m/ close (all 8 here; measured 8/8 in every run
    # since closures are held shut for two frames and espeak's joined words are timed).
    assert report["frames_with_face"] >= 0.95 * report["frames"]
    assert -60.0 <= report["offset_ms"] <= 40.0
    assert report["bilabials"] >= 5 and report["closure_rate"] >= 0.9
    assert report["peak_correlation"] > 0.5
    assert report["open_vowel_aperture"] > 0.08
