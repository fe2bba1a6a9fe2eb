"""The ``lipcore`` command line: thin layers over the library.

Each sub-command lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

app = typer.Typer(
    name="lipcore",
    help="lipcore: one still photo → a live, photo-real 2D talking avatar.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = (
    "lipcore.cli.plugins_cmd",  # plugins, schema
    "lipcore.cli.visemes",  # visemes, voices
    "lipcore.cli.avatar",  # avatarize
    "lipcore.cli.say",  # say, demo
    "lipcore.cli.eval_cmd",  # eval sync
    "lipcore.cli.serve",  # serve
    "lipcore.cli.models_cmd",  # models fetch/where
)


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LIPCORE_LOG_LEVEL", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    app()
