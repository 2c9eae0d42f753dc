"""``inbedder models``: the registered model names."""

from __future__ import annotations

import typer

from inbedder import models


def list_models() -> None:
    """List the registered model names and whether each can load offline."""
    rows = [("name", "aliases", "offline", "description")]
    for spec in models.REGISTRY.values():
        offline = spec.source_note()
        rows.append((spec.name, ", ".join(spec.aliases), offline, spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
