"""Vendor character alignments → one absolute timeline of :class:`CharTiming`.

The two transports time characters differently:

* **WebSocket** frames carry integer milliseconds *relative to the frame's own audio*, as
  start/duration pairs (``charStartTimesMs`` + ``charDurationsMs``; the vendor's spec spells the
  second ``charsDurationsMs``, real payloads do not: both are read). The frame's place on the
  utterance timeline is the audio received before it. Because the output is raw PCM we know
  that to the sample (bytes / 2 / rate), which is exact, unlike summing the previous frame's
  last start + duration (what clients of compressed formats must do).
* **HTTP** ``stream/with-timestamps`` lines carry float *seconds*, start/end pairs, continuous
  across the whole response: they are absolute already.

Which alignment drives visemes: ``normalizedAlignment`` by default. It follows the text as the
voice *speaks* it (numbers and abbreviations spelled out), so grapheme-to-phoneme on those
characters yields the phonemes actually heard; ``alignment`` follows the text as sent (right
for captions, wrong for the mouth when "42" is said "forty-two"). Either may be ``null`` on a
frame; then the other is used for that frame, and with both null the frame has no timings (the
mouth mapper still advances its horizon over the audio). The normalized text often begins with
a space; whitespace is stripped only at the very start of an utterance — a space at a chunk
boundary in the middle is a word boundary the mapper needs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from lipcore.interfaces import CharTiming

__all__ = ["CharTimeline", "parse_http_alignment", "parse_ws_alignment"]

logger = logging.getLogger("lipcore_tts_elevenlabs")

Rel = tuple[str, float, float]  # char, start_ms, end_ms


def _as_list(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, list | tuple) else None


def parse_ws_alignment(obj: Any) -> list[Rel] | None:
    """One WebSocket ``alignment``/``normalizedAlignment`` object → (char, start, end) in ms
    relative to its frame; ``None`` when the object is null or unusable."""
    if not isinstance(obj, Mapping):
        return None
    chars = _as_list(obj.get("chars"))
    starts = _as_list(obj.get("charStartTimesMs"))
    durs = _as_list(obj.get("charDurationsMs"))
    if durs is None:
        durs = _as_list(obj.get("charsDurationsMs"))  # the spec's spelling
    if chars is None or starts is None or durs is None:
        return None
    n = min(len(chars), len(starts), len(durs))
    if n != len(chars) or n != len(starts) or n != len(durs):
        logger.debug(
            "alignment arrays differ in length (%d/%d/%d)", len(chars), len(starts), len(durs)
        )
    out: list[Rel] = []
    for ch, s, d in zip(chars[:n], starts[:n], durs[:n], strict=True):
        try:
            start = float(s)
            dur = max(0.0, float(d))
        except (TypeError, ValueError):
            continue
        out.append((str(ch), start, start + dur))
    return out


def parse_http_alignment(obj: Any) -> list[Rel] | None:
    """One HTTP ``alignment``/``normalized_alignment`` object → (char, start, end) in absolute
    ms (the HTTP stream's float seconds are continuous across the response)."""
    if not isinstance(obj, Mapping):
        return None
    chars = _as_list(obj.get("characters"))
    starts = _as_list(obj.get("character_start_times_seconds"))
    ends = _as_list(obj.get("character_end_times_seconds"))
    if chars is None or starts is None or ends is None:
        return None
    n = min(len(chars), len(starts), len(ends))
    out: list[Rel] = []
    for ch, s, e in zip(chars[:n], starts[:n], ends[:n], strict=True):
        try:
            start = float(s) * 1000.0
            end = max(start, float(e) * 1000.0)
        except (TypeError, ValueError):
            continue
        out.append((str(ch), start, end))
    return out


class CharTimeline:
    """Assembles the characters of one utterance on its absolute audio timeline."""

    def __init__(self, prefer: Literal["normalized", "original"] = "normalized") -> None:
        self.prefer = prefer
        self._at_start = True
        self.frames_without_timings = 0

    def _pick(self, normalized: list[Rel] | None, original: list[Rel] | None) -> list[Rel] | None:
        first, second = (
            (normalized, original) if self.prefer == "normalized" else (original, normalized)
        )
        return first if first is not None else second

    def _emit(self, rel: list[Rel] | None, offset_ms: float) -> tuple[CharTiming, ...]:
        if rel is None:
            self.frames_without_timings += 1
            return ()
        out: list[CharTiming] = []
        for ch, start, end in rel:
            if self._at_start:
                if not ch.strip():
                    continue  # leading whitespace of the utterance only
                self._at_start = False
            out.append(CharTiming(char=ch, start_ms=offset_ms + start, end_ms=offset_ms + end))
        return tuple(out)

    def ws_frame(self, frame: Mapping[str, Any], chunk_pts_ms: float) -> tuple[CharTiming, ...]:
        """Characters of a WebSocket audio frame whose audio starts at ``chunk_pts_ms``."""
        rel = self._pick(
            parse_ws_alignment(frame.get("normalizedAlignment")),
            parse_ws_alignment(frame.get("alignment")),
        )
        return self._emit(rel, chunk_pts_ms)

    def http_line(self, line: Mapping[str, Any], offset_ms: float = 0.0) -> tuple[CharTiming, ...]:
        """Characters of one HTTP NDJSON line (times continuous within a response; ``offset_ms``
        places the response on the utterance when streamed text takes several requests)."""
        rel = self._pick(
            parse_http_alignment(line.get("normalized_alignment")),
            parse_http_alignment(line.get("alignment")),
        )
        return self._emit(rel, offset_ms)
