"""``inbedder cluster``: one corpus clustered under each instruction, with an HTML report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from inbedder import models
from inbedder.cli.common import (
    DeviceOption,
    DtypeOption,
    GenericOption,
    GuidedMethodOption,
    GuidedOption,
    ModelOption,
    SampleOption,
    check_dtype,
    check_readout,
    checked_store,
    given,
    guided_options,
    int_option,
    interruptible,
    on_terminal,
)
from inbedder.cli.declared import build, takes_fields
from inbedder.errors import InputError, as_input_error
from inbedder.options import EncodeOptions

STORE_FILE = "embeddings.sqlite"
"""Where a run keeps its embeddings and answers in OUT (without --cache)."""


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
    engine: Annotated[
        str, typer.Option(help="'local', or 'ray': actors embed every row, k-means fits a sample (needs --id-column).")
    ] = "local",
    address: Annotated[str | None, typer.Option(help="With --engine ray: the cluster ('auto': this node's).")] = None,
    concurrency: Annotated[int, typer.Option(help="With --engine ray: actors, each holding one model.")] = 1,
    sample_size: Annotated[int, typer.Option(help="With --engine ray: rows k-means is fit on.")] = 10_000,
    guided: GuidedOption = False,
    sample: SampleOption = None,
    generic: GenericOption = None,
    guided_method: GuidedMethodOption = None,
    encoding: dict[str, Any] | None = None,
) -> None:
    """Cluster INPUT under each instruction; write assignments, explained clusters and an HTML report.

    Embeddings and answers are saved in OUT/embeddings.sqlite batch by batch as they are
    computed: an interrupted run loses at most one batch, and a rerun does no model work.
    """
    from inbedder import tables
    from inbedder.clustering.pipeline import check_inputs, check_map
    from inbedder.clustering.pipeline import cluster as run_cluster
    from inbedder.clustering.result import check_results_folder
    from inbedder.validation import check_instructions_fit

    check_dtype(dtype)  # both engines: refused before any work
    if min_cluster_size < 1:
        raise InputError(f"--min-cluster-size must be a positive number, got {min_cluster_size}")
    encoding = dict(encoding or {})
    progress = encoding.pop("show_progress_bar")
    options = build(EncodeOptions, encoding, show_progress_bar=on_terminal(progress))
    check_readout(options.readout)
    fit = guided_options(guided, sample, generic, guided_method)
    if engine == "ray":
        if fit is not None:
            raise InputError("--guided clusters in this process (--engine local); on Ray, k-means fits a sample")
        if id_column is None:
            raise InputError("--engine ray needs --id-column: at scale, rows are named by their ids")
        if method != "kmeans":
            raise InputError("--engine ray clusters with k-means (a sample's centroids assign every row)")
        k_ray: int | str = k if k == "auto" else int_option("k", k)
        check_results_folder(out, overwrite, inputs=[input])
        try:
            check_map(map)
        except (ValueError, ImportError) as err:
            raise as_input_error(err) from err
        check_instructions_fit(model, instruction, template=options.template)
        from inbedder import distributed

        distributed.init(address)
        try:
            paths = distributed.cluster_dataset(
                str(input),
                instruction,
                out,
                replace(options, cache=True if cache else None),
                model=model,
                model_options={"device": device, **given(dtype=dtype)},
                k=k_ray,
                sample_size=sample_size,
                seed=seed,
                reducer=map,
                text_column=text_column or "text",
                id_column=id_column,
                label_columns=label_column or [],
                concurrency=concurrency,
            )
        except Exception as err:
            refused = distributed.user_error(err)  # a check before the actors started, or a row they refused
            if refused is None:
                raise
            raise as_input_error(refused) from None
        typer.echo(f"report: {paths['report.html']}", err=True)
        return
    if engine != "local":
        raise InputError(f"unknown --engine {engine!r}; use 'local' or 'ray'")

    table = tables.read_table(input)
    texts = tables.column_texts(table, tables.pick_column(table, text_column, input), input)
    labels = {
        name: tables.column_texts(table, tables.pick_column(table, name, input, "label"), input)
        for name in label_column or []
    }
    ids = table[tables.pick_column(table, id_column, input, "id")].tolist() if id_column else None
    k_value: int | str = k if k == "auto" else int_option("k", k)
    check_inputs(texts, instruction, k_value, method, map, labels, ids)
    check_results_folder(out, overwrite, inputs=[input], also=[] if cache else [STORE_FILE])
    check_instructions_fit(model, instruction, template=options.template)  # reads the tokenizer: after the cheap checks
    store = checked_store(True if cache else out / STORE_FILE)

    from sklearn.cluster import HDBSCAN

    from inbedder.embedder import InBedder
    from inbedder.guided import GuidedEmbedder

    model_options = {"device": device, **given(dtype=dtype)}
    embedder = (  # guided: the generic embedder loads (or is refused) before the language model
        GuidedEmbedder(model, generic, fit, cache=store, model_options=model_options)
        if fit is not None
        else InBedder(model, **model_options)
    )
    kept = f"every finished batch is kept in {store.path}; run the same command again to go on from there"
    with interruptible(kept):
        result = run_cluster(
            texts,
            instruction,
            embedder,
            options,
            k=k_value,
            clusterer=HDBSCAN(min_cluster_size=min(min_cluster_size, len(texts)), copy=True)
            if method == "hdbscan"
            else method,
            reducer=map,
            labels=labels,
            ids=ids,
            seed=seed,
            cache=store,
        )
    paths = result.save(tables.check_directory(out))
    for clustering in result.clusterings:
        typer.echo(f"{clustering.instruction!r}: {clustering.k} clusters")
        for summary in clustering.clusters:
            words = ", ".join(summary.keywords[:5]) or "-"
            typer.echo(f"  cluster {summary.cluster} ({summary.size} texts): {words}")
    typer.echo(f"report: {paths['report.html']}", err=True)
