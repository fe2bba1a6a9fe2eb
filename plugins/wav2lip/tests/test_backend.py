"""The ``onnx`` back end end to end: plugin registration, avatar assets from a real photo,
pre/post-processing, offline and streamed patches from real speech, compositing, patch frames."""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from lipcore_wav2lip import audio as wa
from lipcore_wav2lip.backend import Wav2LipBackend, Wav2LipRenderer
from lipcore_wav2lip.errors import AvatarAssetError, ModelNotFoundError
from lipcore_wav2lip.face import crop_face, face_input, prediction_to_rgb
from lipcore_wav2lip.patches import HEADER_SIZE, MouthPatch, decode_patch_frame
from lipcore_wav2lip.testing import speechlike

import lipcore
from lipcore.errors import InputError
from lipcore.models import MouthTrack
from lipcore.plugins import PluginRegistry, get_plugin_manager
from lipcore.testing import LipsyncBackendConformance


@pytest.fixture(scope="module")
def renderer(hopper_avatar: Any, tiny_model_path: Path) -> Wav2LipRenderer:
    return Wav2LipBackend(tiny_model_path, batch_size=8).open_renderer(hopper_avatar)


@pytest.fixture(scope="module")
def espeak_speech() -> tuple[list[tuple[bytes, float]], int]:
    """A real German utterance from the built-in espeak-ng source: (pcm, pts_ms) chunks."""
    import asyncio

    async def run() -> tuple[list[tuple[bytes, float]], int]:
        engine = lipcore.Engine()
        chunks: list[tuple[bytes, float]] = []
        rate = 0
        async for step in engine.speak("Guten Morgen, wie geht es dir heute?", voice="de"):
            if step.chunk.audio:
                chunks.append((step.chunk.audio, step.chunk.pts_ms))
                rate = step.chunk.sample_rate
        await engine.aclose()
        return chunks, rate

    return asyncio.run(run())


# ------------------------------------------------------------------------------ plugin


def test_registered_as_onnx_with_alias() -> None:
    registry = PluginRegistry(get_plugin_manager())
    reg = registry.get("lipsync_backends", "onnx")
    assert reg.factory is Wav2LipBackend and reg.distribution == "lipcore-wav2lip"
    assert registry.get("lipsync_backends", "wav2lip").name == "onnx"
    backend = lipcore.Engine().lipsync_backend("onnx")
    assert backend.type == "onnx" and backend.driven_by == "audio"


def test_model_from_environment_and_clear_miss(
    hopper_avatar: Any, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIPCORE_WAV2LIP_MODEL", raising=False)
    with pytest.raises(ModelNotFoundError, match="LIPCORE_WAV2LIP_MODEL"):
        Wav2LipBackend().open_renderer(hopper_avatar)
    monkeypatch.setenv("LIPCORE_WAV2LIP_MODEL", str(tiny_model_path))
    monkeypatch.setenv("LIPCORE_WAV2LIP_BATCH", "3")
    backend = Wav2LipBackend()
    assert backend.open_renderer(hopper_avatar).model.batch_size == 3


# ------------------------------------------------------------------------------ assets


def test_build_assets_from_a_real_photo(hopper_avatar: Any, hopper_face: Any) -> None:
    photo, face, mouth = hopper_face
    d = hopper_avatar.directory
    assert hopper_avatar.lipsync["wav2lip"] == "wav2lip.json"
    info = json.loads((d / "wav2lip.json").read_text())
    x, y, w, h = info["crop_box"]
    roi = mouth.roi
    # The box holds the face and the mouth ROI, with the mouth in the masked lower half.
    assert x <= roi.x and y <= roi.y and x + w >= roi.x + roi.w and y + h >= roi.y + roi.h
    lm = np.asarray(face.landmarks)[:, :2]
    mouth_y = lm[[13, 14]][:, 1].mean()
    assert y + 0.5 * h < mouth_y < y + h
    assert x <= lm[:, 0].min() + 1 and lm[:, 0].max() - 1 <= x + w
    ref = cv2.imread(str(d / "wav2lip_ref.png"))
    assert ref.shape == (96, 96, 3)
    # It is the photo's face: compare with a plain resize of the box.
    plain = cv2.resize(
        photo[round(y) : round(y + h), round(x) : round(x + w)], (96, 96), cv2.INTER_AREA
    )
    assert np.abs(ref[:, :, ::-1].astype(int) - plain).mean() < 6


def test_build_assets_reanalyses_when_the_mouth_model_lacks_landmarks(
    hopper_face: Any, tmp_path: Path
) -> None:
    _photo, face, mouth = hopper_face
    mouth.save(tmp_path)
    Wav2LipBackend().build_assets(mouth, tmp_path)  # no landmarks passed: measured again
    box = json.loads((tmp_path / "wav2lip.json").read_text())["crop_box"]
    out2 = tmp_path / "b"
    Wav2LipBackend().build_assets(mouth, out2, landmarks=face.landmarks)
    assert np.allclose(box, json.loads((out2 / "wav2lip.json").read_text())["crop_box"], atol=1)
    assert (out2 / "mask_mouth.png").is_file()  # written when the mouth model did not


def test_avatar_without_assets(hopper_avatar: Any, tiny_model_path: Path, tmp_path: Path) -> None:
    import dataclasses

    empty = dataclasses.replace(hopper_avatar, directory=tmp_path)
    with pytest.raises(AvatarAssetError, match="rebuild it with backend 'onnx'"):
        Wav2LipBackend(tiny_model_path).open_renderer(empty)


# ------------------------------------------------------------------------------ pre/post


def test_face_input_layout_bgr_scaled_lower_half_masked() -> None:
    target = np.zeros((96, 96, 3), np.uint8)
    target[..., 0] = 255  # pure red in RGB
    reference = np.zeros((96, 96, 3), np.uint8)
    reference[..., 2] = 51  # blue 0.2
    x = face_input(target, reference)
    assert x.shape == (6, 96, 96) and x.dtype == np.float32
    # Channels 0-2: the target in BGR, lower half zero; 3-5: the reference in BGR.
    assert np.all(x[2, :48] == 1.0) and np.all(x[0:2, :48] == 0)
    assert np.all(x[0:3, 48:] == 0)
    np.testing.assert_allclose(x[3], 0.2)
    assert np.all(x[4:6] == 0)
    pred = np.zeros((3, 96, 96), np.float32)
    pred[0] = 1.0  # the model answers in BGR: channel 0 is blue
    rgb = prediction_to_rgb(pred)
    assert rgb.shape == (96, 96, 3) and np.all(rgb[..., 2] == 255) and np.all(rgb[..., :2] == 0)


def test_idle_frame_crops_follow_the_mouth_track(hopper_avatar: Any) -> None:
    """The crop from a moving idle frame, taken through its affine, is the photo's crop."""
    info = json.loads((hopper_avatar.directory / "wav2lip.json").read_text())
    from lipcore_wav2lip.face import CropBox

    box = CropBox(*info["crop_box"])
    ref = crop_face(hopper_avatar.photo_rgb, box)
    frames = hopper_avatar.idle_frames()
    for j in (0, 5, 13):
        aligned = crop_face(frames[j], box, affine=hopper_avatar.mouth_track.affines[j])
        naive = crop_face(frames[j], box)  # ignoring the head motion
        err = np.abs(aligned.astype(int) - ref).mean()
        assert err < 3.0
        assert np.abs(naive.astype(int) - ref).mean() > 2 * err


# ------------------------------------------------------------------------------ rendering


def test_offline_patches(renderer: Wav2LipRenderer) -> None:
    x = speechlike(1.0)
    x[8000:] = 0.0  # the second half is silence
    patches = renderer.render_audio(x, 16000, queue=False)
    assert len(patches) == 25
    assert [p.pts_ms for p in patches[:3]] == [0.0, 40.0, 80.0]
    assert [p.idle_index for p in patches[18:22]] == [18, 19, 0, 1]  # the loop wraps
    roi = renderer.roi
    assert all(p.rgb.shape == (roi[3], roi[2], 3) and p.roi == roi for p in patches)
    speech = [p.rgb.astype(int) for p in patches[:8]]
    assert min(np.abs(a - b).max() for a, b in itertools.pairwise(speech)) > 0
    # Frames whose whole window is silence get identical mel input → identical patches.
    assert np.array_equal(patches[20].rgb, patches[24].rgb)


def test_batched_patches_equal_single_runs(renderer: Wav2LipRenderer) -> None:
    x = speechlike(0.5, seed=4)
    batched = renderer.render_audio(x, 16000, queue=False)
    mel = wa.mel_spectrogram(x)
    for i in (0, 6, len(batched) - 1):
        single = renderer._patches([i], wa.mel_windows(mel, [i], renderer.fps), idle_start=0)[0]
        assert np.abs(single.rgb.astype(int) - batched[i].rgb).max() <= 1


def test_streamed_real_speech_equals_offline(
    renderer: Wav2LipRenderer, espeak_speech: tuple[list[tuple[bytes, float]], int]
) -> None:
    chunks, rate = espeak_speech
    assert rate != 16000  # exercises the resampler too
    stream = renderer.stream(sample_rate=rate)
    streamed: list[MouthPatch] = []
    for pcm, pts in chunks:
        streamed += stream.push(pcm, pts)
    before_finish = len(streamed)
    streamed += stream.finish()
    offline = renderer.render_audio(b"".join(c for c, _ in chunks), rate, queue=False)
    assert len(streamed) == len(offline) > 25
    assert before_finish >= len(offline) - 8  # only the last ~200 ms wait for the end
    for a, b in zip(streamed, offline, strict=True):
        assert (a.frame, a.pts_ms, a.idle_index) == (b.frame, b.pts_ms, b.idle_index)
        assert np.array_equal(a.rgb, b.rgb)
    # The right context each frame waited for: its 16-column window (which starts one frame
    # before the frame, the training alignment) plus half an STFT window: 172.5 ms past the
    # frame's time; plus the resampler's hold-back, at most one chunk more.
    chunk_ms = max(len(c) / 2 / rate * 1000 for c, _ in chunks)
    waits = [ready - f * 40.0 for f, ready in stream.readiness[:before_finish]]
    assert min(waits) >= 172.5 and max(waits) <= 172.5 + chunk_ms + 40


def test_streaming_chunking_does_not_matter(renderer: Wav2LipRenderer) -> None:
    x = speechlike(0.8, seed=7)
    pcm = (x * 32767).astype("<i2").tobytes()
    ref = renderer.render_audio(pcm, 16000, queue=False)
    rng = np.random.default_rng(0)
    stream = renderer.stream(sample_rate=16000)
    got: list[MouthPatch] = []
    pos = 0
    while pos < len(pcm):
        n = int(rng.integers(1, 1200)) * 2
        got += stream.push(pcm[pos : pos + n])
        pos += n
    got += stream.finish()
    assert [p.frame for p in got] == list(range(len(ref)))
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(got, ref, strict=True))


def test_pts_gaps_fill_with_silence_and_overlaps_fail(renderer: Wav2LipRenderer) -> None:
    x = speechlike(0.4)
    stream = renderer.stream(sample_rate=16000)
    stream.push(x[:3200], 0.0)
    stream.push(x[3200:], 300.0)  # 100 ms later than the audio so far: 100 ms of silence
    assert stream.audio_ms == pytest.approx(500.0)
    with pytest.raises(InputError, match="overlaps"):
        stream.push(x[:160], 450.0)
    n = len(stream.finish())
    assert stream._next_frame == n + (stream._next_frame - n) and stream._next_frame == 13


def test_idle_conditioning_uses_the_moving_frames(
    hopper_avatar: Any, tiny_model_path: Path, renderer: Wav2LipRenderer
) -> None:
    idle = Wav2LipBackend(tiny_model_path, conditioning="idle").open_renderer(hopper_avatar)
    x = speechlike(0.3, seed=2)
    a = idle.render_audio(x, 16000, queue=False)
    b = renderer.render_audio(x, 16000, queue=False)
    # Same audio, nearly the same face (the idle frames are the photo, moved): close patches.
    diffs = [np.abs(p.rgb.astype(int) - q.rgb).mean() for p, q in zip(a, b, strict=True)]
    assert max(diffs) < 6 and max(diffs) > 0


# ------------------------------------------------------------------------------ compositing


def test_composite_places_the_patch_by_the_mouth_track(
    renderer: Wav2LipRenderer, hopper_avatar: Any
) -> None:
    rx, ry, rw, rh = renderer.roi
    frames = hopper_avatar.idle_frames()
    green = np.zeros((rh, rw, 3), np.uint8)
    green[..., 1] = 255
    for j in (0, 7):
        patch = MouthPatch(frame=0, pts_ms=0.0, idle_index=j, roi=renderer.roi, rgb=green)
        out = renderer.composite(frames[j], patch)
        changed = np.abs(out.astype(int) - frames[j]).sum(axis=2) > 0
        ys, xs = np.nonzero(changed)
        # Only the mouth region changes, and it moves with the head.
        a = np.asarray(hopper_avatar.mouth_track.affines[j]).reshape(2, 3)
        weights = renderer.mask
        my, mx = np.nonzero(weights > 0.5)
        centre_photo = np.array([rx + mx.mean(), ry + my.mean(), 1.0])
        cx, cy = a @ centre_photo
        strong = np.abs(out.astype(int) - frames[j])[..., 1] > 40
        sy, sx = np.nonzero(strong)
        assert abs(sx.mean() - cx) < 1.5 and abs(sy.mean() - cy) < 1.5
        corners = np.array([[rx, ry, 1], [rx + rw, ry + rh, 1], [rx + rw, ry, 1], [rx, ry + rh, 1]])
        mapped = corners @ a.T
        assert xs.min() >= mapped[:, 0].min() - 2 and xs.max() <= mapped[:, 0].max() + 2
        assert ys.min() >= mapped[:, 1].min() - 2 and ys.max() <= mapped[:, 1].max() + 2


def test_render_takes_queued_patches_in_order(
    renderer: Wav2LipRenderer, hopper_avatar: Any
) -> None:
    renderer.clear()
    frames = hopper_avatar.idle_frames()
    untouched = renderer.render(frames[0], idle_index=0, weights={})
    assert np.array_equal(untouched, frames[0])  # nothing queued: the idle mouth
    x = speechlike(0.2)
    patches = renderer.feed_audio(x, 16000, 0.0) + renderer.finish_audio()
    assert len(patches) == 5
    for i, p in enumerate(patches):
        out = renderer.render(frames[i], idle_index=i, weights={"AI": 1.0})
        assert np.array_equal(out, renderer.composite(frames[i], p, idle_index=i))
    assert np.array_equal(renderer.render(frames[0], idle_index=0, weights={}), frames[0])


# ------------------------------------------------------------------------------ wire


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_patch_frame_roundtrip(renderer: Wav2LipRenderer, fmt: str) -> None:
    patch = renderer.render_audio(speechlike(0.2), 16000, queue=False)[3]
    data = patch.encode(utterance=7, fmt=fmt)  # type: ignore[arg-type]
    assert data[0] == 2 and data[1] == 1  # kind 2 = mouth patch, protocol version 1
    frame = decode_patch_frame(data)
    assert (frame.utterance, frame.pts_ms, frame.idle_index, frame.format) == (7, 120.0, 3, fmt)
    assert (frame.x, frame.y, frame.w, frame.h) == patch.roi
    img = frame.image()
    assert img.shape == patch.rgb.shape
    err = np.abs(img.astype(int) - patch.rgb).mean()
    assert err == 0 if fmt == "png" else err < 4
    assert len(data) > HEADER_SIZE


def test_bad_patch_frames() -> None:
    with pytest.raises(InputError, match="at least 32 bytes"):
        decode_patch_frame(b"\x02\x01")
    audio_frame = bytes([1, 1, 0, 0]) + bytes(28)
    with pytest.raises(InputError, match="kind is 1"):
        decode_patch_frame(audio_frame)


VECTORS = Path(__file__).resolve().parents[3] / "tests" / "vectors"


def test_patch_frames_match_the_shared_vectors() -> None:
    """The plugin's writer and reader agree with tests/vectors/binary_patch.json, the file the
    web and Flutter clients test their readers against."""
    vec = json.loads((VECTORS / "binary_patch.json").read_text(encoding="utf-8"))
    assert vec["header_size"] == HEADER_SIZE
    for case in vec["valid"]:
        head = case["header"]
        frame = decode_patch_frame(bytes.fromhex(case["hex"]))
        assert (frame.utterance, frame.pts_ms, frame.idle_index, frame.format) == (
            head["utterance"], head["pts_ms"], head["idle_index"], head["format"])
        assert (frame.x, frame.y, frame.w, frame.h) == (head["x"], head["y"], head["w"], head["h"])
        assert frame.data.hex() == case["image_hex"]
        assert frame.image().shape == (head["h"], head["w"], 3)
        # Written by the plugin from the same pixels and header fields: the same header bytes.
        patch = MouthPatch(frame=0, pts_ms=head["pts_ms"], idle_index=head["idle_index"],
                           roi=(head["x"], head["y"], head["w"], head["h"]), rgb=frame.image())
        again = patch.encode(utterance=head["utterance"], fmt=head["format"])
        assert again[:HEADER_SIZE].hex() == case["hex"][: 2 * HEADER_SIZE]
    for case in vec["invalid"]:
        with pytest.raises(InputError):
            decode_patch_frame(bytes.fromhex(case["hex"]))


# ------------------------------------------------------------------------------ the shared bar


@pytest.fixture(scope="module")
def backend(tiny_model_path: Path) -> Wav2LipBackend:
    return Wav2LipBackend(tiny_model_path, batch_size=8)


@pytest.fixture(scope="module")
def avatar(hopper_avatar: Any) -> Any:
    return hopper_avatar


@pytest.fixture(scope="module")
def idle_frames(hopper_avatar: Any) -> list[np.ndarray]:
    return list(hopper_avatar.idle_frames())


@pytest.fixture(scope="module")
def photo(hopper_face: tuple[np.ndarray, Any, Any]) -> np.ndarray:
    return hopper_face[0]


class TestWav2LipConformance(LipsyncBackendConformance):
    """lipcore.testing's conformance suite for the audio-driven back end (registration,
    declarations, an AudioMouthRenderer whose streamed patches equal the offline ones, clear
    errors)."""

    kind = "onnx"
    aliases = ("wav2lip",)
    distribution = "lipcore-wav2lip"

    def with_track(self, avatar: Any, affines: Any) -> Any:
        track = MouthTrack.model_validate({"fps": 25.0, "affines": [list(a) for a in affines]})
        return dataclasses.replace(avatar, mouth_track=track, _frames=None)

    def copy_avatar(self, avatar: Any, dest: Path) -> Any:
        shutil.copytree(avatar.directory, dest)
        return dataclasses.replace(avatar, directory=dest, _frames=None)
