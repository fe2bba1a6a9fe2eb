"""How close visemes derived from *character* timings come to visemes from the *true* phoneme
timings (the mock knows them: its speech is espeak-ng's). Used by the tests and the benchmark.

The two tracks come from different routes (espeak's sentence synthesis vs. grapheme-to-phoneme
per word spread over the word's characters), so they are aligned as sequences of viseme classes
first (difflib); the error is measured on the onsets of the matched segments.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from lipcore.interfaces import VisemeSegment

__all__ = ["OnsetReport", "compare_tracks"]


@dataclass(frozen=True)
class OnsetReport:
    matched: int  # segments paired between the tracks
    true_segments: int
    estimated_segments: int
    mae_ms: float  # mean absolute onset error of the paired segments
    p90_ms: float
    mean_signed_ms: float  # > 0: the character route is late

    @property
    def match_rate(self) -> float:
        return self.matched / self.true_segments if self.true_segments else 0.0


def compare_tracks(
    true: Sequence[VisemeSegment], estimated: Sequence[VisemeSegment]
) -> OnsetReport:
    """Onset error of ``estimated`` against ``true`` (both on one audio timeline)."""
    a = [s.viseme for s in true]
    b = [s.viseme for s in estimated]
    errors: list[float] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            errors.append(estimated[block.b + k].start_ms - true[block.a + k].start_ms)
    if not errors:
        return OnsetReport(0, len(a), len(b), float("nan"), float("nan"), float("nan"))
    absolute = sorted(abs(e) for e in errors)
    p90 = absolute[min(len(absolute) - 1, int(0.9 * len(absolute)))]
    return OnsetReport(
        matched=len(errors),
        true_segments=len(a),
        estimated_segments=len(b),
        mae_ms=sum(absolute) / len(absolute),
        p90_ms=p90,
        mean_signed_ms=sum(errors) / len(errors),
    )
