"""Co-articulation: a viseme track → smooth class weights sampled at a frame rate.

The model follows Cohen & Massaro (1993): every segment of the track exerts a *dominance*
over time, flat over the segment and falling off exponentially outside it,

    D_i(t) = α_i · (exp(-τ/σ_i) - exp(-W_i/σ_i)) / (1 - exp(-W_i/σ_i))   for τ < W_i, else 0

where τ is the distance from ``t`` to the segment. The weight of class k is the share of the
dominance of its segments in the total, ``w_k = Σ_{i∈k} D_i / (Σ_i D_i + ε)``. Silence is
explicit: gaps between segments and the time before the first and after the last are Rest
segments, so a pause pulls the mouth back to rest. The result is then smoothed with a short
symmetric exponential kernel (zero phase, so the mouth is never late), and every closure
(MBP, FV) is made to *reach* its shape at the frame nearest its centre and on every frame
inside its span.

Everything a frame depends on lies within :attr:`CoarticulationParams.lookahead_ms` of it, which
is what lets :class:`StreamSampler` (behind
:class:`lipcore.default_plugins.mapper.DefaultVisemeStream`) emit frames incrementally, each
segment and frame computed once, with the values :func:`sample_weights` gives for the whole
track.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import numpy.typing as npt

from lipcore.interfaces import VisemeFrame, VisemeSegment
from lipcore.speech.visemes import VISEME_CLASSES, dominance_scale, is_closure

__all__ = [
    "ClassShape",
    "CoarticulationParams",
    "SegmentArrays",
    "SegmentLists",
    "StreamSampler",
    "frames_from_weights",
    "prepare_segment_lists",
    "prepare_segments",
    "sample_weights",
    "smooth_kernel",
]

FloatArray = npt.NDArray[np.float64]
_CLASS_INDEX = {name: i for i, name in enumerate(VISEME_CLASSES)}
_N = len(VISEME_CLASSES)
_REST = _CLASS_INDEX["Rest"]
_NAMES = tuple(VISEME_CLASSES)


@dataclass(frozen=True, slots=True)
class ClassShape:
    """Dominance of one class: magnitude ``alpha``, fall-off ``sigma_ms``, cut-off
    ``window_ms`` (the reach of its influence before and after the segment)."""

    alpha: float
    sigma_ms: float
    window_ms: float


def _default_shapes() -> dict[str, ClassShape]:
    # Why these numbers: vowels spread ±100 ms (the classic anticipatory range); lip rounding
    # (U, WQ, O) anticipates furthest (±120 ms); closures are strong and narrow so they win at
    # their centre but do not smear the vowels around them; tongue shapes sit between.
    vowel = ClassShape(alpha=1.0, sigma_ms=35.0, window_ms=100.0)
    return {
        "Rest": ClassShape(alpha=1.2, sigma_ms=30.0, window_ms=100.0),
        "AI": vowel,
        "E": vowel,
        "O": ClassShape(alpha=1.1, sigma_ms=40.0, window_ms=110.0),
        "U": ClassShape(alpha=1.2, sigma_ms=45.0, window_ms=120.0),
        "WQ": ClassShape(alpha=1.5, sigma_ms=45.0, window_ms=120.0),
        "MBP": ClassShape(alpha=4.0, sigma_ms=18.0, window_ms=70.0),
        "FV": ClassShape(alpha=3.0, sigma_ms=18.0, window_ms=70.0),
        "L": ClassShape(alpha=1.0, sigma_ms=20.0, window_ms=70.0),
        "R": ClassShape(alpha=0.9, sigma_ms=30.0, window_ms=90.0),
        "CH": ClassShape(alpha=1.5, sigma_ms=30.0, window_ms=100.0),
        "TH": ClassShape(alpha=1.5, sigma_ms=20.0, window_ms=70.0),
    }


@dataclass(frozen=True)
class CoarticulationParams:
    """Tunable co-articulation parameters (see the module docstring and docs/visemes.md)."""

    shapes: dict[str, ClassShape] = field(default_factory=_default_shapes)
    #: dominance that never belongs to any segment: far from speech, weights fade to Rest
    epsilon: float = 0.02
    #: time constant of the zero-phase exponential smoothing
    smooth_ms: float = 15.0
    #: every visible segment holds its shape at least this long (no one-frame flashes)
    min_hold_ms: float = 40.0
    #: closures (MBP, FV) are held at least this long, however short the phoneme
    min_closure_ms: float = 45.0
    #: weight a closure is lifted to at its frames (nearest its centre, inside it). 1.0: the
    #: lips really close there. Geometric back ends (mesh, and every client that blends mesh
    #: offsets or opening polygons by weight) open the mouth in proportion to what is left:
    #: 0.8 MBP next to 0.2 AI leaves a gap of 0.2 × AI's opening (~5 px on a 68 px mouth),
    #: which a viewer and a landmark detector both see as open lips. Cross-faded sprites hid
    #: that residual.
    reach: float = 1.0

    @property
    def max_window_ms(self) -> float:
        return max(s.window_ms for s in self.shapes.values())

    def smooth_radius_ms(self, fps: float) -> float:
        frames = math.ceil(3.0 * self.smooth_ms * fps / 1000.0)
        return frames * 1000.0 / fps

    def lookahead_ms(self, fps: float) -> float:
        """How far beyond a frame's time the track must be known to compute the frame."""
        widen = max(self.min_hold_ms, self.min_closure_ms, 1000.0 / fps) / 2.0
        return self.max_window_ms + widen + self.smooth_radius_ms(fps) + 1000.0 / fps


@dataclass(frozen=True, slots=True)
class SegmentArrays:
    """A track as arrays (sorted by start), Rest segments for the silences included."""

    start: FloatArray  # plateau start (ms), after min-hold widening
    end: FloatArray
    cls: npt.NDArray[np.int64]
    alpha: FloatArray
    sigma: FloatArray
    window: FloatArray
    closure_frame: npt.NDArray[np.int64]  # the frame each MBP/FV segment must win (reach rule)
    closure_cls: npt.NDArray[np.int64]

    @property
    def max_window(self) -> float:
        return float(self.window.max()) if self.window.size else 0.0


def prepare_segments(
    track: Sequence[VisemeSegment],
    params: CoarticulationParams,
    *,
    fps: float,
    closed: bool = True,
    rest_before: float = -math.inf,
    silent_until: float = -math.inf,
) -> SegmentArrays:
    """Arrays for :func:`sample_weights`: widened plateaus, per-segment dominance, and Rest in
    every gap: from ``rest_before`` (the end of speech already dropped by a stream) to the
    first segment, between segments, and, if the track is ``closed``, after the last one (an
    open stream does not know yet what follows; it may know there is silence up to
    ``silent_until``)."""
    lists = prepare_segment_lists(
        track, params, fps=fps, closed=closed, rest_before=rest_before, silent_until=silent_until
    )
    return SegmentArrays(
        start=np.asarray(lists.start, dtype=np.float64),
        end=np.asarray(lists.end, dtype=np.float64),
        cls=np.asarray(lists.cls, dtype=np.int64),
        alpha=np.asarray(lists.alpha, dtype=np.float64),
        sigma=np.asarray(lists.sigma, dtype=np.float64),
        window=np.asarray(lists.window, dtype=np.float64),
        closure_frame=np.asarray(lists.closure_frame, dtype=np.int64),
        closure_cls=np.asarray(lists.closure_cls, dtype=np.int64),
    )


@dataclass(frozen=True, slots=True)
class SegmentLists:
    """:class:`SegmentArrays` as plain lists (the form :func:`prepare_segment_lists` builds
    them in before :func:`prepare_segments` turns them into arrays)."""

    start: list[float]
    end: list[float]
    cls: list[int]
    alpha: list[float]
    sigma: list[float]
    window: list[float]
    closure_frame: list[int]
    closure_cls: list[int]


#: What :func:`prepare_segment_lists` derives from one segment alone: plateau start and end,
#: class index, dominance magnitude, and for a closure the frames it may claim, nearest first.
_Prepared = tuple[float, float, int, float, tuple[int, ...]]


def _prepare_one(s: VisemeSegment, params: CoarticulationParams, frame_ms: float) -> _Prepared:
    closure = is_closure(s.viseme)
    hold = max(params.min_closure_ms, frame_ms) if closure else params.min_hold_ms
    centre = (s.start_ms + s.end_ms) / 2.0
    half = max((s.end_ms - s.start_ms) / 2.0, hold / 2.0)
    alpha = params.shapes[s.viseme].alpha * (dominance_scale(s.phoneme) if s.phoneme else 1.0)
    candidates: tuple[int, ...] = ()
    if closure:
        lo = math.floor(s.start_ms / frame_ms) - 1
        hi = math.ceil(s.end_ms / frame_ms) + 1
        candidates = tuple(
            j
            for j in sorted(range(lo, hi + 1), key=lambda j: (abs(j * frame_ms - centre), j))
            if j >= 0
        )
    return centre - half, centre + half, _CLASS_INDEX[s.viseme], alpha, candidates


_BY_TIME = operator.attrgetter("start_ms", "end_ms")


def prepare_segment_lists(
    track: Sequence[VisemeSegment],
    params: CoarticulationParams,
    *,
    fps: float,
    closed: bool = True,
    rest_before: float = -math.inf,
    silent_until: float = -math.inf,
    memo: dict[VisemeSegment, _Prepared] | None = None,
) -> SegmentLists:
    """:func:`prepare_segments` as lists. ``memo`` keeps what each segment alone gives across
    calls (a stream prepares the same segments for many chunks; it drops them as they age)."""
    segs = sorted((s for s in track if s.viseme != "Rest" and s.end_ms >= s.start_ms), key=_BY_TIME)
    starts: list[float] = []
    ends: list[float] = []
    clss: list[int] = []
    alphas: list[float] = []
    sigmas: list[float] = []
    windows: list[float] = []
    c_frame: list[int] = []
    c_cls: list[int] = []
    claimed: dict[int, int] = {}
    closures: list[tuple[float, float, int]] = []
    frame_ms = 1000.0 / fps
    shapes = [params.shapes[name] for name in VISEME_CLASSES]
    rest = shapes[_REST]

    def add(start: float, end: float, cls: int, alpha: float) -> None:
        shape = shapes[cls]
        starts.append(start)
        ends.append(end)
        clss.append(cls)
        alphas.append(alpha)
        sigmas.append(shape.sigma_ms)
        windows.append(shape.window_ms)

    rest_start = rest_before
    for s in segs:
        if s.start_ms > rest_start:
            add(rest_start, s.start_ms, _REST, rest.alpha)
        rest_start = max(rest_start, s.end_ms)
        if memo is None:
            prepared = _prepare_one(s, params, frame_ms)
        else:
            got = memo.get(s)
            prepared = (
                got if got is not None else memo.setdefault(s, _prepare_one(s, params, frame_ms))
            )
        p_start, p_end, cls, alpha, candidates = prepared
        add(p_start, p_end, cls, alpha)
        # A closure takes the frame nearest its centre, unless another closure class already
        # took it (two closures within one frame period): then the next nearest frame the
        # segment touches, so each closure is seen.
        for j in candidates:
            if claimed.get(j, cls) == cls:
                claimed[j] = cls
                c_frame.append(j)
                c_cls.append(cls)
                break
        if candidates:
            closures.append((s.start_ms, s.end_ms, cls))
    # Then every frame inside a closure's own span: the lips stay shut for the whole /m/ or
    # /b/, not for one frame amid the neighbouring vowels' co-articulation (a 90 ms /m/ at
    # 25 fps spans two frames; with only its centre lifted, the other one still showed the
    # mouth ~30 % open). Centres come first, so two crowded closures still each get a frame.
    for start, end, cls in closures:
        for j in range(max(0, math.ceil(start / frame_ms)), math.floor(end / frame_ms) + 1):
            if j not in claimed:
                claimed[j] = cls
                c_frame.append(j)
                c_cls.append(cls)
    if closed:
        add(rest_start, math.inf, _REST, rest.alpha)
    elif silent_until > rest_start:
        add(rest_start, silent_until, _REST, rest.alpha)
    return SegmentLists(starts, ends, clss, alphas, sigmas, windows, c_frame, c_cls)


def _raw_weights(arr: SegmentArrays, times: FloatArray, epsilon: float) -> FloatArray:
    """Unsmoothed weights (len(times) × classes, Rest included) at evenly spaced ``times``.

    Segment-centric: each segment is evaluated only on the frames within its window, and the
    (frame, class) sums are gathered with one ``bincount``; cost grows with speech length, not
    with frames × segments.
    """
    n = times.size
    out = np.zeros((n, _N), dtype=np.float64)
    if n == 0:
        return out
    if arr.start.size == 0:
        out[:, _REST] = 1.0
        return out
    t0 = float(times[0])
    step = float(times[1] - times[0]) if n > 1 else 1.0
    lo_t = np.maximum(arr.start - arr.window, t0 - step)
    hi_t = np.minimum(arr.end + arr.window, t0 + n * step)
    lo = np.clip(np.ceil((lo_t - t0) / step), 0, n).astype(np.int64)
    hi = np.clip(np.floor((hi_t - t0) / step) + 1, 0, n).astype(np.int64)
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    if total:
        seg = np.repeat(np.arange(arr.start.size), counts)
        # frame index of each (segment, frame) pair: lo[seg] + position within the segment's run
        run_start = np.cumsum(counts) - counts
        frame = lo[seg] + (np.arange(total) - run_start[seg])
        t = t0 + frame * step
        tau = np.maximum(np.maximum(arr.start[seg] - t, t - arr.end[seg]), 0.0)
        sig, win = arr.sigma[seg], arr.window[seg]
        floor = np.exp(-win / sig)
        dom = (np.exp(-tau / sig) - floor) / (1.0 - floor)
        dom = np.where(tau < win, dom, 0.0) * arr.alpha[seg]
        per_class = np.bincount(frame * _N + arr.cls[seg], weights=dom, minlength=n * _N)
        per_class = per_class.reshape(n, _N)
        out = per_class / (per_class.sum(axis=1, keepdims=True) + epsilon)
    # What no segment claims is rest (the ε share, and times beyond every window).
    out[:, _REST] += 1.0 - out.sum(axis=1)
    return out


def sample_weights(
    arr: SegmentArrays,
    params: CoarticulationParams,
    *,
    fps: float,
    first: int,
    last: int,
) -> FloatArray:
    """Weights for frames ``first … last`` (inclusive; frame ``j`` is at ``j·1000/fps`` ms):
    a (frames × classes) array whose rows sum to 1, column 0 being Rest."""
    if last < first:
        return np.zeros((0, _N), dtype=np.float64)
    frame_ms = 1000.0 / fps
    k = round(params.smooth_radius_ms(fps) / frame_ms)
    idx = np.arange(first - k, last + k + 1, dtype=np.float64)
    raw = _raw_weights(arr, idx * frame_ms, params.epsilon)
    if k > 0:
        offsets = np.arange(-k, k + 1, dtype=np.float64) * frame_ms
        kernel = np.exp(-np.abs(offsets) / params.smooth_ms)
        kernel /= kernel.sum()
        smooth = np.zeros((last - first + 1, _N), dtype=np.float64)
        for i, w in enumerate(kernel):
            smooth += w * raw[i : i + last - first + 1]
    else:
        smooth = raw
    # Closures must reach their shape: at the frame chosen for each (nearest its centre), lift
    # it to ``reach`` if it does not already dominate there, scaling the other classes down.
    if arr.closure_frame.size:
        frames = arr.closure_frame
        inside = (frames >= first) & (frames <= last)
        for j, c in zip(frames[inside] - first, arr.closure_cls[inside], strict=True):
            row = smooth[j]
            if row[c] >= params.reach and row.argmax() == c:
                continue
            target = max(params.reach, float(row[c]))
            others = 1.0 - row[c]
            scale = (1.0 - target) / others if others > 0 else 0.0
            row *= scale
            row[c] = target
    return np.clip(smooth, 0.0, 1.0)


def frames_from_weights(weights: FloatArray, *, fps: float, first: int) -> list[VisemeFrame]:
    """Contract frames (Rest left implicit) from a weights array; frame ``first + i`` is row i."""
    frame_ms = 1000.0 / fps
    w = weights[:, 1:]
    total = w.sum(axis=1)
    over = total > 1.0  # float round-off only; the contract says "at most 1"
    if over.any():
        w = w.copy()
        w[over] /= total[over, None]
    rows, cols = np.nonzero(w >= 1e-3)
    values = w[rows, cols].tolist()
    names = VISEME_CLASSES[1:]
    dicts: list[dict[str, float]] = [{} for _ in range(w.shape[0])]
    for r, c, v in zip(rows.tolist(), cols.tolist(), values, strict=True):
        dicts[r][names[c]] = v
    return [VisemeFrame(pts_ms=(first + i) * frame_ms, weights=d) for i, d in enumerate(dicts)]


def smooth_kernel(params: CoarticulationParams, fps: float) -> list[float]:
    """The zero-phase smoothing kernel (2k+1 taps) :func:`sample_weights` uses."""
    frame_ms = 1000.0 / fps
    k = round(params.smooth_radius_ms(fps) / frame_ms)
    kernel = [math.exp(-abs(i * frame_ms) / params.smooth_ms) for i in range(-k, k + 1)]
    total = sum(kernel)
    return [w / total for w in kernel]


# ------------------------------------------------------------------ incremental (live stream)
# A live stream emits one or two frames per TTS chunk, some 180 chunks per 10 s of speech.
# Rebuilding the segment list and re-deriving rows per chunk made mapping most of a speaking
# session's server CPU, so :class:`StreamSampler` keeps everything between chunks: each
# segment is prepared once and deposits its dominance into the frames it reaches when it
# arrives (segment-centric, like :func:`_raw_weights`); a frame's raw row is normalised once,
# when the look-ahead guarantees nothing more can reach it; smoothing and the closure rule then
# touch only the frames being emitted, and only the classes present around them (a frame has
# three to five of the twelve). Sums run over the same terms in the same order as the array
# version, so the two agree to float round-off.

#: bit of each class in a row's mask of present classes (Rest: none, it is implicit)
_BIT = tuple(0 if i == _REST else 1 << i for i in range(_N))
#: mask → the classes it holds, in class order
_CLASSES_OF = tuple(tuple(i for i in range(_N) if m & _BIT[i]) for m in range(1 << _N))
_ALL = tuple(range(_N))
#: the raw row of a frame nothing reaches: all Rest
_REST_ROW = tuple(1.0 if i == _REST else 0.0 for i in range(_N))

_Rows = Sequence[Sequence[float]]


def _smoother(kernel: tuple[float, ...]) -> Callable[[_Rows, Sequence[int]], list[float]]:
    """``f(rows, classes)``: Σ_tap w_tap · rows[tap][c] for each class c, summed in tap order
    like :func:`sample_weights`; unrolled for the usual kernel sizes (3, 5, 7 taps)."""
    if len(kernel) == 3:
        w0, w1, w2 = kernel

        def smooth3(rows: _Rows, classes: Sequence[int]) -> list[float]:
            r0, r1, r2 = rows
            return [r0[c] * w0 + r1[c] * w1 + r2[c] * w2 for c in classes]

        return smooth3
    if len(kernel) == 5:
        w0, w1, w2, w3, w4 = kernel

        def smooth5(rows: _Rows, classes: Sequence[int]) -> list[float]:
            r0, r1, r2, r3, r4 = rows
            return [r0[c] * w0 + r1[c] * w1 + r2[c] * w2 + r3[c] * w3 + r4[c] * w4 for c in classes]

        return smooth5
    if len(kernel) == 7:
        w0, w1, w2, w3, w4, w5, w6 = kernel

        def smooth7(rows: _Rows, classes: Sequence[int]) -> list[float]:
            r0, r1, r2, r3, r4, r5, r6 = rows
            return [
                r0[c] * w0
                + r1[c] * w1
                + r2[c] * w2
                + r3[c] * w3
                + r4[c] * w4
                + r5[c] * w5
                + r6[c] * w6
                for c in classes
            ]

        return smooth7

    def smooth_any(rows: _Rows, classes: Sequence[int]) -> list[float]:
        return [sum(map(operator.mul, kernel, [r[c] for r in rows])) for c in classes]

    return smooth_any


class StreamSampler:
    """:func:`prepare_segments` + :func:`sample_weights` + :func:`frames_from_weights`,
    incrementally: :meth:`add` segments as they arrive, :meth:`emit` frames as they become
    final. The frames are those :func:`sample_weights` gives for the whole track, provided
    everything within :meth:`CoarticulationParams.lookahead_ms` of a frame was added before
    it is emitted (segments in time order; one out of order is handled by replaying)."""

    def __init__(self, params: CoarticulationParams, fps: float) -> None:
        self.fps = fps
        self._frame_ms = 1000.0 / fps
        self._epsilon = params.epsilon
        self._reach = params.reach
        self._min_hold = params.min_hold_ms
        self._closure_hold = max(params.min_closure_ms, self._frame_ms)
        shapes = [params.shapes[name] for name in VISEME_CLASSES]
        self._alpha = [s.alpha for s in shapes]
        self._sigma = [s.sigma_ms for s in shapes]
        self._window = [s.window_ms for s in shapes]
        self._floor = [math.exp(-s.window_ms / s.sigma_ms) for s in shapes]
        self._closure = [is_closure(name) for name in VISEME_CLASSES]
        kernel = tuple(smooth_kernel(params, fps))
        self._k = len(kernel) // 2
        self._taps = len(kernel)
        self._smooth = _smoother(kernel)
        self._kernel = kernel
        #: (viseme, phoneme) → class, is closure, dominance magnitude, minimum hold
        self._kinds: dict[tuple[str, str], tuple[int, bool, float, float]] = {}
        self._segs: list[VisemeSegment] = []  # every segment so far, sorted by time
        self._last_key = (-math.inf, -math.inf)
        self._raw_next = -self._k  # first frame whose raw row is not final yet
        self._raw_first = -self._k  # frame of self._raw[0]
        self._raw: list[Sequence[float]] = []  # final raw rows still needed for smoothing
        self._masks: list[int] = []  # their present classes (Rest aside), as bits
        self._next = 0  # next frame to emit
        self._reset()

    def _reset(self) -> None:
        self._acc: dict[int, dict[int, float]] = {}  # frame → class → dominance (pending)
        self._centre: dict[int, int] = {}  # frame → closure class claiming it (its centre)
        #: frame → the closure class lifted there: its centre claim, else the first closure
        #: whose span holds it (what :func:`prepare_segment_lists` gives, in one look-up)
        self._claims: dict[int, int] = {}
        self._rest_start = -math.inf  # where the Rest after the last segment begins

    @property
    def next_frame(self) -> int:
        """Index of the next frame :meth:`emit` gives."""
        return self._next

    def add(self, segs: Sequence[VisemeSegment]) -> None:
        """Add track segments (Rest and inverted ones are ignored, as by the array path)."""
        for s in segs:
            if s.viseme == "Rest" or s.end_ms < s.start_ms:
                continue
            key = (s.start_ms, s.end_ms)
            if key >= self._last_key:
                self._last_key = key
                self._segs.append(s)
                self._accept(s)
                continue
            # Out of time order: the whole-track path sorts, so redo the pending frames'
            # state from the sorted track (rare: TTS timings come in order).
            at = len(self._segs)
            while at and _BY_TIME(self._segs[at - 1]) > key:
                at -= 1
            self._segs.insert(at, s)
            self._reset()
            for seg in self._segs:
                self._accept(seg)
            # Claims of frames already out are never looked up again.
            self._claims = {j: c for j, c in self._claims.items() if j >= self._next}

    def _accept(self, s: VisemeSegment) -> None:
        start, end = s.start_ms, s.end_ms
        if start > self._rest_start:
            self._deposit(self._rest_start, start, _REST, self._alpha[_REST])
        if end > self._rest_start:
            self._rest_start = end
        kind = self._kinds.get((s.viseme, s.phoneme))
        if kind is None:
            kind = self._kinds[(s.viseme, s.phoneme)] = self._kind(s)
        cls, closure, alpha, hold = kind
        centre = (start + end) / 2.0
        half = (end - start) / 2.0
        if half < hold / 2.0:
            half = hold / 2.0
        self._deposit(centre - half, centre + half, cls, alpha)
        if not closure:
            return
        # The closure rule of :func:`prepare_segment_lists`: the frame nearest the centre
        # (the next nearest if another closure class took it), then every frame in the span.
        frame_ms = self._frame_ms
        lo = math.floor(start / frame_ms) - 1
        hi = math.ceil(end / frame_ms) + 1
        claims = self._claims
        for j in sorted(range(max(lo, 0), hi + 1), key=lambda j: (abs(j * frame_ms - centre), j)):
            if self._centre.get(j, cls) == cls:
                self._centre[j] = claims[j] = cls  # a centre wins over any span
                break
        for j in range(max(0, math.ceil(start / frame_ms)), math.floor(end / frame_ms) + 1):
            if j not in claims:
                claims[j] = cls

    def _kind(self, s: VisemeSegment) -> tuple[int, bool, float, float]:
        cls = _CLASS_INDEX[s.viseme]
        closure = self._closure[cls]
        hold = self._closure_hold if closure else self._min_hold
        alpha = self._alpha[cls] * (dominance_scale(s.phoneme) if s.phoneme else 1.0)
        return cls, closure, alpha, hold

    def _deposit(self, start: float, end: float, cls: int, alpha: float) -> None:
        """Add one segment's dominance to the pending frames it reaches."""
        frame_ms = self._frame_ms
        window = self._window[cls]
        lo = self._raw_next
        lo_t = start - window
        if lo_t > lo * frame_ms:
            lo = max(lo, math.ceil(lo_t / frame_ms))
        hi = math.floor((end + window) / frame_ms)
        if hi < lo:
            return
        sigma = self._sigma[cls]
        floor = self._floor[cls]
        norm = 1.0 - floor
        acc = self._acc
        exp = math.exp
        get = acc.get
        for j in range(lo, hi + 1):
            t = j * frame_ms
            if t < start:
                tau = start - t
                if tau >= window:
                    continue
                dom = (exp(-tau / sigma) - floor) / norm * alpha
            elif t > end:
                tau = t - end
                if tau >= window:
                    continue
                dom = (exp(-tau / sigma) - floor) / norm * alpha
            else:
                dom = (1.0 - floor) / norm * alpha
            row = get(j)
            if row is None:
                acc[j] = {cls: dom}
            elif cls in row:
                row[cls] += dom
            else:
                row[cls] = dom

    def _finalize(self, hi: int, trailing: tuple[float, float] | None) -> None:
        """Normalise the raw rows of frames up to ``hi``: nothing more can reach them but the
        Rest after the last segment, ``trailing`` (start, end), added here in the array
        version's order (it is the last segment there)."""
        frame_ms = self._frame_ms
        acc = self._acc
        raw = self._raw
        masks = self._masks
        epsilon = self._epsilon
        rest_alpha = self._alpha[_REST]
        window = self._window[_REST]
        sigma = self._sigma[_REST]
        floor = self._floor[_REST]
        norm = 1.0 - floor
        bits = _BIT
        for j in range(self._raw_next, hi + 1):
            got = acc.pop(j, None)
            if trailing is not None:
                t = j * frame_ms
                start, end = trailing
                tau = start - t if t < start else (t - end if t > end else 0.0)
                if tau < window:
                    dom = (math.exp(-tau / sigma) - floor) / norm * rest_alpha
                    if got is None:
                        got = {_REST: dom}
                    else:
                        got[_REST] = got.get(_REST, 0.0) + dom
            if not got:
                raw.append(_REST_ROW)
                masks.append(0)
                continue
            total = sum(got.values()) + epsilon
            row = [0.0] * _N
            mask = 0
            for c, v in got.items():
                row[c] = v / total
                mask |= bits[c]
            # What no segment claims is rest (the ε share, and times beyond every window).
            row[_REST] += 1.0 - sum(row)
            raw.append(row)
            masks.append(mask)
        if hi >= self._raw_next:
            self._raw_next = hi + 1

    def emit(
        self, last: int, *, closed: bool, silent_until: float = -math.inf
    ) -> list[VisemeFrame]:
        """Frames ``next_frame … last``. ``closed``: the track is complete (Rest for ever after
        it); otherwise there is known silence after the last segment up to ``silent_until``."""
        first = self._next
        if last < first:
            return []
        k = self._k
        rest_start = self._rest_start
        trailing: tuple[float, float] | None = None
        if closed:
            trailing = (rest_start, math.inf)
        elif silent_until > rest_start:
            trailing = (rest_start, silent_until)
        self._finalize(last + k, trailing)
        raw = self._raw
        masks = self._masks
        base = self._raw_first
        taps = self._taps
        smooth = self._smooth
        claims = self._claims
        frame_ms = self._frame_ms
        names = _NAMES
        classes_of = _CLASSES_OF
        or_ = operator.or_
        five = taps == 5
        w0, w1, w2, w3, w4 = self._kernel if five else (0.0,) * 5
        out: list[VisemeFrame] = []
        for j in range(first, last + 1):
            i = j - k - base
            c = claims.pop(j, None)
            if c is not None:
                values = self._reach_closure(smooth(raw[i : i + taps], _ALL), c)
                classes: Sequence[int] = _ALL[1:]
            elif five:
                # The usual kernel (24-30 fps), inlined; the same sums as ``smooth``.
                mask = masks[i] | masks[i + 1] | masks[i + 2] | masks[i + 3] | masks[i + 4]
                if not mask:  # silence all around: Rest
                    out.append(VisemeFrame(pts_ms=j * frame_ms, weights={}))
                    continue
                classes = classes_of[mask]
                r0, r1, r2, r3, r4 = raw[i : i + 5]
                weights: dict[str, float] = {}
                total = 0.0
                for c in classes:
                    v = r0[c] * w0 + r1[c] * w1 + r2[c] * w2 + r3[c] * w3 + r4[c] * w4
                    total += v
                    if v >= 1e-3:
                        weights[names[c]] = v
                if total <= 1.0:  # no class can exceed 1 (none is negative): done
                    out.append(VisemeFrame(pts_ms=j * frame_ms, weights=weights))
                    continue
                values = smooth(raw[i : i + taps], classes)
            else:
                mask = reduce(or_, masks[i : i + taps])
                if not mask:
                    out.append(VisemeFrame(pts_ms=j * frame_ms, weights={}))
                    continue
                classes = classes_of[mask]
                values = smooth(raw[i : i + taps], classes)
            total = sum(values)
            if total > 1.0:  # float round-off only; the contract says "at most 1"
                values = [v / total for v in values]
            weights = {
                names[c]: (v if v < 1.0 else 1.0)
                for c, v in zip(classes, values, strict=True)
                if v >= 1e-3
            }
            out.append(VisemeFrame(pts_ms=j * frame_ms, weights=weights))
        self._next = last + 1
        # Raw rows older than the next frame's smoothing reach are no longer needed.
        drop = self._next - k - base
        if drop > 0:
            del raw[:drop]
            del masks[:drop]
            self._raw_first = base + drop
        if len(self._centre) > 64:  # claims of emitted frames are never looked up again
            self._centre = {j: c for j, c in self._centre.items() if j >= self._next}
        return out

    def _reach_closure(self, row: list[float], c: int) -> list[float]:
        """:func:`sample_weights`' closure rule on one full row (Rest first); returns the row
        without Rest. Closures must reach their shape: lift class ``c`` to ``reach`` if it does
        not already dominate, scaling the other classes down."""
        own = row[c]
        reach = self._reach
        if own < reach or row.index(max(row)) != c:
            target = max(reach, own)
            others = 1.0 - own
            scale = (1.0 - target) / others if others > 0 else 0.0
            row = [v * scale for v in row]
            row[c] = target
        # The array version clips to [0, 1]: Rest may be a hair below 0 after round-off.
        return [v if v > 0.0 else 0.0 for v in row[1:]]
