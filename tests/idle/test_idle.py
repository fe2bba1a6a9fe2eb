"""The idle loop, measured on the encoded video: seam, motion, parallax, blinks, mouth track."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from facedetect import Detection, Detector

from lipcore import media
from lipcore.avatar.idle import IdleLoopResult, build_idle_loop, loop_steps
from lipcore.errors import InputError

MOUTH = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324,
)  # fmt: skip


@dataclass
class Loop:
    photo: np.ndarray
    face: Detection
    result: IdleLoopResult
    frames: list[np.ndarray]  # decoded from the MP4


def _build(tmp: Path, photo: np.ndarray, face: Detection, **kw: object) -> Loop:
    seen: list[float] = []
    res = build_idle_loop(photo, face.landmarks, tmp / "idle.mp4", progress=seen.append, **kw)  # type: ignore[arg-type]
    assert seen and seen[-1] == pytest.approx(1.0)
    return Loop(photo, face, res, list(media.read_frames(res.file)))


@pytest.fixture(scope="module")
def grace_loop(
    tmp_path_factory: pytest.TempPathFactory, grace_rgb: np.ndarray, grace_face: Detection
) -> Loop:
    return _build(tmp_path_factory.mktemp("idle"), grace_rgb, grace_face)


@pytest.fixture(scope="module")
def astro_loop(
    tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray, detector: Detector
) -> Loop:
    face = detector.detect(astronaut_rgb)
    assert face is not None
    return _build(tmp_path_factory.mktemp("idle"), astronaut_rgb, face, seconds=3.0, fps=30.0)


def _loops(request: pytest.FixtureRequest, name: str) -> Loop:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_video_file(grace_loop: Loop) -> None:
    info = media.probe(grace_loop.result.file)
    h, w = grace_loop.photo.shape[:2]
    assert (info.width, info.height) == (w + w % 2, h + h % 2)
    assert info.frames == grace_loop.result.frames == 100 == len(grace_loop.frames)
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(4.0)
    assert info.pix_fmt == "yuv420p" and info.faststart and info.audio_codec is None
    assert len(grace_loop.result.mouth_track.affines) == 100


@pytest.mark.parametrize("name", ["grace_loop", "astro_loop"])
def test_loop_is_seamless(request: pytest.FixtureRequest, name: str) -> None:
    loop = _loops(request, name)
    # The rendered loop: the wrap-around step is an ordinary step, no bigger than the largest
    # elsewhere. (It is not a slow one: the loop starts where the head moves briskly, see
    # test_the_seam_moves_like_any_other_step_by_optical_flow.)
    assert loop.result.seam_step <= 1.05 * max(loop.result.steps[:-1])
    # The loop does move (a still image would pass the seam test trivially).
    assert loop.result.typical_step > 0.05
    # Decoded from the MP4, the seam also carries the step from the last predicted frame back
    # to the key frame: H.264 lets slow motion "stick" in predicted frames and the key frame
    # snaps back to the exact picture. The codec's share of the seam (decoded minus rendered
    # seam step) stays below one grey level on average (mean over the frame, 4x shrunk).
    # Measured: 0.76 (grace), 0.91 (astronaut). Whether the head keeps moving through the seam
    # is measured by optical flow (next test): the pixel step mixes motion and grain.
    steps, seam, typical = loop_steps(loop.frames)
    print(f"{name}: decoded seam step {seam:.3f} (rendered {loop.result.seam_step:.3f}), "
          f"median {typical:.3f}, max {steps[:-1].max():.3f}")
    assert seam - loop.result.seam_step < 1.0, f"seam {seam:.3f} grey levels"


def _similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, float]:
    """Rotation (deg) and scale of the least-squares similarity src → dst."""
    a, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32))
    return float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))), float(np.hypot(a[0, 0], a[1, 0]))


def test_head_rotation_amplitude_measured(grace_loop: Loop, detector: Detector) -> None:
    planned = np.array(grace_loop.result.roll_deg)
    assert np.abs(planned).max() <= 2.0
    assert np.ptp(planned) >= 1.0  # visible micro motion, not a still
    measured = []
    idx = list(range(0, 100, 5))
    for i in idx:
        d = detector.detect(grace_loop.frames[i])
        assert d is not None
        angle, scale = _similarity_fit(grace_loop.face.landmarks[:, :2], d.landmarks[:, :2])
        measured.append(angle)
        assert abs(scale - 1.0) < 0.01  # sub-percent scale change
    measured_arr = np.array(measured)
    assert np.abs(measured_arr).max() <= 2.0
    # The re-detected head angle follows the planned one.
    assert np.corrcoef(measured_arr, planned[idx])[0, 1] > 0.9
    assert np.abs(measured_arr - planned[idx]).max() < 0.5


def _patch_shift(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x, y, w, h = box
    pa = cv2.cvtColor(a[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY).astype(np.float64)
    pb = cv2.cvtColor(b[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY).astype(np.float64)
    win = cv2.createHanningWindow((w, h), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(pa, pb, win)
    return float(np.hypot(dx, dy))


def test_background_moves_less_than_head(astro_loop: Loop) -> None:
    lm = astro_loop.face.landmarks[:, :2]
    nose = lm[1]
    # The two frames where the head (the nose, by the mouth track's head transform) is furthest
    # apart.
    aff = np.array(astro_loop.result.mouth_track.affines).reshape(-1, 2, 3)
    pos = aff[:, :, :2] @ nose + aff[:, :, 2]
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    fa, fb = astro_loop.frames[int(i)], astro_loop.frames[int(j)]
    # Head: a box on the face (nose and cheeks); background: the top-right corner (the flag).
    half = int(0.2 * np.ptp(lm[:, 0]))
    face_box = (int(nose[0]) - half, int(nose[1]) - half, 2 * half, 2 * half)
    bg_box = (512 - 140, 10, 128, 128)
    head = _patch_shift(fa, fb, face_box)
    bg = _patch_shift(fa, fb, bg_box)
    assert head > 1.0, f"head barely moves ({head:.2f} px)"
    assert bg < 0.5 * head, f"background moves {bg:.2f} px, head {head:.2f} px"


@pytest.mark.parametrize("name", ["grace_loop", "astro_loop"])
def test_blinks_detected_by_the_landmarker(
    request: pytest.FixtureRequest, name: str, detector: Detector
) -> None:
    loop = _loops(request, name)
    res = loop.result
    lid = np.array(res.eyelid)
    n = res.frames
    fps = res.fps
    assert 1 <= len(res.motion.blinks) <= 2  # type: ignore[union-attr]
    # Blinks: ~150–250 ms, closing faster than opening, away from the seam.
    for b in res.motion.blinks:  # type: ignore[union-attr]
        total = b.close_ms + b.hold_ms + b.open_ms
        assert 150 <= total <= 250 and b.close_ms < b.open_ms
        assert b.start_ms >= 400 and b.start_ms + total <= n / fps * 1000 - 400
    assert res.blink_frames and all(lid[i] >= 0.5 for i in res.blink_frames)

    def blink_score(i: int) -> float:
        d = detector.detect(loop.frames[i])
        assert d is not None
        return (d.blendshapes["eyeBlinkLeft"] + d.blendshapes["eyeBlinkRight"]) / 2

    closed = [i for i in range(n) if lid[i] >= 0.85]
    open_ = [i for i in range(0, n, max(1, n // 10)) if lid[i] == 0.0]
    closed_scores = [blink_score(i) for i in closed]
    open_scores = [blink_score(i) for i in open_]
    print(f"{name}: eyeBlink closed {np.round(closed_scores, 2)}, open max {max(open_scores):.2f}")
    # Measured: 0.27-0.73 on closed frames (glasses make grace_hopper the harder case), <0.1 open.
    assert closed and min(closed_scores) >= 0.25, closed_scores
    assert max(open_scores) <= 0.15, open_scores
    assert min(closed_scores) > 3 * max(open_scores)


@pytest.mark.parametrize("name", ["grace_loop", "astro_loop"])
def test_mouth_track_matches_redetected_landmarks(
    request: pytest.FixtureRequest, name: str, detector: Detector
) -> None:
    """The exported affine predicts where the mouth landmarks are re-detected on the decoded
    idle frames (encoding noise and landmarker jitter included)."""
    loop = _loops(request, name)
    photo_pts = loop.face.landmarks[list(MOUTH), :2]
    errors, static = [], []
    for i in range(0, loop.result.frames, 3):
        d = detector.detect(loop.frames[i])
        assert d is not None
        a = np.array(loop.result.mouth_track.affines[i]).reshape(2, 3)
        predicted = photo_pts @ a[:, :2].T + a[:, 2]
        found = d.landmarks[list(MOUTH), :2]
        errors.append(np.linalg.norm(found - predicted, axis=1).mean())
        static.append(np.linalg.norm(found - photo_pts, axis=1).mean())
    mean_err = float(np.mean(errors))
    print(
        f"{name}: mouth track error mean {mean_err:.3f} px, max {max(errors):.3f} px; "
        f"ignoring the motion would be {np.mean(static):.3f} px"
    )
    assert mean_err <= 0.5
    assert max(errors) <= 1.2


def test_mouth_stays_at_rest(grace_loop: Loop) -> None:
    """The loop never opens the mouth: the photo's own mouth, moved rigidly."""
    a0 = np.array(grace_loop.result.mouth_track.affines[0]).reshape(2, 3)
    lm = grace_loop.face.landmarks[:, :2]
    x0, y0 = (lm[list(MOUTH)].min(axis=0) - 8).astype(int)
    x1, y1 = (lm[list(MOUTH)].max(axis=0) + 8).astype(int)
    warped = cv2.warpAffine(grace_loop.photo, a0, grace_loop.photo.shape[1::-1])
    diff = np.abs(warped[y0:y1, x0:x1].astype(int) - grace_loop.frames[0][y0:y1, x0:x1]).mean()
    assert diff < 4.0  # the mouth region is the photo's, placed by the track (codec noise only)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"seconds": 10.0}, "3–5 s"), ({"fps": 60.0}, "20–30 fps")],
)
def test_bad_parameters(
    tmp_path: Path,
    grace_rgb: np.ndarray,
    grace_face: Detection,
    kwargs: dict[str, float],
    match: str,
) -> None:
    with pytest.raises(InputError, match=match):
        build_idle_loop(grace_rgb, grace_face.landmarks, tmp_path / "x.mp4", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x.mp4").exists()


def test_bad_landmarks_and_photo(tmp_path: Path, grace_rgb: np.ndarray) -> None:
    with pytest.raises(InputError, match="landmarks"):
        build_idle_loop(grace_rgb, np.zeros((10, 2)), tmp_path / "x.mp4")
    with pytest.raises(InputError, match="RGB"):
        build_idle_loop(np.zeros((10, 10)), np.zeros((478, 3)), tmp_path / "x.mp4")


def flow_steps(loop: Loop) -> np.ndarray:
    """Per step k → k+1 of the decoded loop (the last: the seam, last → first frame), the
    median optical-flow magnitude (Farnebäck, pixels) over the face. Flow measures motion, not
    pixel change: the key frame's fresh codec grain at the seam does not count as movement,
    and a step that shows the same picture twice does count as no movement."""
    lm = loop.face.landmarks[:, :2]
    x0, y0 = np.floor(lm.min(axis=0)).astype(int)
    x1, y1 = np.ceil(lm.max(axis=0)).astype(int)
    grey = [cv2.cvtColor(f[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY) for f in loop.frames]
    out = []
    for k in range(len(grey)):
        flow = cv2.calcOpticalFlowFarneback(grey[k], grey[(k + 1) % len(grey)], None, 0.5, 3,
                                            21, 3, 5, 1.1, 0)
        out.append(float(np.median(np.hypot(flow[..., 0], flow[..., 1]))))
    return np.array(out)


@pytest.mark.parametrize("name", ["grace_loop", "astro_loop"])
def test_the_seam_moves_like_any_other_step_by_optical_flow(request: pytest.FixtureRequest,
                                                            name: str) -> None:
    """At the loop point the head keeps moving: neither the seam (last → first) nor the first
    step (0 → 1) is a near-duplicate frame, which a viewer sees as a hitch every loop (issue 18
    item 14: 0 → 1 moved 0.12x the median step). Measured by optical flow, not pixel
    difference, which the key frame's grain blurs."""
    loop = _loops(request, name)
    steps = flow_steps(loop)
    median = float(np.median(steps))
    ratios = steps / median
    print(f"{name}: flow median {median:.3f} px; 0→1 {ratios[0]:.2f}x, seam {ratios[-1]:.2f}x, "
          f"1→2 {ratios[1]:.2f}x, min elsewhere {ratios[2:-1].min():.2f}x")
    assert median > 0.05, median  # the loop moves
    # Around the loop point every step is an ordinary one.
    # (Before: 0.02x and 0.00x at 0 → 1. Elsewhere the slowest turning points are 0.2-0.45x.)
    for k in (-2, -1, 0, 1):
        assert ratios[k] > 0.3, (k, ratios[k], ratios[:4], ratios[-4:])
