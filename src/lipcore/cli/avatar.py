"""``lipcore avatarize PHOTO --out DIR``: one photo → an avatar directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lipcore.cli._common import console, user_errors

_STAGE_LABELS = {
    "load": "loading the photo",
    "face": "analysing the face",
    "mouth": "building the mouth model",
    "assets": "rendering the back end's assets",
    "idle": "rendering the idle loop",
    "preview": "drawing preview.png",
    "write": "writing the avatar",
}


@user_errors
def avatarize(
    photo: Path = typer.Argument(..., help="The hero photo (JPEG, PNG, WebP; one frontal face)."),
    out: Path = typer.Option(..., "--out", "-o", help="Avatar directory to create (or replace)."),
    backend: str = typer.Option(
        "sprites", "--backend", "-b", help="Lipsync back end: sprites | mesh (or any plugin)."
    ),
    seconds: float = typer.Option(
        4.0, "--seconds", min=3.0, max=5.0, help="Idle loop length (3-5 s)."
    ),
    fps: float = typer.Option(
        25.0, "--fps", min=20.0, max=30.0, help="Idle loop frame rate (20-30)."
    ),
    face_model: Path | None = typer.Option(
        None,
        "--face-model",
        help="MediaPipe face_landmarker.task (default: $LIPCORE_FACE_MODEL, the cache, or a "
        "one-time download).",
    ),
    refuse_multiple: bool = typer.Option(
        False,
        "--refuse-multiple",
        help="Fail if the photo shows several faces (default: use the largest).",
    ),
    avatar_id: str | None = typer.Option(None, "--id", help="Avatar id (default: from the photo)."),
    name: str | None = typer.Option(
        None, "--name", help="Display name in avatar lists (default: the photo's file name)."
    ),
) -> None:
    """Turn one photo into an avatar: idle loop, mouth model, back-end assets, preview."""
    from lipcore.avatar.store import build_avatar

    with Progress(
        TextColumn("[bold]{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("starting", total=1.0)

        def progress(stage: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=_STAGE_LABELS.get(stage, stage))

        avatar = build_avatar(
            photo,
            out,
            backend=backend,
            seconds=seconds,
            fps=fps,
            face_model=face_model,
            avatar_id=avatar_id,
            progress=progress,
            multiple="refuse" if refuse_multiple else "largest",
            name=name or photo.stem,
        )
        bar.update(task, completed=1.0, description="done")
    m = avatar.manifest
    times = avatar.build_seconds or {}
    console.print(
        f"[bold green]avatar[/] {avatar.id} ({avatar.lipsync_type}) in "
        f"{sum(times.values()):.1f} s → {avatar.directory}"
    )
    console.print(f"  manifest  {avatar.asset('manifest.json')}")
    console.print(
        f"  idle loop {avatar.asset(m.idle.file)}  ({m.idle.frames} frames @ {m.idle.fps:g} fps)"
    )
    preview = avatar.extra.get("preview")
    if isinstance(preview, str):
        console.print(f"  preview   {avatar.asset(preview)}")
    assets = ", ".join(f"{k}={v}" for k, v in m.lipsync.items() if k != "type")
    console.print(f"  assets    {assets or '(none)'}   ROI {m.roi.x},{m.roi.y} {m.roi.w}x{m.roi.h}")
    console.print(
        "  stages    " + "  ".join(f"{k} {v:.2f}s" for k, v in times.items()), highlight=False
    )
    # The directory on stdout, alone: scripts can capture it.
    print(avatar.directory)


def register(app: typer.Typer) -> None:
    app.command("avatarize")(avatarize)
