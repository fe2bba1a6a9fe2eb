"""``lipcore eval sync``: measured lip-sync quality of a rendered video."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import Progress

from lipcore.cli._common import console, user_errors

eval_app = typer.Typer(help="Measure the quality of rendered output.", no_args_is_help=True)


@eval_app.command("sync")
@user_errors
def sync(
    video: Path = typer.Argument(..., exists=True, dir_okay=False, help="Rendered talking video."),
    timings: Path | None = typer.Option(
        None, "--timings", help="Phoneme timings (default: VIDEO with .timings.json)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write aperture vs. expected as PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Re-detect the mouth on every frame and compare it with the phoneme timeline."""
    import lipcore
    from lipcore.evaluation import (
        evaluate_sync,
        load_timings,
        measure_apertures,
        phonemes_from_timings,
        plot_sync,
    )
    from lipcore.media import probe

    tpath = timings or video.with_suffix(".timings.json")
    data = load_timings(tpath)
    info = probe(video)
    language = str(data.get("language", "en-us"))
    track = (
        lipcore.Engine()
        .mapper()
        .track_from_phonemes(phonemes_from_timings(data), language=language)
    )
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("re-detecting the mouth", total=info.frames)
        apertures = measure_apertures(video, progress=lambda n: bar.update(task, completed=n))
    report, times, expected = evaluate_sync(
        apertures, track, fps=info.fps, audio_offset_ms=float(data.get("audio_offset_ms", 0.0))
    )
    if plot is not None:
        plot_sync(plot, times, apertures, expected, track, report, title=video.name)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    closure = "n/a" if report.bilabials == 0 else f"{report.closure_rate:.0%}"
    print(f"offset            {report.offset_ms:+.1f} ms  (positive = mouth late)")
    print(f"bilabial closure  {closure}  ({report.bilabials_closed}/{report.bilabials})")
    print(f"open-vowel aperture {report.open_vowel_aperture:.3f}   rest {report.rest_aperture:.3f}")
    print(
        f"frames            {report.frames_with_face}/{report.frames} with a face"
        f" @ {report.fps:g} fps"
    )
    if plot is not None:
        print(f"plot              {plot}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
