"""``lipcore visemes`` (speak a text offline and show its viseme timeline) and
``lipcore voices`` (list a TTS source's voices)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from lipcore.cli._common import user_errors
from lipcore.engine import Engine, Utterance
from lipcore.errors import InputError
from lipcore.interfaces import VisemeFrame, VisemeSegment
from lipcore.speech.visemes import VISEME_CLASSES


def _options(rate: int | None, pitch: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("rate", rate), ("pitch", pitch)) if v is not None}


async def _speak(
    text: str,
    *,
    voice: str,
    tts: str | None,
    fps: float,
    lead_ms: float | None,
    options: dict[str, Any],
) -> tuple[Utterance, list[VisemeSegment]]:
    engine = Engine()
    try:
        utt = await engine.utterance(
            text, voice=voice, tts=tts, fps=fps, lead_ms=lead_ms, options=options
        )
        async for _ in utt:
            pass
        mapper = utt.mapper
        if utt.phonemes:
            track = mapper.track_from_phonemes(utt.phonemes, language=utt.language)
        else:
            track = mapper.track_from_characters(utt.chars, language=utt.language)
        return utt, track
    finally:
        await engine.aclose()


def _top(weights: dict[str, float], n: int = 3) -> str:
    items = sorted(weights.items(), key=lambda kv: -kv[1])[:n]
    return "  ".join(f"{k} {v:.2f}" for k, v in items if v >= 0.01)


def _plot(
    path: Path, frames: list[VisemeFrame], track: list[VisemeSegment], title: str, lead: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in VISEME_CLASSES if c != "Rest"]
    t = [f.pts_ms for f in frames]
    fig, ax = plt.subplots(figsize=(max(8.0, len(frames) / 30.0), 4.5), dpi=100)
    cmap = plt.get_cmap("tab20")
    for i, cls in enumerate(classes):
        ys = [f.weights.get(cls, 0.0) for f in frames]
        if max(ys, default=0.0) >= 0.05:
            ax.plot(t, ys, label=cls, color=cmap(i), linewidth=1.6)
    rest = [1.0 - sum(f.weights.values()) for f in frames]
    ax.plot(t, rest, label="Rest", color="0.6", linewidth=1.0, linestyle="--")
    for seg in track:
        ax.axvspan(seg.start_ms, seg.end_ms, color="0.93" if seg.viseme != "MBP" else "#fde2e2")
        ax.axvline(seg.start_ms, color="0.8", linewidth=0.5)
        ax.text(
            (seg.start_ms + seg.end_ms) / 2,
            1.04,
            seg.phoneme,
            ha="center",
            va="bottom",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
        )
    ax.set_ylim(0, 1.0)
    ax.set_xlabel(f"ms (audio timeline; frames shown {lead:g} ms early = the mouth's lead)")
    ax.set_ylabel("weight")
    ax.set_title(title, pad=18)
    ax.legend(loc="upper right", ncol=6, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _audio_visemes(
    audio: Path,
    *,
    text: str | None,
    language: str,
    fps: float,
    lead_ms: float | None,
    estimator: str | None,
    as_json: bool,
) -> None:
    """``visemes --audio``: frames estimated from a recording. Audio only, the file is
    decoded and estimated in half-second pieces and each frame printed when final, so an
    hours-long file runs in bounded memory (with a progress bar on stderr). With the text, the
    whole file is read (up to 30 minutes) and the text aligned to it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from lipcore.speech.audio_input import LeadShifter, iter_audio, probe_audio, read_audio

    info = probe_audio(audio)
    engine = Engine()
    est = engine.audio_viseme_estimator(estimator)
    shifter = LeadShifter(engine.settings.lead_ms if lead_ms is None else lead_ms)
    err = Console(stderr=True)
    count = 0
    rows: list[VisemeFrame] = []

    def emit(frames: list[VisemeFrame]) -> None:
        nonlocal count
        for f in frames:
            if as_json:
                print(("[\n" if count == 0 else ",\n") + json.dumps(f.to_event()), end="")
            else:
                rows.append(f)
            count += 1

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    with progress:
        task = progress.add_task(f"visemes of {audio.name}", total=info.duration_s or None)
        if text:
            pcm, rate = read_audio(audio)
            progress.update(task, completed=len(pcm) / rate)
            frames = est.estimate(
                pcm.tobytes(), sample_rate=rate, fps=fps, language=language, text=text
            )
            emit(shifter.push(frames) + shifter.finish())
        else:
            stream = None
            done = 0.0
            for chunk, rate in iter_audio(audio):
                if stream is None:
                    stream = est.stream(sample_rate=rate, fps=fps, language=language)
                emit(shifter.push(stream.push(chunk.tobytes())))
                done += len(chunk) / rate
                progress.update(task, completed=done)
            if stream is not None:
                emit(shifter.push(stream.finish()) + shifter.finish())
    if as_json:
        print("[]" if count == 0 else "\n]")
        return
    table = Table(
        title=f"{count} frames at {fps:g} fps from {audio.name} ({est.name}"
        f"{', text aligned' if text else ', audio only'})"
    )
    table.add_column("pts ms", justify="right")
    table.add_column("dominant")
    table.add_column("weights")
    for f in rows:
        dominant = max(f.weights, key=lambda k: f.weights[k]) if f.weights else "Rest"
        if f.weights and sum(f.weights.values()) < 0.5:
            dominant = "Rest"
        table.add_row(f"{f.pts_ms:.1f}", dominant, _top(dict(f.weights)))
    Console().print(table)


@user_errors
def visemes(
    text: str | None = typer.Argument(
        None, help="What to say (with --audio: the words of the recording, optional)."
    ),
    lang: str = typer.Option("de", "--lang", "-l", help="Language (picks the voice)."),
    voice: str | None = typer.Option(None, "--voice", help="Voice id (default: --lang)."),
    tts: str | None = typer.Option(None, "--tts", help="TTS source (default: espeak)."),
    fps: float = typer.Option(60.0, "--fps", help="Frames per second."),
    rate: int | None = typer.Option(None, "--rate", help="Speaking rate, words per minute."),
    pitch: int | None = typer.Option(None, "--pitch", help="Base pitch 0-100 (50 = normal)."),
    lead_ms: float | None = typer.Option(
        None, "--lead-ms", help="How far the mouth leads the audio (default 20 ms)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    track_only: bool = typer.Option(
        False, "--track", help="Print the track before co-articulation instead of frames."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG of weights over time."),
    audio: Path | None = typer.Option(
        None,
        "--audio",
        help="Estimate the frames from this recording (WAV, MP3, OGG, M4A…) instead of "
        "speaking TEXT; TEXT, if given, is aligned to it.",
    ),
    estimator: str | None = typer.Option(
        None, "--estimator", help="With --audio: the audio viseme estimator (default: model)."
    ),
) -> None:
    """Speak TEXT offline and print its viseme frames (or its phoneme track); with --audio,
    estimate them from a recording."""
    if audio is not None:
        if plot is not None or track_only or rate is not None or pitch is not None:
            raise InputError("--plot, --track, --rate and --pitch go with TEXT, not --audio")
        _audio_visemes(
            audio,
            text=text,
            language=voice or lang,
            fps=fps,
            lead_ms=lead_ms,
            estimator=estimator,
            as_json=as_json,
        )
        return
    if text is None:
        raise InputError("give the TEXT to speak, or --audio FILE")
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: the plot is a PNG; give a file name ending in .png")
    utt, track = asyncio.run(
        _speak(
            text,
            voice=voice or lang,
            tts=tts,
            fps=fps,
            lead_ms=lead_ms,
            options=_options(rate, pitch),
        )
    )
    frames = list(utt.frames)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        _plot(plot, frames, track, f"{text[:60]} ({utt.voice}, {fps:g} fps)", utt.lead_ms)
        Console(stderr=True).print(f"wrote {plot}")
    if track_only:
        rows = [
            {
                "phoneme": s.phoneme,
                "start_ms": round(s.start_ms, 1),
                "end_ms": round(s.end_ms, 1),
                "viseme": s.viseme,
            }
            for s in track
        ]
        if as_json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
            return
        table = Table(title=f"track: {utt.voice}, {utt.audio_ms:.0f} ms of audio")
        for col in ("phoneme", "start ms", "end ms", "viseme"):
            table.add_column(col, justify="right" if "ms" in col else "left")
        for r in rows:
            table.add_row(
                str(r["phoneme"]), f"{r['start_ms']:.0f}", f"{r['end_ms']:.0f}", str(r["viseme"])
            )
        Console().print(table)
        return
    if as_json:
        print("[")
        print(",\n".join(json.dumps(f.to_event()) for f in frames))
        print("]")
        return
    table = Table(
        title=(
            f"{len(frames)} frames at {fps:g} fps, {utt.audio_ms:.0f} ms of audio, "
            f"voice {utt.voice}, mouth lead {utt.lead_ms:g} ms"
        )
    )
    table.add_column("pts ms", justify="right")
    table.add_column("dominant")
    table.add_column("weights")
    for f in frames:
        dominant = max(f.weights, key=lambda k: f.weights[k]) if f.weights else "Rest"
        if f.weights and sum(f.weights.values()) < 0.5:
            dominant = "Rest"
        table.add_row(f"{f.pts_ms:.1f}", dominant, _top(dict(f.weights)))
    Console().print(table)


@user_errors
def voices(
    tts: str | None = typer.Option(None, "--tts", help="TTS source (default: espeak)."),
    lang: str | None = typer.Option(None, "--lang", "-l", help="Only voices of this language."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the voices of a TTS source."""

    async def run() -> list[Any]:
        engine = Engine()
        try:
            return list(await engine.voices(tts))
        finally:
            await engine.aclose()

    found = asyncio.run(run())
    if lang:
        prefix = lang.lower()
        found = [
            v for v in found if v.language.lower().startswith(prefix) or v.id.startswith(prefix)
        ]
        if not found:
            raise InputError(f"no voice for language {lang!r}; run `lipcore voices` to see all")
    if as_json:
        rows = [
            {"id": v.id, "name": v.name, "language": v.language, "gender": v.gender} for v in found
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    table = Table(title=f"{len(found)} voices")
    for col in ("id", "name", "language", "gender"):
        table.add_column(col)
    for v in found:
        table.add_row(v.id, v.name, v.language, v.gender or "")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("visemes")(visemes)
    app.command("voices")(voices)
