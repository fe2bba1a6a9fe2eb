"""The audio-driven back end (Wav2Lip, variant C) through the live renderer: mouth patches
from the padded audio, one per video frame, composited on the shared idle loop. A small
generated model of Wav2Lip's signature stands in for the real checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipcore.engine import Engine
from lipcore.live import LiveRenderer

pytest.importorskip("lipcore_wav2lip")
pytest.importorskip("onnx")


def test_wav2lip_live(
    tmp_path: Path,
    grace_hopper_path: Path,
    face_model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lipcore_wav2lip.testing import speechlike, tiny_model

    from lipcore.avatar.store import build_avatar

    model = tmp_path / "tiny.onnx"
    tiny_model(model)
    monkeypatch.setenv("LIPCORE_WAV2LIP_MODEL", str(model))
    engine = Engine()
    avatar = build_avatar(
        grace_hopper_path,
        tmp_path / "w2l",
        backend="onnx",
        seconds=3.0,
        engine=engine,
        face_model=face_model_path,
    )
    live = LiveRenderer(avatar, engine=engine, sample_rate=16000, video_format="rgb")
    assert live.shared.audio_driven
    pcm = np.asarray(speechlike(1.0, 16000))
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype(np.int16) if pcm.dtype != np.int16 else pcm
    live.push_audio(pcm16.tobytes(), sample_rate=16000)
    live.end_segment()
    frames = []
    while live.speaking:
        frames.append(live.pull())
    speech = [f for f in frames if f.speech]
    assert len(speech) == round((1000 + live.lead_ms) / 40 + 0.499)
    assert all(f.audio is not None and len(f.audio) == 640 for f in speech)
    roi = avatar.manifest.roi
    changed = 0
    for f in speech:
        idle = live.shared.idle[f.index % len(live.shared.idle)]
        diff = np.abs(f.video.astype(int) - idle.astype(int))
        assert diff[: roi.y - 40].max() == 0  # nothing above the mouth region changes
        changed += diff.max() > 0
    assert changed >= len(speech) - 1  # a patch on (nearly) every speech frame
    live.clear()
    after = live.pull()
    assert after.audio is None
    assert after.video is live.shared.idle[after.index % len(live.shared.idle)]
