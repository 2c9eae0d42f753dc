"""``inbedder train``: fine-tune a model to answer questions about texts tersely."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from inbedder import models
from inbedder.cli.common import ProgressOption, on_terminal
from inbedder.errors import InputError


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
    family: Annotated[str, typer.Option(help="auto (from the model's config), causal, masked or seq2seq.")] = "auto",
    lora: Annotated[bool, typer.Option("--lora/--full", help="Train LoRA adapters, or every weight.")] = True,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    target_module: Annotated[
        list[str] | None,
        typer.Option(help="LoRA on linear layers with this name (repeatable; default: all in the trained layers)."),
    ] = None,
    train_layers: Annotated[
        int | None, typer.Option(help="Train only the top N layers (the backward pass stops there).")
    ] = None,
    epochs: float = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    batch_size: int = 8,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 2e-4 with LoRA, 2e-5 full).")] = None,
    warmup_steps: int | None = None,
    warmup_ratio: Annotated[float | None, typer.Option(help="Warm-up share of the steps (default 0.03).")] = None,
    weight_decay: float = 0.0,
    max_grad_norm: Annotated[float | None, typer.Option(help="Clip gradients to this norm (default 1.0).")] = 1.0,
    max_length: Annotated[
        str,
        typer.Option(
            help="Longest prompt + answer in tokens; only the context is cut. 'auto': the 98th percentile of the data."
        ),
    ] = "512",
    group_by_length: Annotated[
        bool, typer.Option(help="Batch records of similar length together (less padding, faster steps).")
    ] = True,
    pad_multiple: Annotated[
        int, typer.Option(help="Pad each batch to a multiple of N tokens (few shapes: a small CPU kernel cache).")
    ] = 1,
    max_answer_tokens: int = 32,
    answer_prefix: Annotated[str, typer.Option(help="Put between the prompt and the answer.")] = " ",
    template: Annotated[str, typer.Option(help="'qa' or 'chat': the prompt InBedder will use.")] = "qa",
    limit: Annotated[int | None, typer.Option(help="Train on a seeded random subset of N records.")] = None,
    eval_size: Annotated[int | None, typer.Option(help="Held-out records (default: --eval-fraction).")] = None,
    eval_fraction: float = 0.02,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: never).")] = 200,
    keep_checkpoints: Annotated[int, typer.Option(help="Keep the newest N checkpoints.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    merge: Annotated[bool, typer.Option(help="Save the base model with the adapter merged in.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Write into an --out that holds other files (never into an earlier run).")
    ] = False,
    seed: int = 0,
    context_column: str = "context",
    question_column: str = "question",
    answer_column: str = "answer",
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    device: str = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="Forward-pass precision: auto (bfloat16 autocast on a CPU with AMX or AVX-512 BF16 and on a "
            "bf16 GPU, else float32), bfloat16 or float32; weights and optimizer state stay float32."
        ),
    ] = "auto",
    progress: ProgressOption = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from the hub (off unless asked).")] = False,
) -> None:
    """Fine-tune a model to answer questions about texts tersely; InBedder(OUT) then loads it."""
    from inbedder.training import train

    # what the run decided (device, length, resume point) and, without a bar, a line every few steps
    logging.getLogger("inbedder.training").setLevel(logging.INFO)
    options = {k: v for k, v in locals().items() if k not in ("data", "out", "base", "train", "target_module")}
    options["max_length"] = tokens_or_auto(max_length, "--max-length")
    options["progress"] = on_terminal(progress)
    result = train(base, data[0] if len(data) == 1 else data, out, target_modules=target_module or None, **options)
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
