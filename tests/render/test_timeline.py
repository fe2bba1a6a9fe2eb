"""Viseme interpolation and the barge-in ramp (no video needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipcore.errors import InputError
from lipcore.interfaces import VisemeFrame
from lipcore.render import SpeechPlan, VisemeTimeline, aligned_offset_ms, ramp_to_rest

FRAME_MS = 1000.0 / 30.0


def _track() -> list[VisemeFrame]:
    # Rest → AI → MBP → Rest at 30 fps over 400 ms.
    out = []
    for i in range(13):
        t = i * FRAME_MS
        if i in (0, 12):
            w: dict[str, float] = {}
        elif i < 6:
            w = {"AI": 0.9}
        else:
            w = {"MBP": 1.0}
        out.append(VisemeFrame(pts_ms=t, weights=w))
    return out


def test_timeline_interpolates_between_frames() -> None:
    tl = VisemeTimeline(_track())
    assert tl.at(-5.0) == {} and tl.at(1000.0) == {}
    assert tl.at(2 * FRAME_MS) == pytest.approx({"AI": 0.9})
    mid = tl.at(5.5 * FRAME_MS)  # halfway AI → MBP
    assert mid == pytest.approx({"AI": 0.45, "MBP": 0.5})
    assert tl.at(0.5 * FRAME_MS) == pytest.approx({"AI": 0.45})


def test_ramp_to_rest_holds_the_shape_then_fades() -> None:
    track = _track()
    stop = 4.5 * FRAME_MS  # in the middle of AI
    ramped = ramp_to_rest(track, stop, ramp_ms=150)
    before = [f for f in ramped if f.pts_ms < stop]
    assert before == [f for f in track if f.pts_ms < stop]
    after = [f for f in ramped if f.pts_ms >= stop]
    assert after[0].pts_ms == pytest.approx(stop)
    assert after[0].weights == pytest.approx({"AI": 0.9})
    # The cancelled speech never shows: no MBP after the stop, weights only fall.
    assert all("MBP" not in f.weights for f in after)
    totals = [sum(f.weights.values()) for f in after]
    assert totals == sorted(totals, reverse=True)
    assert after[-1].pts_ms == pytest.approx(stop + 150) and after[-1].weights == {}
    # Halfway through the ramp, half the shape.
    assert VisemeTimeline(ramped).at(stop + 75)["AI"] == pytest.approx(0.45, abs=0.01)


@given(
    stop=st.floats(min_value=0.0, max_value=12 * FRAME_MS),
    ramp=st.floats(min_value=100.0, max_value=200.0),
)
def test_ramp_reaches_rest_within_the_ramp(stop: float, ramp: float) -> None:
    ramped = ramp_to_rest(_track(), stop, ramp)
    tl = VisemeTimeline(ramped)
    assert tl.at(stop + ramp + 1e-6) == {}
    assert max(f.pts_ms for f in ramped) <= stop + ramp + 1e-6


def test_ramp_arguments() -> None:
    with pytest.raises(InputError, match="100–200 ms"):
        ramp_to_rest(_track(), 100.0, ramp_ms=50)
    with pytest.raises(InputError, match="100–200 ms"):
        ramp_to_rest(_track(), 100.0, ramp_ms=500)
    # A stop after the track's end changes nothing.
    assert ramp_to_rest(_track(), 5000.0) == _track()


def test_speech_plan() -> None:
    plan = SpeechPlan(fps=25.0, audio_offset_ms=500.0, audio_ms=1830.0, tail_ms=500.0)
    assert plan.frames == 71  # ceil(2.83 s * 25 = 70.75)
    assert plan.audio_time_ms(0) == -500.0 and plan.audio_time_ms(25) == pytest.approx(500.0)


@given(
    lead_in=st.floats(min_value=0.0, max_value=2000.0),
    lead=st.floats(min_value=0.0, max_value=40.0),
    fps=st.sampled_from([24.0, 25.0, 30.0, 50.0, 60.0]),
)
def test_audio_offset_puts_video_frames_on_viseme_frames(
    lead_in: float, lead: float, fps: float
) -> None:
    period = 1000.0 / fps
    offset = aligned_offset_ms(lead_in, lead, fps)
    assert offset >= 0.0
    # Moved by at most half a frame (a whole one only where that would start before 0).
    limit = period / 2 if lead_in >= period / 2 else period
    assert abs(offset - lead_in) <= limit + 1e-9
    # Video frame k shows audio time k·P − offset; viseme frames sit at j·P − lead.
    phase = ((offset - lead) / period) % 1.0
    assert min(phase, 1.0 - phase) < 1e-6


def test_audio_offset_keeps_an_aligned_lead_in() -> None:
    assert aligned_offset_ms(500.0, 20.0, 25.0) == pytest.approx(500.0)
    assert aligned_offset_ms(510.0, 20.0, 25.0) == pytest.approx(500.0)
    assert aligned_offset_ms(0.0, 0.0, 30.0) == 0.0
