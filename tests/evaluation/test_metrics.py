"""The sync metric itself, on signals with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from lipcore.errors import InputError
from lipcore.evaluation import CLOSED_APERTURE, evaluate_sync, expected_openness, sync_offset_ms
from lipcore.interfaces import VisemeSegment

FPS = 25.0


def _track() -> list[VisemeSegment]:
    # "mama papa ..." style: alternating closures and open vowels, irregular lengths
    segs, t = [], 0.0
    rng = np.random.default_rng(3)
    for i in range(24):
        d = float(rng.uniform(60, 180))
        closure = i % 2 == 0
        segs.append(VisemeSegment("MBP" if closure else "AI", t, t + d, "m" if closure else "a"))
        t += d
    return segs


def _render(
    track: list[VisemeSegment], delay_ms: float, audio_offset_ms: float, smooth: bool = True
) -> np.ndarray:
    """A fake 'measured aperture': the expected openness, delayed, smoothed, scaled, noisy."""
    n = int((track[-1].end_ms + audio_offset_ms + 600) * FPS / 1000)
    t = np.arange(n) * 1000 / FPS - audio_offset_ms - delay_ms
    fine = expected_openness(track, t)
    ap = 0.3 * (np.convolve(fine, [0.25, 0.5, 0.25], mode="same") if smooth else fine)
    return ap + np.random.default_rng(0).normal(0, 0.004, n).clip(0)


@pytest.mark.parametrize("delay_ms", [-60.0, -20.0, 0.0, 40.0, 80.0])
def test_offset_recovers_a_known_delay(delay_ms: float) -> None:
    track = _track()
    ap = _render(track, delay_ms, audio_offset_ms=400)
    report, _, _ = evaluate_sync(ap, track, fps=FPS, audio_offset_ms=400)
    assert report.offset_ms == pytest.approx(delay_ms, abs=12)
    assert report.peak_correlation > 0.8


def test_closure_rate_counts_bilabials_that_really_close() -> None:
    track = _track()
    ap = _render(track, 0.0, audio_offset_ms=0, smooth=False)
    report, _, _ = evaluate_sync(ap, track, fps=FPS, audio_offset_ms=0)
    assert report.bilabials == 12 and report.closure_rate == 1.0
    # keep the mouth open through every closure: the rate must drop to zero
    stuck = np.maximum(ap, CLOSED_APERTURE * 2)
    report, _, _ = evaluate_sync(stuck, track, fps=FPS, audio_offset_ms=0)
    assert report.closure_rate == 0.0
    assert report.open_vowel_aperture > 0.2


def test_no_face_anywhere_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="too few frames"):
        sync_offset_ms(np.full(50, np.nan), np.zeros(50), FPS)
