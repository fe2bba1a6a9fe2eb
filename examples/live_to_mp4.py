"""Live rendering from Python: speak a sentence through lipcore's live renderer and write what
it outputs (video frames + the audio paired with them) to an MP4 that ``lipcore eval sync``
can measure.

    python examples/live_to_mp4.py AVATAR_DIR out.mp4 --text "Hello world" --voice en-us \
        --timings words        # phonemes | words | none
    lipcore eval sync out.mp4  # reads out.timings.json

The speech comes from lipcore's own offline TTS (espeak-ng), chunk by chunk, the way a live
TTS delivers it; ``--timings`` chooses what the renderer gets along with the audio: the
phonemes with their times, only the words with start and end (as LiveKit TTS plugins give
them), or nothing (the renderer falls back to its audio-driven estimate). The renderer's
output is taken frame by frame as it becomes ready, with 0.5 s of the idle loop before and
after; the timings file beside the video holds the *true* phonemes and where the speech starts
in the video, which is what the sync measurement compares the mouth with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

from lipcore.engine import Engine
from lipcore.live import LiveFrame, LiveRenderer, words_from_phonemes


async def render_live_mp4(
    avatar: Any,
    text: str,
    out: str | Path,
    *,
    voice: str = "en-us",
    timings: str = "phonemes",
    engine: Engine | None = None,
    idle_ms: float = 500.0,
    sample_rate: int = 24000,
    estimator: Any = None,
) -> dict[str, Any]:
    """Speak ``text`` with ``avatar`` through a :class:`LiveRenderer`; write ``out`` (MP4) and
    ``out`` with ``.timings.json``. Returns the timings data. ``estimator``: visemes for
    ``timings="none"`` (default: the engine's audio-only estimator)."""
    from lipcore.media import VideoWriter

    if timings not in ("phonemes", "words", "none"):
        raise ValueError(f"timings must be phonemes, words or none; got {timings!r}")
    engine = engine or Engine()
    live = LiveRenderer(avatar, engine=engine, sample_rate=sample_rate, video_format="i420",
                        estimator=estimator)
    utt = await engine.utterance(text, voice=voice)
    frames: list[LiveFrame] = []

    def take(frame: LiveFrame) -> None:
        frames.append(LiveFrame(frame.index, frame.video.copy(), frame.audio, frame.segment_end))

    for _ in range(round(idle_ms * live.fps / 1000.0)):
        take(live.pull())
    speech_start = len(frames)
    # The TTS's chunks as they come. For word timings, each word rides on the chunk where it
    # starts, with its start and end, as LiveKit TTS plugins attach words to audio frames.
    steps = [step async for step in utt]
    phonemes = [p for step in steps for p in step.chunk.phonemes]
    words = words_from_phonemes(text, phonemes, utt.language) if timings == "words" else []
    for step in steps:
        chunk = step.chunk
        live.push_audio(
            chunk.audio,
            sample_rate=chunk.sample_rate,
            phonemes=chunk.phonemes if timings == "phonemes" else (),
            words=[
                w
                for w in words
                if chunk.pts_ms <= w.start_ms < chunk.end_ms
                or (chunk.final and w.start_ms >= chunk.end_ms)
            ],
        )
        while live.ready():
            take(live.pull())
    live.end_segment()
    while live.speaking:
        take(live.pull())
    for _ in range(round(idle_ms * live.fps / 1000.0)):
        take(live.pull())

    audio = np.concatenate(
        [
            f.audio if f.audio is not None else np.zeros(live.samples_for(f.index), np.int16)
            for f in frames
        ]
    )
    out = Path(out)
    with VideoWriter(
        out,
        live.fps,
        audio=audio,
        sample_rate=sample_rate,
        crf=18,
        x264_params="no-mbtree=1:bframes=0:aq-mode=0",
    ) as writer:
        for f in frames:
            writer.write_i420(f.video)
    data = {
        "version": 1,
        "text": text,
        "language": utt.language,
        "voice": utt.voice,
        "fps": live.fps,
        "timings_given": timings,
        # The speech starts lead_ms after the first frame of its utterance.
        "audio_offset_ms": speech_start * 1000.0 / live.fps + live.lead_ms,
        "lead_ms": live.lead_ms,
        "sample_rate": sample_rate,
        "video": {"file": out.name, "frames": len(frames)},
        "phonemes": [
            {"phoneme": p.phoneme, "start_ms": p.start_ms, "end_ms": p.end_ms, "word": p.word}
            for p in phonemes
        ],
    }
    out.with_suffix(".timings.json").write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("avatar", help="avatar directory")
    ap.add_argument("out", help="output .mp4")
    ap.add_argument("--text", default="Maybe the people on the boat bring more apples.")
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--timings", default="phonemes", choices=["phonemes", "words", "none"])
    args = ap.parse_args()
    data = asyncio.run(
        render_live_mp4(args.avatar, args.text, args.out, voice=args.voice, timings=args.timings)
    )
    print(f"wrote {args.out}: {data['video']['frames']} frames; now: lipcore eval sync {args.out}")


if __name__ == "__main__":
    main()
