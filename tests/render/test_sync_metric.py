"""The sync metric on a smiling photo: in silence the avatar shows the photo's own (open)
mouth, and that must not count as the mouth being out of sync."""

from __future__ import annotations

import numpy as np
import pytest

from lipcore.evaluation import evaluate_sync, expected_openness, sync_offset_ms
from lipcore.interfaces import VisemeSegment

FPS = 25.0


def _phrases() -> list[VisemeSegment]:
    # Three short phrases with pauses between them: "mama ... papa ... mama".
    segs: list[VisemeSegment] = []
    t = 0.0
    rng = np.random.default_rng(7)
    for phrase in range(3):
        for i in range(6):
            d = float(rng.uniform(60, 160))
            closure = i % 2 == 0
            viseme, phoneme = ("MBP", "m") if closure else ("AI", "a")
            segs.append(VisemeSegment(viseme, t, t + d, phoneme))
            t += d
        t += 400.0 if phrase < 2 else 0.0
    return segs


@pytest.mark.parametrize("delay_ms", [-40.0, 0.0, 40.0])
def test_a_smiling_rest_does_not_bias_the_offset(delay_ms: float) -> None:
    track = _phrases()
    offset_ms = 500.0
    n = int((track[-1].end_ms + offset_ms + 500.0) * FPS / 1000.0)
    t = np.arange(n) * 1000.0 / FPS - offset_ms - delay_ms
    ap = 0.3 * expected_openness(track, t)
    speaking = np.zeros(n, dtype=bool)
    for s in track:
        speaking |= (t >= s.start_ms) & (t < s.end_ms)
    ap[~speaking] = 0.16  # the photo's own smile, teeth showing
    ap += np.random.default_rng(1).normal(0.0, 0.004, n)

    report, times, _ = evaluate_sync(ap, track, fps=FPS, audio_offset_ms=offset_ms)
    assert report.rest_aperture == pytest.approx(0.16, abs=0.01)
    assert report.offset_ms == pytest.approx(delay_ms, abs=12.0)
    assert report.peak_correlation > 0.9
    # Expecting a closed mouth in the pauses would match the video worse.
    naive = expected_openness(track, times)
    _, naive_r = sync_offset_ms(ap, naive, FPS)
    assert naive_r < report.peak_correlation - 0.1
    assert report.closure_rate == 1.0
