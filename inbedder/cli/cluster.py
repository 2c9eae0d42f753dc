"""``inbedder cluster``: one corpus clustered under each instruction, with an HTML report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    ModelOption,
    check_dtype,
    check_readout,
    checked_store,
    given,
    int_option,
    interruptible,
    on_terminal,
)
from inbedder.cli.declared import build, takes_fields
from inbedder.cli.flags import Guiding, Placement
from inbedder.errors import InputError, as_input_error
from inbedder.options import EncodeOptions

STORE_FILE = "embeddings.sqlite"
"""Where a run keeps its embeddings and answers in OUT (without --cache)."""


@takes_fields(Guiding, "guiding", panel="Guided embeddings")
@takes_fields(Placement, "placement", panel="Where it runs")
@takes_fields(EncodeOptions, "encoding", exclude=("return_generations", "seed", "cache"), panel="Encoding")
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
    min_cluster_size: Annotated[int, typer.Option(help="HDBSCAN's smallest cluster.")] = 5,
    map: Annotated[str, typer.Option(help="2-D map: 'auto' (UMAP if installed, else PCA), 'pca', 'umap'.")] = "auto",
    seed: int = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
    cache: Annotated[
        bool,
        typer.Option(help="Keep the embeddings in the shared cache ($INBEDDER_CACHE), not OUT/embeddings.sqlite."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the results of an earlier run in OUT (an unfinished run resumes anyway).")
    ] = False,
    sample_size: Annotated[int, typer.Option(help="With --engine ray: rows k-means is fit on.")] = 10_000,
    encoding: dict[str, Any] | None = None,
    placement: dict[str, Any] | None = None,
    guiding: dict[str, Any] | None = None,
) -> None:
    """Cluster INPUT under each instruction; write assignments, explained clusters and an HTML report.

    Embeddings and answers are saved in OUT/embeddings.sqlite batch by batch as they are
    computed: an interrupted run loses at most one batch, and a rerun does no model work.
    """
    check_dtype(dtype)  # both engines: refused before any work
    if min_cluster_size < 1:
        raise InputError(f"--min-cluster-size must be a positive number, got {min_cluster_size}")
    encoding = dict(encoding or {})
    options = build(EncodeOptions, encoding, show_progress_bar=on_terminal(encoding.pop("show_progress_bar")))
    check_readout(options.readout)
    where, guided = build(Placement, placement or {}), build(Guiding, guiding or {})
    k_value: int | str = k if k == "auto" else int_option("k", k)
    columns = (text_column, label_column or [], id_column)
    run = _Run(
        input, instruction, out, k_value, method, map, seed, *columns, model, {"device": device, **given(dtype=dtype)}
    )
    run = replace(run, min_cluster_size=min_cluster_size, cache=cache, overwrite=overwrite, options=options)
    fit = guided.options()
    if where.engine == "ray":
        if fit is not None:
            raise InputError("--guided clusters in this process (--engine local); on Ray, k-means fits a sample")
        _cluster_on_ray(run, where, sample_size)
    else:
        _cluster_here(run, fit, guided.generic)


@dataclass(frozen=True)
class _Run:
    """What ``cluster`` was asked: the table and its columns, the clustering, the model and its options."""

    input: Path
    instructions: list[str]
    out: Path
    k: int | str
    method: str
    map: str
    seed: int
    text_column: str | None
    label_columns: list[str]
    id_column: str | None
    model: str
    model_options: dict[str, Any]
    min_cluster_size: int = 5
    cache: bool = False
    overwrite: bool = False
    options: Any = None


def _cluster_on_ray(run: _Run, where: Placement, sample_size: int) -> None:
    """``--engine ray``: actors embed every row, k-means fits a sample, every row gets its nearest centroid."""
    from inbedder import distributed
    from inbedder.clustering.pipeline import check_map
    from inbedder.clustering.result import check_results_folder
    from inbedder.validation import check_instructions_fit

    if run.id_column is None:
        raise InputError("--engine ray needs --id-column: at scale, rows are named by their ids")
    if run.method != "kmeans":
        raise InputError("--engine ray clusters with k-means (a sample's centroids assign every row)")
    check_results_folder(run.out, run.overwrite, inputs=[run.input])
    try:
        check_map(run.map)
    except (ValueError, ImportError) as err:
        raise as_input_error(err) from err
    check_instructions_fit(run.model, run.instructions, template=run.options.template)
    distributed.init(where.address)
    columns = {"text_column": run.text_column or "text", "id_column": run.id_column}
    clustering = {"k": run.k, "sample_size": sample_size, "seed": run.seed, "reducer": run.map}
    try:
        paths = distributed.cluster_dataset(
            str(run.input),
            run.instructions,
            run.out,
            replace(run.options, cache=True if run.cache else None),
            model=run.model,
            model_options=run.model_options,
            label_columns=run.label_columns,
            concurrency=where.concurrency,
            **columns,
            **clustering,
        )
    except Exception as err:
        refused = distributed.user_error(err)  # a check before the actors started, or a row they refused
        if refused is None:
            raise
        raise as_input_error(refused) from None
    typer.echo(f"report: {paths['report.html']}", err=True)


def _cluster_here(run: _Run, fit: Any, generic: str | None) -> None:
    """This process: the table in, the clusterings and their report out (the store in OUT, or the shared one)."""
    from inbedder import tables
    from inbedder.clustering.pipeline import check_inputs
    from inbedder.clustering.pipeline import cluster as run_cluster
    from inbedder.clustering.result import check_results_folder
    from inbedder.validation import check_instructions_fit

    table = tables.read_table(run.input)
    texts = tables.column_texts(table, tables.pick_column(table, run.text_column, run.input), run.input)
    labels = {
        name: tables.column_texts(table, tables.pick_column(table, name, run.input, "label"), run.input)
        for name in run.label_columns
    }
    ids = table[tables.pick_column(table, run.id_column, run.input, "id")].tolist() if run.id_column else None
    check_inputs(texts, run.instructions, run.k, run.method, run.map, labels, ids)
    check_results_folder(run.out, run.overwrite, inputs=[run.input], also=[] if run.cache else [STORE_FILE])
    check_instructions_fit(run.model, run.instructions, template=run.options.template)  # after the cheap checks
    store = checked_store(True if run.cache else run.out / STORE_FILE)
    embedder = _embedder(run, fit, generic, store)
    hdbscan = run.method == "hdbscan"
    clusterer = _hdbscan(min(run.min_cluster_size, len(texts))) if hdbscan else run.method
    kept = f"every finished batch is kept in {store.path}; run the same command again to go on from there"
    with interruptible(kept):
        result = run_cluster(
            texts,
            run.instructions,
            embedder,
            run.options,
            k=run.k,
            clusterer=clusterer,
            reducer=run.map,
            labels=labels,
            ids=ids,
            seed=run.seed,
            cache=store,
        )
    paths = result.save(tables.check_directory(run.out))
    for clustering in result.clusterings:
        typer.echo(f"{clustering.instruction!r}: {clustering.k} clusters")
        for summary in clustering.clusters:
            words = ", ".join(summary.keywords[:5]) or "-"
            typer.echo(f"  cluster {summary.cluster} ({summary.size} texts): {words}")
    typer.echo(f"report: {paths['report.html']}", err=True)


def _embedder(run: _Run, fit: Any, generic: str | None, store: Any) -> Any:
    """The model, or (guided) a GuidedEmbedder over it, whose generic embedder loads (or is refused) first."""
    from inbedder.embedder import InBedder
    from inbedder.guided import GuidedEmbedder

    if fit is not None:
        return GuidedEmbedder(run.model, generic, fit, cache=store, model_options=run.model_options)
    return InBedder(run.model, **run.model_options)


def _hdbscan(min_cluster_size: int) -> Any:
    from sklearn.cluster import HDBSCAN

    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True)
