"""``lipcore say --audio`` and ``lipcore visemes --audio`` as a user runs them: real espeak-ng
recordings encoded as MP3 / OGG / M4A / WAV through PyAV, the video keeps the recording,
the sync is measured by re-detecting the mouth (``lipcore eval sync``) against the
recording's true phoneme times; bad files are one-line errors."""

from __future__ import annotations

import json
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from lipcore.avatar.store import Avatar
from lipcore.cli import app
from lipcore.speech._synthdata import Labelled, synthesize

runner = CliRunner()
TEXT = "Mama und Papa bauen am Meer ein Boot."


@pytest.fixture(scope="module")
def speech() -> Labelled:
    return synthesize(TEXT, "de")


def encode(path: Path, pcm: np.ndarray, rate: int, codec: str, channels: int = 1) -> Path:
    """Write ``pcm`` (int16 mono) to ``path`` with ``codec`` through PyAV."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, layout=layout)
        data = np.repeat(pcm[None, :], channels, axis=0) if channels == 2 else pcm[None, :]
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data.T.reshape(1, -1)), format="s16", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int = 1) -> Path:
    data = np.repeat(pcm[:, None], channels, axis=1).reshape(-1) if channels > 1 else pcm
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())
    return path


def _truth_timings(timings: Path, speech: Labelled) -> Path:
    """The timings file with the recording's true phonemes (what eval sync compares with)."""
    data = json.loads(timings.read_text())
    data["phonemes"] = [
        {"phoneme": p.phoneme, "start_ms": p.start_ms, "end_ms": p.end_ms, "word": p.word}
        for p in speech.phonemes
    ]
    out = timings.with_name("truth.timings.json")
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("known_text", [True, False], ids=["text-known", "audio-only"])
def test_say_audio_keeps_the_recording_and_is_in_sync(
    avatars: dict[str, Avatar], speech: Labelled, tmp_path: Path, known_text: bool
) -> None:
    mp3 = encode(tmp_path / "speech.mp3", speech.pcm, speech.sample_rate, "libmp3lame")
    video = tmp_path / "talk.mp4"
    args = ["say", "--audio", str(mp3), "--avatar", str(avatars["sprites"].directory),
            "--out", str(video), "--lang", "de"]  # fmt: skip
    if known_text:
        args += ["--text", TEXT]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(video.with_suffix(".timings.json").read_text())
    assert data["source"] == "audio" and data["estimator"] == "model"
    assert data["audio_file"] == "speech.mp3" and data["text"] == (TEXT if known_text else None)
    assert bool(data["phonemes"]) is known_text  # aligned phonemes only with the text
    speech_ms = len(speech.pcm) * 1000.0 / speech.sample_rate
    assert abs(data["audio_ms"] - speech_ms) < 80  # the MP3's own padding at most
    with av.open(str(video)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        duration = float(c.duration or 0) / 1e6
    assert duration >= (speech_ms + 900) / 1000.0  # lead-in + recording + tail

    truth = _truth_timings(video.with_suffix(".timings.json"), speech)
    result = runner.invoke(app, ["eval", "sync", str(video), "--timings", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert -60.0 <= report["offset_ms"] <= 20.0, report
    assert report["closure_rate"] >= (0.9 if known_text else 0.75), report


def test_visemes_audio_reads_every_format_and_mixes_stereo(
    speech: Labelled, tmp_path: Path
) -> None:
    def run(path: Path) -> list[dict[str, object]]:
        result = runner.invoke(app, ["visemes", "--audio", str(path), "--json", "--fps", "30"])
        assert result.exit_code == 0, result.output
        events: list[dict[str, object]] = json.loads(result.stdout[result.stdout.index("[") :])
        return events

    mono = run(write_wav(tmp_path / "mono.wav", speech.pcm, speech.sample_rate))
    assert len(mono) > 50 and mono[-1]["weights"] == {}
    assert any("MBP" in e["weights"] for e in mono)  # type: ignore[operator]
    assert run(write_wav(tmp_path / "stereo.wav", speech.pcm, speech.sample_rate, 2)) == mono
    for name, codec in (("s.ogg", "libopus"), ("s.m4a", "aac"), ("s.mp3", "libmp3lame")):
        rate = 48000 if codec == "libopus" else speech.sample_rate
        pcm = speech.pcm
        if rate != speech.sample_rate:
            from scipy.signal import resample_poly

            pcm = resample_poly(pcm.astype(np.float32), 320, 147).astype(np.int16)
        events = run(encode(tmp_path / name, pcm, rate, codec))
        mbp = sum("MBP" in e["weights"] for e in events)  # type: ignore[operator]
        assert mbp >= sum("MBP" in e["weights"] for e in mono) // 2, name  # type: ignore[operator]


def test_bad_audio_files_are_one_line_errors(
    avatars: dict[str, Avatar], speech: Labelled, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "ok.wav", speech.pcm, speech.sample_rate)
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 40)
    text_file = tmp_path / "notes.wav"
    text_file.write_text("this is not audio at all\n" * 20)
    d = str(avatars["sprites"].directory)
    cases = [
        (["visemes", "--audio", str(corrupt), "--json"], "corrupt.mp3"),
        (["visemes", "--audio", str(text_file)], "notes.wav"),
        (["visemes", "--audio", str(tmp_path / "missing.wav")], "not found"),
        (["say", "--audio", str(corrupt), "--avatar", d, "--out", str(tmp_path / "a.mp4")],
         "corrupt.mp3"),
        (["say", "--audio", str(wav), "--avatar", d, "--out", str(tmp_path / "b.mp4"),
          "--text", "Guten Tag.", "--lang", "de"], "does not match"),
        (["say", "Hallo", "--audio", str(wav), "--avatar", d, "--out", str(tmp_path / "c.mp4")],
         "not both"),
        (["say", "--avatar", d, "--out", str(tmp_path / "d.mp4")], "--audio"),
    ]  # fmt: skip
    for args, words in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        out = " ".join(result.output.split())
        assert "Traceback" not in out and words in out, (args, out)
    assert not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()
