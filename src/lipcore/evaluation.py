"""Measured lip-sync quality of a rendered talking video.

The video is judged the way a viewer would: MediaPipe re-detects the face on every decoded
frame, the inner-lip gap over the mouth width gives the mouth's **aperture** over time, and that
is compared with the openness the phoneme timeline asks for.

* **offset** — the lag (ms) that best aligns aperture with expected openness, by normalised
  cross-correlation with sub-frame (parabolic) refinement. Positive means the mouth is late.
  Perception anchors (ITU-R BT.1359): a late mouth (audio leading) is noticed from ~45 ms, an
  early one from ~125 ms, so lipcore aims for a mouth 0–40 ms early.
* **bilabial closure rate** — the share of /p b m/ whose lips really close (aperture below
  ``CLOSED_APERTURE``) within their span widened by one frame on each side.
* **open-vowel aperture** — mean aperture at the centres of open vowels (AI, O).

Silences expect the photo's own mouth (its measured rest aperture, in openness units), not a
closed one: a smiling photo with teeth showing rests open, and that is not a sync error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lipcore.errors import InputError
from lipcore.interfaces import PhonemeTiming, VisemeSegment

__all__ = [
    "CLOSED_APERTURE",
    "OPENNESS",
    "SyncReport",
    "evaluate_sync",
    "expected_openness",
    "measure_apertures",
    "plot_sync",
    "sync_offset_ms",
]

#: Aperture (inner-lip gap / mouth width) under which lips count as closed. A closed photo
#: mouth measures ~0.00–0.02; a 20 px jaw drop on a 68 px mouth measures ~0.26.
CLOSED_APERTURE = 0.05

#: How open each viseme class is, 0 (closed) … 1 (widest), for the expected-openness curve.
OPENNESS: dict[str, float] = {
    "Rest": 0.0,
    "MBP": 0.0,
    "FV": 0.15,
    "E": 0.5,
    "AI": 1.0,
    "O": 0.75,
    "U": 0.35,
    "WQ": 0.3,
    "L": 0.5,
    "R": 0.35,
    "CH": 0.3,
    "TH": 0.4,
}
OPEN_VOWELS = ("AI", "O")

#: Measured aperture of openness 1 (the AI shape: ~0.33 of the mouth width on grace_hopper).
#: Converts the photo's rest aperture into openness for the silences (see evaluate_sync).
FULL_OPEN_APERTURE = 0.33

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SyncReport:
    offset_ms: float  # positive = mouth late
    peak_correlation: float
    closure_rate: float  # NaN when the text has no bilabial
    bilabials: int
    bilabials_closed: int
    open_vowel_aperture: float
    rest_aperture: float
    fps: float
    frames: int
    frames_with_face: int

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and np.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def measure_apertures(
    video: str | Path,
    *,
    analyzer: Any | None = None,
    progress: Callable[[int], None] | None = None,
) -> FloatArray:
    """Aperture per decoded frame of ``video`` (NaN where no face is found)."""
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.avatar.landmarks import mouth_aperture
    from lipcore.media import read_frames

    own = analyzer is None
    fa = FaceAnalyzer() if analyzer is None else analyzer
    values: list[float] = []
    try:
        for i, frame in enumerate(read_frames(video)):
            faces = fa.detect(frame)
            if faces:
                largest = max(faces, key=lambda f: f.bbox[2] * f.bbox[3])
                values.append(float(mouth_aperture(largest.landmarks)))
            else:
                values.append(float("nan"))
            if progress is not None:
                progress(i + 1)
    finally:
        if own:
            fa.close()
    return np.asarray(values, dtype=np.float64)


def expected_openness(track: Sequence[VisemeSegment], times_ms: FloatArray) -> FloatArray:
    """The openness the track asks for at each time (step function; silence = closed)."""
    out = np.zeros(len(times_ms), dtype=np.float64)
    for seg in track:
        sel = (times_ms >= seg.start_ms) & (times_ms < seg.end_ms)
        out[sel] = OPENNESS.get(seg.viseme, 0.3)
    return out


def sync_offset_ms(
    aperture: FloatArray, expected: FloatArray, fps: float, *, max_lag_ms: float = 250.0
) -> tuple[float, float]:
    """Lag of ``aperture`` behind ``expected`` (ms, positive = mouth late) and the peak
    normalised correlation. Frames without a face are left out of each lag's sum."""
    max_lag = max(1, round(max_lag_ms * fps / 1000.0))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), -np.inf)
    n = len(aperture)
    for j, k in enumerate(int(v) for v in lags):
        # mouth late by k frames: aperture[i + k] follows expected[i]
        lo, hi = max(0, -k), min(n, n - k)
        a = aperture[lo + k : hi + k]
        e = expected[lo:hi]
        ok = np.isfinite(a)
        if ok.sum() < 5:
            continue
        a, e = a[ok], e[ok]
        a = a - a.mean()
        e = e - e.mean()
        denom = float(np.sqrt((a * a).sum() * (e * e).sum()))
        corr[j] = float((a * e).sum() / denom) if denom > 0 else -np.inf
    best = int(np.argmax(corr))
    if not np.isfinite(corr[best]):
        raise InputError("the video shows too few frames with a detectable face to measure sync")
    shift = 0.0
    if 0 < best < len(lags) - 1 and np.isfinite(corr[best - 1]) and np.isfinite(corr[best + 1]):
        y0, y1, y2 = corr[best - 1], corr[best], corr[best + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            shift = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    return (float(lags[best]) + shift) * 1000.0 / fps, float(corr[best])


def evaluate_sync(
    apertures: FloatArray,
    track: Sequence[VisemeSegment],
    *,
    fps: float,
    audio_offset_ms: float,
) -> tuple[SyncReport, FloatArray, FloatArray]:
    """Compare measured ``apertures`` (one per video frame) with ``track``, whose times are on
    the audio timeline that starts ``audio_offset_ms`` into the video.

    Returns the report, the frame times on the audio timeline and the expected openness."""
    if len(apertures) == 0:
        raise InputError("the video has no frames")
    times = np.arange(len(apertures), dtype=np.float64) * 1000.0 / fps - audio_offset_ms
    expected = expected_openness(track, times)
    speech = (times >= 0) & (times <= (track[-1].end_ms if track else 0))
    rest_vals = apertures[~speech & np.isfinite(apertures)]
    rest_aperture = float(np.median(rest_vals)) if len(rest_vals) else float("nan")
    # In silence the avatar shows the photo's own mouth, which may be open (a smile with
    # teeth): the silences expect *that* openness, not a closed mouth, or a smiling photo's
    # pauses would count against it and blur the correlation.
    voiced = np.zeros(len(times), dtype=bool)
    for seg in track:
        if seg.viseme != "Rest":
            voiced |= (times >= seg.start_ms) & (times < seg.end_ms)
    if np.isfinite(rest_aperture):
        expected[~voiced] = min(1.0, max(0.0, rest_aperture / FULL_OPEN_APERTURE))
    offset, peak = sync_offset_ms(apertures, expected, fps)

    frame_ms = 1000.0 / fps
    bilabials = [s for s in track if s.viseme == "MBP"]
    closed = 0
    for seg in bilabials:
        sel = (times >= seg.start_ms - frame_ms) & (times <= seg.end_ms + frame_ms)
        vals = apertures[sel]
        vals = vals[np.isfinite(vals)]
        if len(vals) and float(vals.min()) <= CLOSED_APERTURE:
            closed += 1
    vowel_vals = []
    for seg in track:
        if seg.viseme in OPEN_VOWELS:
            i = round(((seg.start_ms + seg.end_ms) / 2 + audio_offset_ms) * fps / 1000.0)
            if 0 <= i < len(apertures) and np.isfinite(apertures[i]):
                vowel_vals.append(apertures[i])
    report = SyncReport(
        offset_ms=round(offset, 1),
        peak_correlation=round(peak, 3),
        closure_rate=(closed / len(bilabials)) if bilabials else float("nan"),
        bilabials=len(bilabials),
        bilabials_closed=closed,
        open_vowel_aperture=float(np.mean(vowel_vals)) if vowel_vals else float("nan"),
        rest_aperture=rest_aperture,
        fps=fps,
        frames=len(apertures),
        frames_with_face=int(np.isfinite(apertures).sum()),
    )
    return report, times, expected


def plot_sync(
    path: str | Path,
    times_ms: FloatArray,
    apertures: FloatArray,
    expected: FloatArray,
    track: Sequence[VisemeSegment],
    report: SyncReport,
    *,
    title: str = "",
) -> Path:
    """Aperture vs. expected openness over time, phonemes marked, metrics in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    scale = np.nanmax(apertures) if np.isfinite(apertures).any() else 1.0
    ax.fill_between(
        times_ms,
        0,
        expected * scale,
        step="mid",
        color="#b9d3f0",
        label="expected openness (scaled)",
    )
    ax.plot(times_ms, apertures, color="#c0392b", lw=1.6, marker=".", label="measured aperture")
    ax.axhline(CLOSED_APERTURE, color="#555", lw=0.8, ls=":", label="closed threshold")
    for seg in track:
        mid = (seg.start_ms + seg.end_ms) / 2
        color = "#1e8449" if seg.viseme == "MBP" else "#333"
        ax.text(
            mid,
            scale * 1.02,
            seg.phoneme or seg.viseme,
            ha="center",
            va="bottom",
            fontsize=7,
            color=color,
        )
    ax.set_xlabel("audio time (ms)")
    ax.set_ylabel("aperture")
    ax.set_ylim(0, scale * 1.15 + 1e-6)
    closure = "n/a" if np.isnan(report.closure_rate) else f"{report.closure_rate:.0%}"
    ax.set_title(
        f"{title}  offset {report.offset_ms:+.0f} ms (+ = mouth late) · "
        f"closure {closure} ({report.bilabials_closed}/{report.bilabials}) · "
        f"r={report.peak_correlation:.2f}",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def load_timings(path: str | Path) -> dict[str, Any]:
    """Read the ``*.timings.json`` that ``lipcore say`` writes next to its video."""
    p = Path(path)
    try:
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"timings file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"timings file {p} is not valid JSON: {exc}") from None
    if not isinstance(data.get("phonemes"), list):
        raise InputError(
            f"timings file {p} has no 'phonemes' list (was it written by lipcore say?)"
        )
    return data


def phonemes_from_timings(data: dict[str, Any]) -> list[PhonemeTiming]:
    out = []
    for p in data["phonemes"]:
        out.append(
            PhonemeTiming(
                phoneme=str(p["phoneme"]),
                start_ms=float(p["start_ms"]),
                end_ms=float(p["end_ms"]),
                word=int(p.get("word", -1)),
            )
        )
    return out
