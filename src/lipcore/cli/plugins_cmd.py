"""``lipcore plugins`` and ``lipcore schema``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lipcore.models import export_schemas
from lipcore.plugins import PluginRegistry, get_plugin_manager


def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List installed plugins with versions and what each registers."""
    rows = PluginRegistry(get_plugin_manager()).describe()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="lipcore plugins")
    for col in ("plugin", "distribution", "version", "registers", "status"):
        table.add_column(col)
    for r in rows:
        regs = "; ".join(f"{fam}: {', '.join(names)}" for fam, names in r["registers"].items())
        dist = "(built-in)" if r["builtin"] else (r["distribution"] or "")
        # Cells are markup to rich: a broken plugin's error text is escaped, not interpreted.
        table.add_row(*(escape(str(c)) for c in (r["name"], dist, r["version"] or "", regs,
                                                 r["status"])))
    Console().print(table)


def schema(
    out: Path = typer.Option(Path("docs/schema"), "--out", help="Directory for the schemas."),
) -> None:
    """Write the JSON Schemas of every contract."""
    for path in export_schemas(out):
        print(path)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("schema")(schema)
