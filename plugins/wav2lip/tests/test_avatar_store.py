"""With lipcore's real avatar pipeline: ``build_avatar(backend="onnx")`` → ``load_avatar`` →
patches from real speech composited onto the real (H.264) idle loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lipcore_wav2lip.backend import Wav2LipBackend
from lipcore_wav2lip.face import CropBox, crop_box_from_roi, crop_face
from lipcore_wav2lip.patches import MouthPatch
from lipcore_wav2lip.testing import speechlike

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(grace_hopper_path: Path, face_model_path: Path, tmp_path_factory: Any) -> Any:
    from lipcore.avatar.store import build_avatar, load_avatar

    out = tmp_path_factory.mktemp("store") / "hopper"
    build_avatar(grace_hopper_path, out, backend="onnx", seconds=3.0, face_model=face_model_path)
    return load_avatar(out)


def test_manifest_names_the_wav2lip_assets(built: Any) -> None:
    assert built.lipsync_type == "onnx"
    lipsync = built.manifest.lipsync
    for key in ("wav2lip", "reference", "mask"):
        assert built.asset(str(lipsync[key])).is_file()
    info = json.loads(built.asset("wav2lip.json").read_text())
    roi = built.manifest.roi
    assert info["roi"] == {"x": roi.x, "y": roi.y, "w": roi.w, "h": roi.h}
    # The ROI-only fallback box is close to the landmark box.
    box = np.array(info["crop_box"])
    rough = crop_box_from_roi((roi.x, roi.y, roi.w, roi.h), tuple(info["image_size"]))
    assert np.abs(np.array(rough.as_list()) - box).max() < 0.1 * box[3]


def test_real_idle_frames_crop_to_the_reference_through_the_track(built: Any) -> None:
    info = json.loads(built.asset("wav2lip.json").read_text())
    box = CropBox(*info["crop_box"])
    ref = crop_face(built.photo(), box).astype(int)
    frames = built.idle_frames()
    affines = built.mouth_track.affines
    for j in range(0, len(frames), 15):
        aligned = crop_face(frames[j], box, affine=affines[j]).astype(int)
        naive = crop_face(frames[j], box).astype(int)
        # Lower half (what the model paints): H.264 and the idle warp leave small differences.
        err = np.abs(aligned[48:] - ref[48:]).mean()
        assert err < 6.0
        assert err <= np.abs(naive[48:] - ref[48:]).mean() + 0.5


def test_patches_on_the_real_idle_loop(built: Any, tiny_model_path: Path) -> None:
    renderer = Wav2LipBackend(tiny_model_path).open_renderer(built)
    frames = built.idle_frames()
    patches = renderer.render_audio(speechlike(0.6), 16000, queue=False, idle_start=10)
    assert len(patches) == 15 and patches[0].idle_index == 10
    out = renderer.composite(frames[10], patches[0])
    assert out.shape == frames[10].shape
    # Placement: a flat green patch lands where the mouth track puts the mask's centre.
    rx, ry, rw, rh = renderer.roi
    green = np.zeros((rh, rw, 3), np.uint8)
    green[..., 1] = 255
    for j in (0, 30, 60):
        flat = MouthPatch(frame=0, pts_ms=0.0, idle_index=j, roi=renderer.roi, rgb=green)
        comp = renderer.composite(frames[j], flat)
        sy, sx = np.nonzero(np.abs(comp.astype(int) - frames[j])[..., 1] > 40)
        my, mx = np.nonzero(renderer.mask > 0.5)
        a = np.asarray(built.mouth_track.affines[j]).reshape(2, 3)
        cx, cy = a @ np.array([rx + mx.mean(), ry + my.mean(), 1.0])
        assert abs(sx.mean() - cx) < 2 and abs(sy.mean() - cy) < 2


def test_offline_say_renders_the_mouth_from_the_audio(
    built: Any, tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lipcore say` with a variant C avatar: the patches of the utterance's audio composited
    on the frames that show it, the idle loop's own mouth elsewhere."""
    from lipcore.media import read_frames
    from lipcore.render import AudioDrivenRenderer, open_avatar_renderer, render_talk

    monkeypatch.setenv("LIPCORE_WAV2LIP_MODEL", str(tiny_model_path))
    renderer = open_avatar_renderer(built)
    assert isinstance(renderer, AudioDrivenRenderer)
    result = render_talk(
        built, "Mama baut ein Boot.", tmp_path / "c.mp4", voice="de", renderer=renderer,
        lead_in_ms=400.0, tail_ms=400.0,
    )  # fmt: skip
    frames = list(read_frames(result.video))
    assert len(frames) == result.frames
    # The audio starts on a frame boundary: patch i is shown at exactly its audio time i/fps
    # (issue 18: the viseme lead put it at 420 ms, patches at frame round(10.5) = 10, 20 ms
    # early).
    offset_frames = result.audio_offset_ms * renderer.fps / 1000.0
    assert offset_frames == round(offset_frames), result.audio_offset_ms
    idle = built.idle_frames()
    roi = built.manifest.roi
    fps = renderer.fps

    def mouth_diff(k: int) -> float:
        a = frames[k][roi.y : roi.y + roi.h, roi.x : roi.x + roi.w].astype(int)
        b = idle[k % len(idle)][roi.y : roi.y + roi.h, roi.x : roi.x + roi.w].astype(int)
        return float(np.abs(a - b).mean())

    first = int(result.audio_offset_ms * fps / 1000) + 1
    last = int((result.audio_offset_ms + result.audio_ms) * fps / 1000) - 1
    speech = [mouth_diff(k) for k in range(first, last)]
    outside = [mouth_diff(k) for k in (0, 1, len(frames) - 2, len(frames) - 1)]
    # The random-weight model paints nonsense, but it paints it exactly where the audio plays.
    assert min(speech) > 3 * max(max(outside), 1.0), (speech[:5], outside)
