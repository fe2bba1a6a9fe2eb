"""The offline renderer on real avatars: both back ends through the plugin system, real
espeak speech, real H.264/AAC files decoded back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import av
import numpy as np
import pytest

from lipcore import media
from lipcore.avatar.store import Avatar
from lipcore.engine import Engine
from lipcore.render import (
    AvatarRenderer,
    BackendAssetsError,
    open_avatar_renderer,
    render_talk,
)

KINDS = ("sprites", "mesh")


def _roi_box(avatar: Avatar, idle_index: int) -> tuple[slice, slice]:
    """The mouth ROI moved into idle frame ``idle_index`` (its bounding box, padded)."""
    roi = avatar.manifest.roi
    a = np.array(avatar.mouth_track.affines[idle_index]).reshape(2, 3)
    corners = np.array(
        [
            [roi.x, roi.y],
            [roi.x + roi.w, roi.y],
            [roi.x, roi.y + roi.h],
            [roi.x + roi.w, roi.y + roi.h],
        ]
    )
    pts = corners @ a[:, :2].T + a[:, 2]
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    return slice(max(0, y0), y1), slice(max(0, x0), x1)


def _audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        return pcm, c.streams.audio[0].codec_context.sample_rate


@pytest.mark.parametrize("kind", KINDS)
def test_backend_selected_per_avatar(avatars: dict[str, Avatar], engine: Engine, kind: str) -> None:
    avatar = avatars[kind]
    assert avatar.lipsync_type == kind
    renderer = open_avatar_renderer(avatar, engine=engine)
    assert isinstance(renderer, AvatarRenderer) and renderer.backend == kind
    plugin_module = {"sprites": "lipcore_sprites", "mesh": "lipcore_meshwarp"}[kind]
    assert type(renderer.mouth).__module__.startswith(plugin_module)

    idle = renderer.frame(7)
    talking = renderer.frame(7, {"AI": 1.0})
    assert talking.shape == idle.shape and talking.dtype == np.uint8
    ys, xs = _roi_box(avatar, 7)
    diff = np.abs(talking.astype(int) - idle.astype(int)).sum(axis=2)
    inside = diff[ys, xs]
    outside = diff.copy()
    outside[ys, xs] = 0
    assert inside.mean() > 5, "an open mouth must change the mouth region"
    assert outside.max() == 0, "nothing outside the mouth ROI may change"
    # Frames wrap around the loop.
    assert np.array_equal(renderer.frame(7 + renderer.loop_frames), idle)


def test_backend_override_needs_its_assets(avatars: dict[str, Avatar], engine: Engine) -> None:
    with pytest.raises(BackendAssetsError, match="--backend mesh"):
        open_avatar_renderer(avatars["sprites"], engine=engine, backend="mesh")
    with pytest.raises(BackendAssetsError, match="--backend sprites"):
        open_avatar_renderer(avatars["mesh"], engine=engine, backend="sprites")


@pytest.mark.parametrize("kind", KINDS)
def test_talking_video_decodes_with_expected_length(
    avatars: dict[str, Avatar], engine: Engine, tmp_path: Path, kind: str
) -> None:
    avatar = avatars[kind]
    seen: list[float] = []
    result = render_talk(
        avatar,
        "Hallo, ich bin dein Avatar.",
        tmp_path / "talk.mp4",
        engine=engine,
        voice="de",
        progress=seen.append,
    )
    assert seen[-1] == pytest.approx(1.0)
    info = media.probe(result.video)
    fps = avatar.manifest.idle.fps
    expected_s = (500.0 + result.audio_ms + 500.0) / 1000.0
    assert info.frames == result.frames == pytest.approx(expected_s * fps, abs=1.0)
    assert info.duration_s == pytest.approx(result.frames / fps, abs=1e-3)
    assert info.audio_codec == "aac" and info.pix_fmt == "yuv420p" and info.faststart
    assert info.audio_duration_s == pytest.approx(info.duration_s, abs=0.05)
    assert 1.2 < result.audio_ms / 1000.0 < 3.0  # espeak's German for this sentence

    # The speech sits 0.5 s into the video: silence before, voice after.
    pcm, rate = _audio(result.video)
    pre = np.sqrt(np.mean(pcm[: int(0.45 * rate)] ** 2))
    end = int((0.5 + result.audio_ms / 1000) * rate)
    speech = np.sqrt(np.mean(pcm[int(0.55 * rate) : end] ** 2))
    assert pre < 1e-3 and speech > 0.02

    # The mouth moves during speech only: frames before the speech are the idle loop's.
    frames = list(media.read_frames(result.video))
    idle = avatar.idle_frames()
    assert len(frames) == result.frames
    ys, xs = _roi_box(avatar, 3)
    before = np.abs(frames[3][ys, xs].astype(int) - idle[3][ys, xs]).mean()
    moving = max(
        np.abs(frames[k][ys, xs].astype(int) - idle[k % len(idle)][ys, xs]).mean()
        for k in range(13, 13 + int(result.audio_ms / 40))
    )
    assert before < 3.0 and moving > 3 * before + 2.0

    data = json.loads(result.timings.read_text())
    assert data["audio_offset_ms"] == 500.0 and data["fps"] == fps and data["backend"] == kind
    assert data["video"]["frames"] == result.frames
    assert data["lead_ms"] == engine.settings.lead_ms
    assert len(data["phonemes"]) > 10 and data["phonemes"][0]["start_ms"] >= 0
    assert data["visemes"] and data["visemes"][-1]["weights"] == {}


#: Sentences with several bilabials each, in the product's language and in English.
SYNC_SENTENCES = {
    "de": "Mama und Papa bauen am Meer ein Boot.",
    "en-us": "My mother bought a big blue map.",
}


#: (photo, back end, voice): grace_hopper (closed mouth at rest) on everything; the smiling
#: astronaut (teeth showing at rest, a 40 px mouth) where closing the lips is hardest.
SYNC_CASES = [
    *(("grace", kind, voice) for kind in KINDS for voice in sorted(SYNC_SENTENCES)),
    ("astronaut", "sprites", "de"),
    ("astronaut", "mesh", "de"),
    ("astronaut", "mesh", "en-us"),
]


@pytest.mark.parametrize(("photo", "kind", "voice"), SYNC_CASES)
def test_lip_sync_measured_on_the_video(
    request: pytest.FixtureRequest,
    engine: Engine,
    tmp_path: Path,
    photo: str,
    kind: str,
    voice: str,
) -> None:
    """Re-detect the mouth on every frame: it is never late by more than a frame nor early
    by more than 60 ms, at least 90 % of the /m b p/ really close, and open vowels open."""
    from lipcore.evaluation import (
        CLOSED_APERTURE,
        evaluate_sync,
        load_timings,
        measure_apertures,
        phonemes_from_timings,
    )

    fixture = "avatars" if photo == "grace" else "smiling_avatars"
    avatar: Avatar = request.getfixturevalue(fixture)[kind]
    result = render_talk(
        avatar, SYNC_SENTENCES[voice], tmp_path / "sync.mp4", engine=engine, voice=voice
    )
    data = load_timings(result.timings)
    track = engine.mapper().track_from_phonemes(
        phonemes_from_timings(data), language=data["language"]
    )
    apertures = measure_apertures(result.video)
    report, _, _ = evaluate_sync(
        apertures, track, fps=data["fps"], audio_offset_ms=data["audio_offset_ms"]
    )
    print(f"{photo}/{kind}/{voice}: {report}")
    assert report.frames_with_face == report.frames == result.frames
    assert -60.0 <= report.offset_ms <= 1000.0 / data["fps"]
    assert report.bilabials >= 5 and report.closure_rate >= 0.9
    # A mouth that never opened would "close" every bilabial: the vowels must open it, far
    # beyond the closed threshold (and beyond the smile of a photo that rests open), and the
    # aperture must follow the phonemes.
    assert report.open_vowel_aperture > 3 * CLOSED_APERTURE
    if photo == "grace":
        assert report.rest_aperture < CLOSED_APERTURE
        assert report.peak_correlation > 0.6
    else:
        assert report.rest_aperture > 2 * CLOSED_APERTURE  # the smile, teeth showing
        assert report.open_vowel_aperture > report.rest_aperture + 0.03
        assert report.peak_correlation > 0.4


class _RecordingRenderer(AvatarRenderer):
    """The avatar's renderer, noting the weights each video frame was rendered with."""

    def __init__(self, base: AvatarRenderer) -> None:
        super().__init__(base.mouth, base.idle_frames, base.fps, backend=base.backend)
        self.weights: dict[int, dict[str, float] | None] = {}

    def frame(self, k: int, weights: Mapping[str, float] | None = None) -> np.ndarray:
        self.weights[k] = None if weights is None else dict(weights)
        return super().frame(k, weights)


@pytest.mark.parametrize("kind", KINDS)
def test_barge_in_ramps_to_rest(
    avatars: dict[str, Avatar], engine: Engine, tmp_path: Path, kind: str
) -> None:
    avatar = avatars[kind]
    text = "Hallo, ich bin dein Avatar."
    full_recorder = _RecordingRenderer(open_avatar_renderer(avatar, engine=engine))
    full = render_talk(
        avatar, text, tmp_path / "full.mp4", engine=engine, voice="de", renderer=full_recorder
    )
    stop_ms, ramp_ms = 400.0, 150.0
    recorder = _RecordingRenderer(open_avatar_renderer(avatar, engine=engine))
    cut = render_talk(
        avatar,
        text,
        tmp_path / "cut.mp4",
        engine=engine,
        voice="de",
        stop_ms=stop_ms,
        renderer=recorder,
    )
    assert cut.audio_ms == pytest.approx(stop_ms + ramp_ms, abs=1.0)
    assert cut.frames < full.frames
    data = json.loads(cut.timings.read_text())
    assert data["stop_ms"] == stop_ms and data["ramp_ms"] == ramp_ms
    assert max(v["pts_ms"] for v in data["visemes"]) <= stop_ms + ramp_ms + 1e-6

    # What was rendered: speech up to the stop, weights only falling during the ramp, and
    # exactly Rest from the ramp's end (the cancelled speech never shows).
    fps = avatar.manifest.idle.fps
    offset = data["audio_offset_ms"]
    t = {k: k * 1000.0 / fps - offset for k in range(cut.frames)}
    assert sorted(recorder.weights) == list(range(cut.frames))
    assert any(w and sum(w.values()) > 0.3 for k, w in recorder.weights.items() if t[k] < stop_ms)
    ramp = [sum((recorder.weights[k] or {}).values()) for k in t if stop_ms <= t[k]]
    assert ramp == sorted(ramp, reverse=True)
    after = [k for k in t if t[k] >= stop_ms + ramp_ms]
    assert len(after) >= 5 and all(not recorder.weights[k] for k in after)

    # What a viewer sees: after the ramp the mouth region differs from the idle loop no more
    # than after the same sentence spoken to its end (the mouth at Rest again, through the
    # same H.264 encode, whose error stays a little higher after motion than in the still
    # lead-in); while the mouth was open at the stop it differed far more.
    def diff(video: Path, ks: list[int]) -> float:
        frames = list(media.read_frames(video))
        idle = avatar.idle_frames()
        out = 0.0
        for k in ks:
            ys, xs = _roi_box(avatar, k % len(idle))
            d = np.abs(frames[k][ys, xs].astype(int) - idle[k % len(idle)][ys, xs]).mean()
            out = max(out, float(d))
        return out

    spoke = [k for k, w in full_recorder.weights.items() if w]
    rest_after_speech = [k for k in full_recorder.weights if k > max(spoke)]
    assert len(rest_after_speech) >= 5
    reference = diff(full.video, rest_after_speech)
    lead_in = diff(cut.video, [k for k in t if t[k] < 0.0])
    assert max(reference, lead_in) < 4.0, "the encode alone should not change the mouth this much"
    at_stop = diff(cut.video, [k for k in t if stop_ms - 100.0 <= t[k] <= stop_ms])
    residual = diff(cut.video, after)
    print(
        f"{kind}: lead-in {lead_in:.2f}, at rest after full speech {reference:.2f}, "
        f"at the stop {at_stop:.2f}, after the ramp {residual:.2f}"
    )
    assert at_stop > 2 * reference + 2.0
    assert residual < 1.15 * reference


def test_render_talk_bad_input(avatars: dict[str, Avatar], engine: Engine, tmp_path: Path) -> None:
    from lipcore.errors import InputError

    with pytest.raises(InputError, match=r"\.mp4"):
        render_talk(avatars["sprites"], "Hallo", tmp_path / "x.avi", engine=engine)
    with pytest.raises(InputError, match="empty"):
        render_talk(avatars["sprites"], "   ", tmp_path / "x.mp4", engine=engine)
    assert not (tmp_path / "x.mp4").exists()
