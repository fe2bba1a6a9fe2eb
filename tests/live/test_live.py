"""The live renderer: audio and timings in, frames paired with audio out (lipcore.live)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipcore.avatar.store import Avatar, AvatarLoadError
from lipcore.engine import Engine
from lipcore.errors import InputError
from lipcore.interfaces import AudioVisemeEstimator, PhonemeTiming
from lipcore.live import (
    EnergyVisemeEstimator,
    LiveFrame,
    LiveRenderer,
    WordTiming,
    shared_avatar,
    words_to_chars,
)

REPO = Path(__file__).resolve().parents[2]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("live_to_mp4", REPO / "examples/live_to_mp4.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tone(seconds: float, rate: int, channels: int = 1, hz: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
    return np.repeat(x[:, None], channels, axis=1).reshape(-1)


def _drain(live: LiveRenderer) -> list[LiveFrame]:
    out = []
    while live.speaking:
        out.append(live.pull())
        assert len(out) < 10_000
    return out


@pytest.mark.parametrize("fmt", ["rgba", "i420", "rgb"])
def test_idle_loop_when_silent(live_avatars: dict[str, Avatar], engine: Engine, fmt: str) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine, video_format=fmt)  # type: ignore[arg-type]
    shared = live.shared
    n = len(shared.idle)
    frames = [live.pull() for _ in range(n + 3)]
    assert all(f.audio is None and not f.speech for f in frames)
    h, w = live.height, live.width
    shape = {"rgba": (h, w, 4), "i420": (h * 3 // 2, w), "rgb": (h, w, 3)}[fmt]
    for k, f in enumerate(frames):
        assert f.index == k and f.video.shape == shape
        # The idle loop itself, shared between sessions (nothing rendered, nothing copied).
        i = k % n
        base = {"rgba": shared.idle_rgba, "i420": shared.idle_i420}.get(fmt)
        assert f.video is (base(i) if base else shared.idle[i])
    # A second session of the same avatar shares the decoded loop.
    other = LiveRenderer(live_avatars["sprites"], engine=engine, video_format=fmt)  # type: ignore[arg-type]
    assert other.shared is shared
    assert shared_avatar(live_avatars["sprites"]) is shared


@pytest.mark.parametrize(("in_rate", "channels"), [(24000, 1), (22050, 2), (16000, 1), (44100, 2)])
def test_one_video_frame_per_audio_frame_resampled_without_drift(
    live_avatars: dict[str, Avatar], engine: Engine, in_rate: int, channels: int
) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine, sample_rate=24000)
    pcm = _tone(3.0, in_rate, channels)
    # Uneven chunks, as a TTS sends them.
    rng = np.random.default_rng(3)
    at = 0
    frames: list[LiveFrame] = []
    while at < len(pcm) // channels:
        n = int(rng.integers(50, 4000))
        live.push_audio(
            pcm[at * channels : (at + n) * channels].tobytes(),
            sample_rate=in_rate,
            channels=channels,
        )
        at += n
        while live.ready():
            frames.append(live.pull())
    live.end_segment()
    frames += _drain(live)
    speech = [f for f in frames if f.audio is not None]
    per_frame = 24000 // 25
    assert all(len(f.audio) == per_frame for f in speech if f.audio is not None)
    # Audio frames are consecutive video frames, the last one marked.
    idx = [f.index for f in speech]
    assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert [f.segment_end for f in speech] == [False] * (len(speech) - 1) + [True]
    # Lead-in + 3 s of audio, resampled: no samples lost or invented beyond the frame padding.
    expected = round(live.lead_ms * 24) + 3.0 * 24000
    assert len(speech) == math.ceil(expected / per_frame)
    audio = np.concatenate([f.audio for f in speech if f.audio is not None]).astype(np.float64)
    # The tone's phase at the end matches a tone of exactly 3 s at the output rate: no drift.
    lead = round(live.lead_ms * 24)
    ref = 0.3 * 32767 * np.sin(2 * np.pi * 220.0 * np.arange(72000) / 24000)
    got = audio[lead : lead + 72000]
    tail = slice(60000, 71000)
    assert np.corrcoef(got[tail], ref[tail])[0, 1] > 0.99
    assert np.abs(audio[lead + 72100 :]).max(initial=0) < 400  # then silence (padding)


def test_odd_rate_keeps_exact_count(live_avatars: dict[str, Avatar], engine: Engine) -> None:
    # 22050/25 = 882 samples per frame: exact; 11025/25 = 441; 44100/30 is 1470. An output
    # rate that does not divide still pairs round((k+1)·sr/fps) − round(k·sr/fps) samples.
    live = LiveRenderer(live_avatars["sprites"], engine=engine, sample_rate=22050)
    live.push_audio(_tone(1.0, 22050).tobytes(), sample_rate=22050)
    live.end_segment()
    speech = [f for f in _drain(live) if f.audio is not None]
    assert all(f.audio is not None and len(f.audio) == 882 for f in speech)
    assert sum(live.samples_for(k) for k in range(25)) == 22050


def test_clear_stops_audio_at_once_and_ramps_mouth(
    live_avatars: dict[str, Avatar], engine: Engine
) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine)
    words = [WordTiming("papa", i * 300.0, i * 300.0 + 280.0) for i in range(10)]
    live.push_audio(_tone(3.0, 24000).tobytes(), sample_rate=24000, words=words)
    frames = [live.pull() for _ in range(20)]
    assert sum(f.speech for f in frames) >= 10
    live.clear()
    assert live.cleared_samples > 0 and not live.speaking
    after = [live.pull() for _ in range(20)]
    assert all(f.audio is None for f in after)  # no speech frame after a clear
    # The mouth ramps from its last shape to Rest in 100–200 ms, then the bare idle loop.
    moving = [f for f in after if f.weights]
    ramp_ms = len(moving) * 40.0
    assert 80.0 <= ramp_ms <= 200.0
    assert all(not f.weights for f in after[len(moving) :])
    assert after[-1].weights is None  # back to the bare idle loop
    totals = [sum(f.weights.values()) for f in moving if f.weights]
    assert totals == sorted(totals, reverse=True)


def test_clear_storm(live_avatars: dict[str, Avatar], engine: Engine) -> None:
    live = LiveRenderer(live_avatars["mesh"], engine=engine)
    rng = np.random.default_rng(0)
    for i in range(200):
        live.push_audio(_tone(0.05, 16000).tobytes(), sample_rate=16000)
        if rng.random() < 0.5:
            live.pull()
        if i % 3 == 0:
            live.end_segment()
        live.clear()
        live.clear()
    after = [live.pull() for _ in range(10)]
    assert all(f.audio is None for f in after) and not live.speaking
    # And it still speaks afterwards.
    live.push_audio(_tone(0.5, 16000).tobytes(), sample_rate=16000)
    live.end_segment()
    assert sum(f.speech for f in _drain(live)) == math.ceil((500 + live.lead_ms) / 40)


def test_tts_stopping_mid_word_holds_then_finishes(
    live_avatars: dict[str, Avatar], engine: Engine
) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine)
    # The TTS sends half a word's audio and its timing, then nothing: the renderer does not
    # invent audio; the video keeps its rate (hold frames) until the segment ends.
    live.push_audio(
        _tone(0.4, 24000).tobytes(),
        sample_rate=24000,
        words=[WordTiming("Mississippi", 0.0, 800.0)],
    )
    frames = [live.pull() for _ in range(30)]
    speech = [f for f in frames if f.speech]
    assert 0 < len(speech) <= math.ceil((400 + live.lead_ms) / 40)
    hold = frames[frames.index(speech[-1]) + 1 :]
    assert hold and all(f.audio is None for f in hold)
    live.end_segment()  # the agent flushes: what was received plays out, then idle
    rest = _drain(live)
    total = len(speech) + sum(f.speech for f in rest)
    assert total == math.ceil((400 + live.lead_ms) / 40)
    assert [f for f in rest if f.speech][-1].segment_end


def test_bad_input(live_avatars: dict[str, Avatar], engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(AvatarLoadError):
        LiveRenderer(tmp_path / "no-such-avatar", engine=engine)
    live = LiveRenderer(live_avatars["sprites"], engine=engine)
    with pytest.raises(InputError, match="channel"):
        live.push_audio(b"\x00\x00\x00", sample_rate=24000, channels=1)
    with pytest.raises(InputError, match="sample_rate"):
        live.push_audio(b"\x00\x00", sample_rate=0)
    with pytest.raises(InputError, match="timing"):
        live.push_audio(b"", sample_rate=24000, words=[WordTiming("x", 10.0, 5.0)])
    with pytest.raises(InputError, match="video_format"):
        LiveRenderer(live_avatars["sprites"], engine=engine, video_format="yuv")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ramp"):
        LiveRenderer(live_avatars["sprites"], engine=engine, ramp_ms=500.0)
    assert not live.speaking  # nothing was queued by the refused input


def _vowel(seconds: float, rate: int) -> np.ndarray:
    """Energy mostly above 300 Hz, like an open vowel (F1 ~750 Hz, F2 ~1200 Hz)."""
    t = np.arange(round(seconds * rate)) / rate
    x = 0.05 * np.sin(2 * np.pi * 150 * t) + 0.3 * np.sin(2 * np.pi * 750 * t)
    x += 0.2 * np.sin(2 * np.pi * 1200 * t)
    return (x * 32767).astype(np.int16)


def test_energy_fallback_is_an_audio_viseme_estimator() -> None:
    est = EnergyVisemeEstimator()
    assert isinstance(est, AudioVisemeEstimator)
    rate = 16000
    # vowel 300 ms, silence 60 ms (a stop), vowel 300 ms, murmur 100 ms (/m/: only the voice's
    # low harmonics), vowel 200 ms, silence 600 ms.
    x = np.concatenate(
        [
            _vowel(0.3, rate),
            np.zeros(960, np.int16),
            _vowel(0.3, rate),
            _tone(0.1, rate, hz=150.0),
            _vowel(0.2, rate),
            np.zeros(9600, np.int16),
        ]
    )
    frames = est.estimate(x.tobytes(), sample_rate=rate, fps=25.0)
    by_t = {round(f.pts_ms): f.weights for f in frames}
    assert by_t[120].get("AI", 0) > 0.5  # open in the voice
    assert by_t[320].get("MBP", 0) == 1.0  # the short dip closes the lips
    assert by_t[720].get("MBP", 0) == 1.0 and "AI" not in by_t[720]  # the murmur too
    assert by_t[880].get("AI", 0) > 0.5
    assert by_t[1400] == {}  # a long pause is Rest
    assert frames[-1].weights == {}


def test_words_become_characters_for_g2p() -> None:
    chars = words_to_chars([WordTiming("ab", 0.0, 100.0), WordTiming(" ", 100.0, 120.0)])
    assert [(c.char, c.start_ms, c.end_ms) for c in chars] == [
        ("a", 0.0, 50.0),
        ("b", 50.0, 100.0),
        (" ", 100.0, 100.0),
    ]


def test_custom_estimator_is_used(live_avatars: dict[str, Avatar], engine: Engine) -> None:
    from lipcore.interfaces import AudioVisemeStream, VisemeFrame

    class AlwaysO(AudioVisemeEstimator):
        name = "always-o"

        def stream(self, **_: Any) -> AudioVisemeStream:
            class S(AudioVisemeStream):
                n = 0

                def push(self, pcm: bytes) -> list[VisemeFrame]:
                    out = []
                    self.n += len(pcm) // 2
                    while len(self.__dict__.setdefault("sent", [])) * 640 < self.n:
                        out.append(VisemeFrame(len(self.sent) * 40.0, {"O": 1.0}))
                        self.sent.append(1)
                    return out

                def finish(self) -> list[VisemeFrame]:
                    return []

            return S()

    live = LiveRenderer(live_avatars["sprites"], engine=engine, estimator=AlwaysO())
    live.push_audio(_tone(0.4, 16000).tobytes(), sample_rate=24000)
    live.end_segment()
    speech = [f for f in _drain(live) if f.speech]
    assert speech and all(f.weights == {"O": 1.0} for f in speech[:5])


SENTENCE = "Maybe the people on the boat bring more apples."


@pytest.mark.parametrize(
    ("kind", "timings"),
    [("sprites", "phonemes"), ("sprites", "words"), ("mesh", "phonemes"), ("mesh", "words")],
)
def test_live_output_lip_sync_measured(
    live_avatars: dict[str, Avatar], engine: Engine, tmp_path: Path, kind: str, timings: str
) -> None:
    """The documented example writes the live output to MP4; ``lipcore eval sync``'s measure
    holds it to the bounds of ``lipcore say``: not late by more than a frame, at most 60 ms
    early, every /p b m/ closing."""
    from typer.testing import CliRunner

    from lipcore.cli import app

    out = tmp_path / "live.mp4"
    asyncio.run(
        _example().render_live_mp4(
            live_avatars[kind], SENTENCE, out, voice="en-us", timings=timings, engine=engine
        )
    )
    res = CliRunner().invoke(app, ["eval", "sync", str(out), "--json"])
    assert res.exit_code == 0, res.output
    import json

    report = json.loads(res.output[res.output.index("{") :])
    print(kind, timings, report)
    assert report["frames_with_face"] == report["frames"]
    assert -60.0 <= report["offset_ms"] <= 40.0
    assert report["bilabials"] >= 5 and report["closure_rate"] == 1.0
    assert report["open_vowel_aperture"] > 0.08


def test_live_output_no_timings_energy_fallback(
    live_avatars: dict[str, Avatar], engine: Engine, tmp_path: Path
) -> None:
    """No timings: the energy fallback moves the mouth with the voice, is not late, and closes
    the lips on this sentence's /p b m/ (loudness dips and low-frequency murmur; it closes
    them on /t k n/ as well, which the measure does not see)."""
    from lipcore.evaluation import evaluate_sync, load_timings, measure_apertures
    from lipcore.evaluation import phonemes_from_timings as pft

    out = tmp_path / "live.mp4"
    asyncio.run(
        _example().render_live_mp4(
            live_avatars["sprites"], SENTENCE, out, voice="en-us", timings="none", engine=engine
        )
    )
    data = load_timings(out.with_suffix(".timings.json"))
    track = engine.mapper().track_from_phonemes(pft(data), language=data["language"])
    report, _, _ = evaluate_sync(
        measure_apertures(out), track, fps=data["fps"], audio_offset_ms=data["audio_offset_ms"]
    )
    print("energy", report)
    assert -60.0 <= report.offset_ms <= 40.0
    assert report.peak_correlation > 0.5
    assert report.bilabials >= 5 and report.closure_rate == 1.0
    assert report.open_vowel_aperture > 0.08


def test_phoneme_timings_reach_the_mapper(live_avatars: dict[str, Avatar], engine: Engine) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine)
    ph = [PhonemeTiming("m", 0.0, 120.0), PhonemeTiming("a", 120.0, 400.0)]
    live.push_audio(_tone(0.4, 24000).tobytes(), sample_rate=24000, phonemes=ph)
    live.end_segment()
    speech = [f for f in _drain(live) if f.speech]
    assert any(f.weights and f.weights.get("MBP", 0) > 0.5 for f in speech[:4])
    assert any(f.weights and f.weights.get("AI", 0) > 0.5 for f in speech[4:])


def test_character_timings_equal_their_words(
    live_avatars: dict[str, Avatar], engine: Engine
) -> None:
    """Characters (as ElevenLabs times them) take the same G2P path as words."""
    words = [WordTiming("bob", 0.0, 240.0), WordTiming("ate", 300.0, 520.0)]
    out = []
    for kw in ({"words": words}, {"chars": words_to_chars(words)}):
        live = LiveRenderer(live_avatars["sprites"], engine=engine)
        live.push_audio(_tone(0.6, 24000).tobytes(), sample_rate=24000, **kw)  # type: ignore[arg-type]
        live.end_segment()
        out.append([f.weights for f in _drain(live)])
    assert out[0] == out[1]
    assert any(w and w.get("MBP", 0) > 0.9 for w in out[0])


def test_rate_change_mid_utterance_keeps_every_sample(
    live_avatars: dict[str, Avatar], engine: Engine
) -> None:
    live = LiveRenderer(live_avatars["sprites"], engine=engine, sample_rate=24000)
    live.push_audio(_tone(0.5, 22050, 2).tobytes(), sample_rate=22050, channels=2)
    live.push_timings(words=[WordTiming("hello", 0.0, 400.0)])  # timings alone: no flush
    live.push_audio(_tone(0.5, 16000).tobytes(), sample_rate=16000)
    live.end_segment()
    speech = [f for f in _drain(live) if f.audio is not None]
    total = sum(len(f.audio) for f in speech if f.audio is not None)
    expected = round(live.lead_ms * 24) + 24000  # 0.5 s + 0.5 s at the output rate
    assert expected <= total < expected + 960
    audio = np.concatenate([f.audio for f in speech if f.audio is not None])
    nonzero = np.flatnonzero(np.abs(audio) > 300)
    assert abs(nonzero[-1] - expected) < 50  # the tone ends where 1 s of audio ends


def test_a_one_frame_closure_is_held_for_min_closure_frames(live_avatars: Any,
                                                           engine: Any) -> None:
    """A transport that re-samples frames on its own clock can skip any one; with
    min_closure_frames=2 a closure shut for one frame (the next blended half-way out) is shown
    shut for two, and a longer one unchanged."""
    from lipcore.live import LiveRenderer

    live = LiveRenderer(live_avatars["sprites"], engine=engine, min_closure_frames=2)
    shut = {"MBP": 1.0}
    half = {"MBP": 0.6, "AI": 0.3}  # blended half-way out: the lips are apart
    open_ = {"AI": 0.8}
    seq = [open_, shut, half, open_, shut, shut, shut, open_]
    got = [live._hold_closure(w) for w in seq]
    assert got == [open_, shut, shut, open_, shut, shut, shut, open_]
    plain = LiveRenderer(live_avatars["sprites"], engine=engine)
    assert [plain._hold_closure(w) for w in seq] == seq
    with pytest.raises(InputError):
        LiveRenderer(live_avatars["sprites"], engine=engine, min_closure_frames=9)
