"""``inbedder cache info`` and ``inbedder cache clear``: the persistent store of embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The persistent cache of embeddings and answers.", no_args_is_help=True)
CachePathOption = Annotated[
    Path | None, typer.Option("--path", help="The store: a SQLite file or its directory (default: $INBEDDER_CACHE).")
]


@app.command("info")
def cache_info(path: CachePathOption = None) -> None:
    """Show how many embeddings the cache holds, its size on disk, and entries per model."""
    from inbedder.cache import open_cache

    typer.echo(open_cache(path or True).info().summary())


@app.command("clear")
def cache_clear(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only this model's entries (name, alias, path or hub id).")
    ] = None,
    path: CachePathOption = None,
) -> None:
    """Remove the cached embeddings, all of them or one model's."""
    from inbedder.cache import open_cache

    store = open_cache(path or True, check=False)
    if model is None and store.damaged:
        store.clear()
        typer.echo(f"removed the damaged cache {store.path}")
        return
    removed = store.check().clear(model)
    typer.echo(f"removed {removed} entries{f' of {model}' if model else ''} from {store.path}")
