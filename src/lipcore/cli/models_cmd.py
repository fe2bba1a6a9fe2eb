"""``lipcore models``: where the face model comes from, and getting it before first use."""

from __future__ import annotations

from pathlib import Path

import typer

from lipcore.avatar.modelfetch import (
    FACE_MODEL_SHA256,
    face_model_url,
    install_face_model,
    resolve_face_model,
)
from lipcore.cli._common import user_errors
from lipcore.errors import LipcoreError

models_app = typer.Typer(help="The models lipcore uses (MediaPipe's face landmarker).")


@models_app.command("fetch")
@user_errors
def fetch(
    source: Path | None = typer.Option(
        None,
        "--from",
        help="Install this local copy (checked against the pinned SHA-256) instead of "
        "downloading.",
    ),
) -> None:
    """Make the face landmarker available: from a local copy, the cache, or a download."""

    print(install_face_model(source) if source is not None else resolve_face_model())


@models_app.command("where")
def where() -> None:
    """Print the model's URL and pinned SHA-256, and the file lipcore would use now."""
    print(f"url     {face_model_url()}")
    print(f"sha256  {FACE_MODEL_SHA256}")
    try:
        print(f"file    {resolve_face_model()}")
    except LipcoreError as exc:  # a report, not a failure
        print(f"file    (not available: {exc})")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
