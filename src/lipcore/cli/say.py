"""``lipcore say`` (offline talking video) and ``lipcore demo`` (the whole path on a sample)."""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lipcore.cli._common import console, user_errors

if TYPE_CHECKING:
    from lipcore.render import TalkResult

#: The demo's sentences: (language tag for file names, voice, text).
DEMO_SENTENCES: tuple[tuple[str, str, str], ...] = (
    ("de", "de", "Hallo, ich bin dein Avatar. Schön, dass du mit mir sprichst!"),
    ("en", "en-us", "Hello, I am your avatar. Maybe we can talk for a moment?"),
)
DEMO_BACKENDS: tuple[str, ...] = ("sprites", "mesh")


def _advance(bar: Progress, task: TaskID, _stage: str, fraction: float) -> None:
    """A progress callback's step: the task's bar to ``fraction``."""
    bar.update(task, completed=fraction)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<30}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@user_errors
def say(
    text: str | None = typer.Argument(None, help="What the avatar says (or give --audio)."),
    avatar: Path = typer.Option(
        ..., "--avatar", "-a", help="Avatar directory (from `lipcore avatarize`)."
    ),
    out: Path = typer.Option(Path("talk.mp4"), "--out", "-o", help="The video to write (.mp4)."),
    tts: str = typer.Option("espeak", "--tts", help="TTS source (a plugin name)."),
    voice: str = typer.Option("de", "--voice", "-v", help="Voice id or language code."),
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help="Render with this lipsync back end instead of the avatar's (its assets must exist).",
    ),
    lead_in: float = typer.Option(0.5, "--lead-in", min=0.0, help="Idle seconds before speech."),
    tail: float = typer.Option(0.5, "--tail", min=0.0, help="Idle seconds after speech."),
    stop_at: float | None = typer.Option(
        None, "--stop-at", min=0.0, help="Barge-in: cut the speech at this many seconds."
    ),
    audio: Path | None = typer.Option(
        None,
        "--audio",
        help="Speak this recording instead of TEXT (WAV, MP3, OGG, M4A…): the mouth is "
        "estimated from the audio, which the video keeps.",
    ),
    known_text: str | None = typer.Option(
        None, "--text", help="With --audio: the words of the recording, aligned to it."
    ),
    lang: str | None = typer.Option(
        None, "--lang", "-l", help="With --audio --text: the text's language (default: --voice)."
    ),
    estimator: str | None = typer.Option(
        None, "--estimator", help="With --audio: the audio viseme estimator (default: model)."
    ),
) -> None:
    """Speak TEXT (or the recording --audio) with an avatar into an H.264 + AAC video, plus
    VIDEO.timings.json."""
    from lipcore.avatar.store import load_avatar
    from lipcore.errors import InputError
    from lipcore.render import render_talk, render_talk_audio

    if audio is not None:
        if text is not None:
            raise InputError(
                "give either TEXT or --audio, not both (the words of a recording go in --text)"
            )
        if stop_at is not None:
            raise InputError("--stop-at works with TEXT only; cut the recording instead")
        av = load_avatar(avatar)
        with _progress() as bar:
            task = bar.add_task(f"rendering ({backend or av.lipsync_type})", total=1.0)
            result = render_talk_audio(
                av,
                audio,
                out,
                text=known_text,
                language=lang or voice,
                estimator=estimator,
                backend=backend,
                lead_in_ms=lead_in * 1000.0,
                tail_ms=tail * 1000.0,
                progress=lambda f: bar.update(task, completed=f),
            )
            bar.update(task, completed=1.0)
        _report(result)
        return
    if text is None:
        raise InputError("say what? Give the TEXT to speak, or --audio FILE")
    if known_text is not None:
        raise InputError("--text goes with --audio (the words of the recording)")
    av = load_avatar(avatar)
    with _progress() as bar:
        task = bar.add_task(f"rendering ({backend or av.lipsync_type})", total=1.0)
        result = render_talk(
            av,
            text,
            out,
            voice=voice,
            tts=tts,
            backend=backend,
            lead_in_ms=lead_in * 1000.0,
            tail_ms=tail * 1000.0,
            stop_ms=None if stop_at is None else stop_at * 1000.0,
            progress=lambda f: bar.update(task, completed=f),
        )
        bar.update(task, completed=1.0)
    _report(result)


def _report(result: TalkResult) -> None:
    spent = sum(result.seconds.values())
    console.print(
        f"[bold green]video[/] {result.video}  {result.duration_s:.2f} s, {result.frames} frames, "
        f"{result.backend}; rendered in {spent:.1f} s "
        f"({result.duration_s / max(spent, 1e-9):.1f}x real time)",
        highlight=False,
    )
    console.print(f"[bold]timings[/] {result.timings}", highlight=False)


@user_errors
def demo(
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Directory for the results."),
    fps: float = typer.Option(25.0, "--fps", min=20.0, max=30.0, help="Idle loop frame rate."),
) -> None:
    """Avatarize grace_hopper.jpg with each back end and say a German and an English sentence.

    Writes the avatars, videos, timings and preview sheets into OUT and prints where they are."""
    import matplotlib.cbook

    from lipcore.avatar.store import build_avatar
    from lipcore.engine import Engine
    from lipcore.render import open_avatar_renderer, render_talk

    photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out.mkdir(parents=True, exist_ok=True)
    engine = Engine()
    rows: list[tuple[str, str, str, str]] = []
    with _progress() as bar:
        for backend in DEMO_BACKENDS:
            task = bar.add_task(f"avatarize ({backend})", total=1.0)
            t0 = time.perf_counter()
            avatar = build_avatar(
                photo,
                out / "avatars" / f"grace-{backend}",
                backend=backend,
                fps=fps,
                engine=engine,
                avatar_id=f"grace-{backend}",
                progress=partial(_advance, bar, task),
            )
            bar.update(task, completed=1.0)
            preview = out / f"preview-{backend}.png"
            shutil.copyfile(avatar.asset(str(avatar.extra.get("preview", "preview.png"))), preview)
            rows.append(
                (backend, "avatar", str(avatar.directory), f"{time.perf_counter() - t0:.1f} s")
            )
            rows.append((backend, "preview", str(preview), ""))
            renderer = open_avatar_renderer(avatar, engine=engine)
            for lang, voice, text in DEMO_SENTENCES:
                task = bar.add_task(f"say {lang} ({backend})", total=1.0)
                result = render_talk(
                    avatar,
                    text,
                    out / f"talk-{backend}-{lang}.mp4",
                    engine=engine,
                    voice=voice,
                    renderer=renderer,
                    progress=partial(_advance, bar, task, ""),
                )
                bar.update(task, completed=1.0)
                rows.append(
                    (backend, f"video {lang}", str(result.video), f"{result.duration_s:.1f} s")
                )
                rows.append((backend, f"timings {lang}", str(result.timings), ""))
    table = Table(title=f"lipcore demo → {out}/")
    for col in ("back end", "what", "where", ""):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"Play the videos in {out}/ (any browser or player). Measure the lip sync with "
        f"`lipcore eval sync {out}/talk-sprites-de.mp4`."
    )


def register(app: typer.Typer) -> None:
    app.command("say")(say)
    app.command("demo")(demo)
