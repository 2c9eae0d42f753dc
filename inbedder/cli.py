"""The ``inbedder`` command: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.errors import InputError, Interrupted
from inbedder.postprocess import POSTPROCESSING
from inbedder.readout import READOUTS

app = typer.Typer(
    help="Instruction-following text embeddings: the language model's hidden state at the answer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Registered name, directory, .gguf file or hub id.")]
ReadoutOption = Annotated[str | None, typer.Option(help=f"One of {', '.join(READOUTS)} (default: the model's).")]
LayerOption = Annotated[int | None, typer.Option(help="Layer to read: 0 = embeddings, -1 = last (default).")]
TemplateOption = Annotated[
    str | None, typer.Option(help="'qa' (default), 'chat', or a pattern with {input} and {instruction}.")
]
PostprocessOption = Annotated[
    str | None,
    typer.Option(help=f"Over the whole corpus: {', '.join(POSTPROCESSING)} (default: none)."),
]


@app.command()
def encode(
    input: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL, Parquet, or .txt with one text per line.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy (array) or .parquet (columns + embedding).")],
    instruction: Annotated[
        str | None, typer.Option("--instruction", "-i", help="One question asked of every text.")
    ] = None,
    instruction_column: Annotated[str | None, typer.Option(help="Column holding one instruction per text.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the texts (default: 'text' or the only column).")
    ] = None,
    model: ModelOption = models.DEFAULT_MODEL,
    readout: ReadoutOption = None,
    layer: LayerOption = None,
    template: TemplateOption = None,
    postprocess: PostprocessOption = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 16,
    max_length: Annotated[
        int | None,
        typer.Option(help="Longest prompt in tokens (default 512); the input is cut, never the instruction."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length for generating readouts.")] = 8,
    temperature: Annotated[float, typer.Option(help="0 decodes greedily; above 0 samples.")] = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    normalize: Annotated[bool, typer.Option(help="Scale each embedding to unit length.")] = False,
    return_generations: Annotated[
        bool, typer.Option(help="Also write the generated answers (parquet: 'answer' column).")
    ] = False,
    device: str = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    cache: Annotated[
        bool, typer.Option(help="Reuse embeddings stored by earlier runs ($INBEDDER_CACHE) and store new ones.")
    ] = False,
) -> None:
    """Embed every text of INPUT under an instruction and write the embeddings."""
    from inbedder import tables

    if instruction is not None and instruction_column is not None:
        raise InputError("give --instruction or --instruction-column, not both")
    out = tables.check_output(out, overwrite)
    kind = out.suffix.lower()
    answers_out = out.with_suffix(".answers.txt") if return_generations and kind == ".npy" else None
    if answers_out is not None and answers_out.exists() and not overwrite:
        raise InputError(f"{answers_out} exists; pass --overwrite to replace it")
    table = tables.read_table(input)
    texts = tables.column_texts(table, tables.pick_column(table, text_column, input), input)
    if instruction_column is not None:
        instruction = tables.column_texts(
            table, tables.pick_column(table, instruction_column, input, "instruction"), input
        )
    clashes = {"embedding", *(["answer"] if return_generations else [])} & set(map(str, table.columns))
    if clashes and kind == ".parquet":
        raise InputError(f"{input} already has column(s) {sorted(clashes)}, which the output would add")

    _check_readout(readout)
    if isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"--batch-size must be a positive number of texts, got {batch_size}")
    store = _checked_store(True) if cache else None

    from inbedder.embedder import InBedder  # heavy imports only once the inputs are known to be good
    from inbedder.options import EncodeOptions

    options = EncodeOptions(
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=normalize,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        return_generations=return_generations,
        cache=store if store is not None else False,
    )
    embedder = InBedder(
        model,
        device=device,
        **_given(template=template, readout=readout, layer=layer, postprocess=postprocess, max_length=max_length),
    )
    kept = (
        f"every finished batch is kept in the cache {store.path}; run the same command again to go on from there"
        if store is not None
        else f"nothing was written to {out}; with --cache an interrupted run keeps its finished batches"
    )
    with _interruptible(kept):
        result = embedder.encode(texts, instruction, options)
    embeddings, answers = result if return_generations else (result, None)
    tables.write_embeddings(out, embeddings, table, answers)
    if answers is not None and answers_out is not None:
        lines = "".join(a.replace("\n", " ") + "\n" for a in answers)
        tables.atomic_write(answers_out, lambda p: p.write_text(lines, encoding="utf-8"))
        typer.echo(f"wrote answers to {answers_out}", err=True)
    typer.echo(f"wrote {embeddings.shape[0]} embeddings of size {embeddings.shape[1]} to {out}", err=True)


@app.command("eval")
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
        typer.Option(help="Also run all-MiniLM-L6-v2 without and with the instruction, and the LM's mean pooling."),
    ] = False,
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
    device: str = "auto",
) -> None:
    """Evaluate instruction awareness on a task suite; print a table and write JSON."""
    from inbedder.eval import baselines as base
    from inbedder.eval import suite as eval_suite

    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
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
    settings = _given(template=template, readout=readout, layer=layer, postprocess=postprocess)
    encoders = {name: InBedder(name, device=device, **settings) for name in model}
    if baselines:
        minilm = base.load_sentence_embedder()
        encoders["all-MiniLM-L6-v2"] = base.WithoutInstruction(minilm, "all-MiniLM-L6-v2")
        encoders["all-MiniLM-L6-v2 + instruction"] = base.InstructionPrepended(minilm, "all-MiniLM-L6-v2 + instruction")
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


@app.command()
def cluster(
    input: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL, Parquet, or .txt with one text per line.")],
    instruction: Annotated[
        list[str], typer.Option("--instruction", "-i", help="A question to cluster by; repeat for several ways.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (created if missing).")],
    k: Annotated[
        str, typer.Option("-k", "--k", help="Number of clusters, or 'auto' (silhouette over 2..10).")
    ] = "auto",
    method: Annotated[str, typer.Option(help="'kmeans' (seeded) or 'hdbscan' (may leave noise).")] = "kmeans",
    text_column: Annotated[
        str | None, typer.Option(help="Column holding the texts (default: 'text' or the only column).")
    ] = None,
    label_column: Annotated[
        list[str] | None, typer.Option(help="Known labels: composition, purity and v-measure. Repeatable.")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Column of text ids (default: the row number).")] = None,
    model: ModelOption = models.DEFAULT_MODEL,
    readout: ReadoutOption = None,
    layer: LayerOption = None,
    template: TemplateOption = None,
    postprocess: PostprocessOption = None,
    min_cluster_size: Annotated[int, typer.Option(help="HDBSCAN's smallest cluster.")] = 5,
    map: Annotated[str, typer.Option(help="2-D map: 'auto' (UMAP if installed, else PCA), 'pca', 'umap'.")] = "auto",
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length, for the keywords.")] = 8,
    device: str = "auto",
    cache: Annotated[
        bool,
        typer.Option(help="Keep the embeddings in the user cache ($INBEDDER_CACHE) rather than OUT/embeddings.sqlite."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the results of an earlier run in OUT (an unfinished run resumes anyway).")
    ] = False,
) -> None:
    """Cluster INPUT under each instruction; write assignments, explained clusters and an HTML report.

    Embeddings and answers are saved in OUT/embeddings.sqlite batch by batch as they are
    computed: an interrupted run loses at most one batch, and a rerun does no model work.
    """
    from inbedder import tables
    from inbedder.clustering.pipeline import check_inputs
    from inbedder.clustering.pipeline import cluster as run_cluster
    from inbedder.clustering.result import RESULT_FILES

    table = tables.read_table(input)
    texts = tables.column_texts(table, tables.pick_column(table, text_column, input), input)
    labels = {
        name: tables.column_texts(table, tables.pick_column(table, name, input, "label"), input)
        for name in label_column or []
    }
    ids = table[tables.pick_column(table, id_column, input, "id")].tolist() if id_column else None
    k_value: int | str = k if k == "auto" else _int_option("k", k)
    check_inputs(texts, instruction, k_value, method, map, labels, ids, min_cluster_size, batch_size)
    _check_readout(readout)
    tables.check_directory(out, create=False)
    finished = [name for name in RESULT_FILES if (out / name).exists()]
    if finished and not overwrite:
        raise InputError(f"{out} already holds a clustering ({', '.join(finished)}); pass --overwrite to replace it")
    store = _checked_store(True if cache else out / "embeddings.sqlite")

    from inbedder.embedder import InBedder

    embedder = InBedder(
        model, device=device, **_given(template=template, readout=readout, layer=layer, postprocess=postprocess)
    )
    kept = f"every finished batch is kept in {store.path}; run the same command again to go on from there"
    with _interruptible(kept):
        result = run_cluster(
            texts,
            instruction,
            embedder,
            k=k_value,
            method=method,
            labels=labels,
            ids=ids,
            seed=seed,
            min_cluster_size=min_cluster_size,
            map_method=map,
            cache=store,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            show_progress_bar=True,
        )
    paths = result.save(tables.check_directory(out))
    for clustering in result.clusterings:
        typer.echo(f"{clustering.instruction!r}: {clustering.k} clusters")
        for summary in clustering.clusters:
            words = ", ".join(summary.keywords[:5]) or "-"
            typer.echo(f"  cluster {summary.cluster} ({summary.size} texts): {words}")
    typer.echo(f"report: {paths['report.html']}", err=True)


def _check_readout(readout: str | None) -> None:
    if readout is not None and readout not in READOUTS:
        raise InputError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")


def _checked_store(spec: object) -> Any:
    """The persistent cache ``spec`` names, refused now (one line) if it cannot be used."""
    from inbedder.cache import open_cache

    return open_cache(spec)


@contextlib.contextmanager
def _interruptible(kept: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into ``Interrupted``, whose message says ``kept``."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {kept}") from None


def _given(**options: object) -> dict[str, object]:
    """The options the user set: the model's own defaults stand for the rest."""
    return {name: value for name, value in options.items() if value is not None}


def _int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--{name} must be an integer or 'auto', got {value!r}") from None


@app.command("train")
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
    seed: int = 0,
    context_column: str = "context",
    question_column: str = "question",
    answer_column: str = "answer",
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    device: str = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from the hub (off unless asked).")] = False,
) -> None:
    """Fine-tune a model to answer questions about texts tersely; InBedder(OUT) then loads it."""
    from inbedder.training import train

    options = {k: v for k, v in locals().items() if k not in ("data", "out", "base", "train", "target_module")}
    options["max_length"] = _tokens_or_auto(max_length, "--max-length")
    result = train(base, data[0] if len(data) == 1 else data, out, target_modules=target_module or None, **options)
    last = result.train_losses[-1] if result.train_losses else float("nan")
    held_out = "none" if result.eval_loss is None else f"{result.eval_loss:.4f}"
    typer.echo(
        f"{result.steps} steps ({result.family}) in {result.seconds:.0f}s on {result.train_records} records: "
        f"last train loss {last:.4f}, held-out loss {held_out}",
    )
    typer.echo(f"wrote {out} (load it with InBedder({str(out)!r}))", err=True)


def _tokens_or_auto(value: str, option: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{option} must be a number of tokens or 'auto', got {value!r}") from None


@app.command("models")
def list_models() -> None:
    """List the registered model names and whether each can load offline."""
    rows = [("name", "aliases", "offline", "description")]
    for spec in models.REGISTRY.values():
        offline = "yes" if spec.available_offline() else "no (needs the hub)"
        rows.append((spec.name, ", ".join(spec.aliases), offline, spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


cache_app = typer.Typer(help="The persistent cache of embeddings and answers.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CachePathOption = Annotated[
    Path | None, typer.Option("--path", help="The store: a SQLite file or its directory (default: $INBEDDER_CACHE).")
]


@cache_app.command("info")
def cache_info(path: CachePathOption = None) -> None:
    """Show how many embeddings the cache holds, its size on disk, and entries per model."""
    from inbedder.cache import open_cache

    typer.echo(open_cache(path or True).info().summary())


@cache_app.command("clear")
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


def main() -> None:
    """Entry point: one clear line on stderr for user errors (INBEDDER_DEBUG=1 shows the traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app()
    except (InputError, ValueError, TypeError, ImportError, OSError) as err:
        if os.environ.get("INBEDDER_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Interrupted as interrupted:
        typer.echo(str(interrupted), err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
