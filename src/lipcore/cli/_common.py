"""Helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from lipcore.errors import LipcoreError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn lipcore errors into a one-line message and exit code 2 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LipcoreError as exc:
            # The message is text, not markup: an install hint like
            # pip install 'lipcore-wav2lip[fp16]' must keep its [fp16].
            console.print(f"[bold red]error[/]: {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
