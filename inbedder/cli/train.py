"""``inbedder train``: fine-tune a model to answer questions about texts tersely."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.cli.common import on_terminal
from inbedder.cli.declared import takes_fields
from inbedder.errors import InputError
from inbedder.training_config import TrainingConfig


@takes_fields(TrainingConfig, "config", panel="Training")
def train_model(
    data: Annotated[
        list[str],
        typer.Option(
            help="QA records: CSV, TSV, JSONL or Parquet file, or a hub dataset id (the paper's, "
            "KomeijiForce/Inbedder-Pretrain-Data, has its columns as input, instruction, output). Repeat it for "
            "a mix, each as PATH:WEIGHT (e.g. --data qa-aspects.jsonl:0.7 --data qa-short-answers.jsonl:0.3).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory: the adapter (or model), checkpoints, training.json.")
    ],
    base: Annotated[
        str, typer.Option(help="Model to fine-tune: registered name, directory, .gguf file or hub id.")
    ] = models.BASE_MODEL,
    config: dict[str, Any] | None = None,
) -> None:
    """Fine-tune a model to answer questions about texts tersely; InBedder(OUT) then loads it."""
    from inbedder.training import train

    # what the run decided (device, length, resume point) and, without a bar, a line every few steps
    logging.getLogger("inbedder.training").setLevel(logging.INFO)
    options = dict(config or {})
    options["max_length"] = tokens_or_auto(options["max_length"], "--max-length")
    options["progress"] = on_terminal(options["progress"])
    options["target_modules"] = options["target_modules"] or None
    result = train(base, data[0] if len(data) == 1 else data, out, **options)
    last = result.train_losses[-1] if result.train_losses else float("nan")
    held_out = "none" if result.eval_loss is None else f"{result.eval_loss:.4f}"
    typer.echo(
        f"{result.steps} steps ({result.family}) in {result.seconds:.0f}s on {result.train_records} records: "
        f"last train loss {last:.4f}, held-out loss {held_out}",
    )
    typer.echo(f"wrote {out} (load it with InBedder({str(out)!r}))", err=True)


def tokens_or_auto(value: str, option: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{option} must be a number of tokens or 'auto', got {value!r}") from None
