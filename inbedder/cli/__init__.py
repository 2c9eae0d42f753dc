"""The ``inbedder`` command: a thin layer over the Python API, one module per command.

Each command module imports only typer and light inbedder modules at the top; the heavy
ones (torch, transformers, scikit-learn, pandas) are imported inside the command that runs,
once its inputs are known to be good. A new command is a module here and one line below.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from inbedder.cli import cache, cluster, encode, evaluate, models, serve, train
from inbedder.errors import InputError, Interrupted

app = typer.Typer(
    help="Instruction-following text embeddings: the language model's hidden state at the answer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(shown: bool) -> None:
    if shown:
        from inbedder._version import __version__

        typer.echo(f"inbedder {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Instruction-following text embeddings: the language model's hidden state at the answer."""


app.command()(encode.encode)
app.command("eval")(evaluate.evaluate)
app.command()(cluster.cluster)
app.command("train")(train.train_model)
app.command("serve")(serve.serve)
app.command("models")(models.list_models)
app.add_typer(cache.app, name="cache")


BUG_HINT = (
    "this looks like a bug in inbedder rather than a problem with the input; run again with INBEDDER_DEBUG=1 "
    "for the traceback, and please report it"
)


def main() -> None:
    """Entry point: one clear line on stderr for user errors (INBEDDER_DEBUG=1 shows the traceback).

    The library raises ``InputError`` for what the user can fix (files, columns, options) and the
    loaders ``ImportError`` or ``OSError`` for what is missing; any other ``ValueError`` or
    ``TypeError`` is a bug, and says so.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not sys.stderr.isatty():  # the libraries' own bars (loading weights, a GGUF) stay out of log files
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # a default only: inbedder's bars follow --progress
    try:
        app()
    except (InputError, ImportError, OSError) as err:
        if os.environ.get("INBEDDER_DEBUG"):
            raise
        message = err.render(command_line=True) if isinstance(err, InputError) else str(err)
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except (ValueError, TypeError) as err:
        if os.environ.get("INBEDDER_DEBUG"):
            raise
        typer.echo(f"error: {type(err).__name__}: {err}\n{BUG_HINT}", err=True)
        sys.exit(1)
    except Interrupted as interrupted:
        typer.echo(str(interrupted), err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
