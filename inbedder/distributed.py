"""Embedding datasets bigger than one process, on Ray Data (``pip install "inbedder[ray]"``).

``embed_dataset`` maps a pool of actors over a Ray Dataset (or a Parquet, CSV or JSONL path
that Ray reads in a stream): each actor loads the model once and embeds batch after batch, with
``encode_multi`` when there are several instructions. The result is the input's columns plus
one embedding column per instruction (and answers when asked), in the layout ``inbedder
encode`` writes to Parquet. Each row's vector depends on that row alone, so the result equals
single-process ``encode``, and throughput grows with actors and nodes.

Actors that die are restarted and their batches retried by Ray; a row that cannot be embedded
(an empty text, say) fails the run with the row's id in the message.

``cluster_dataset`` clusters at that scale: k-means fit on a seeded sample, every row assigned to
its nearest centroid on the cluster, and the files ``inbedder cluster`` writes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from inbedder.errors import InputError
from inbedder.extras import require
from inbedder.options import EncodeOptions, takes_encode_options
from inbedder.ray_rows import (
    batch_texts,
    batch_values,
    check_cluster_settings,
    checked_dataset,
    with_vectors,
)

require("ray", "ray")

import ray  # noqa: E402

Instructions = str | Sequence[str] | Mapping[str, str]


def output_columns(instructions: Instructions) -> dict[str, str]:
    """Column name -> instruction: ``embedding`` for one instruction, ``embedding_0``, ... for a list,
    or the names a mapping gives."""
    if isinstance(instructions, str):
        return {"embedding": instructions}
    if isinstance(instructions, Mapping):
        named = dict(instructions)
    else:
        named = {f"embedding_{k}": instruction for k, instruction in enumerate(instructions)}
    if not named or not all(isinstance(i, str) and i.strip() for i in named.values()):
        raise InputError(f"instructions must be one or more non-empty questions, got {instructions!r}")
    return named


class _Embedder:
    """A Ray actor: one model, loaded once, embedding one batch (a pyarrow Table) at a time."""

    def __init__(
        self,
        model: str | Callable[[], Any] | None,
        columns: dict[str, str],
        text_column: str,
        id_column: str | None,
        options: EncodeOptions,
        model_options: dict[str, Any],
        field_columns: Sequence[str] = (),
    ) -> None:
        if callable(model):
            self.model = model()
        else:
            from inbedder.embedder import InBedder

            self.model = InBedder(model, **model_options)
        if options.postprocess is None and getattr(self.model, "postprocess", "none") != "none":
            raise InputError(
                f"the model post-processes its vectors ({self.model.postprocess!r}) over each encode call, and on Ray "
                "every batch is a call of its own; pass postprocess='none' and post-process the gathered vectors"
            )
        self.columns, self.text_column, self.id_column, self.options = columns, text_column, id_column, options
        self.field_columns = list(field_columns)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch_texts(batch, self.text_column, self.id_column)
        options = self.options
        if self.field_columns:
            options = replace(options, fields={c: batch_values(batch, c, self.id_column) for c in self.field_columns})
        results = self.model.encode_multi(texts, list(self.columns.values()), options)
        for name, result in zip(self.columns, results):
            vectors, answers = result if self.options.return_generations else (result, None)
            batch = with_vectors(batch, name, vectors)
            if answers is not None:
                batch = batch.append_column(_answer_column(name), pa.array(list(answers), type=pa.string()))
        return batch


def guided_dataset(
    data: Any,
    instructions: Instructions,
    guided: Any = None,
    options: EncodeOptions | None = None,
    *,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    generic: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    concurrency: int = 1,
    rows_per_batch: int = 256,
    num_cpus: float | None = None,
) -> ray.data.Dataset:
    """A Ray Dataset: ``data``'s columns plus one guided embedding column per instruction (``inbedder.guided``).

    Each instruction's map is fitted here, on the driver: the model embeds a seeded sample of
    ``guided.sample`` rows (``guided``: ``GuidedOptions``, default ones when None), and the actors
    then apply the maps to the generic embedder's vectors of every row (no language model on
    them). ``options`` go to the model's run over the sample; ``model_options["dtype"]`` is the
    generic embedder's dtype too; the other arguments are as for ``embed_dataset``.
    """
    from inbedder.embedder import InBedder
    from inbedder.guided import GuidedEmbedder, GuidedOptions

    columns = output_columns(instructions)
    dataset = checked_dataset(data, text_column, id_column, set(columns))
    settings = guided if guided is not None else GuidedOptions()
    total = dataset.count()
    picked = (
        dataset
        if total <= settings.sample
        else dataset.random_sample(1.2 * settings.sample / total, seed=settings.seed)
    )
    texts = sorted(picked.select_columns([text_column]).to_pandas()[text_column].tolist())  # Ray's order varies
    model_options = dict(model_options or {})
    dtype = model_options.get("dtype")
    embedder = GuidedEmbedder(InBedder(model, **model_options), generic, settings, dtype=dtype)
    options = replace(EncodeOptions.build(options), show_progress_bar=False)
    maps = [replace(embedder.fit(texts, q, options), sample=None) for q in columns.values()]
    return embed_dataset(
        dataset,
        columns,
        EncodeOptions(normalize_embeddings=options.normalize_embeddings),
        model=functools.partial(GuidedEmbedder.from_maps, maps, dtype=dtype),
        text_column=text_column,
        id_column=id_column,
        concurrency=concurrency,
        rows_per_batch=rows_per_batch,
        num_cpus=num_cpus,
    )


@takes_encode_options
def embed_dataset(
    data: Any,
    instructions: Instructions,
    options: EncodeOptions | None = None,
    *,
    model: str | Callable[[], Any] | None = None,
    model_options: Mapping[str, Any] | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    field_columns: Sequence[str] = (),
    concurrency: int = 1,
    rows_per_batch: int = 256,
    num_cpus: float | None = None,
    **overrides: Any,
) -> ray.data.Dataset:
    """A Ray Dataset: ``data``'s columns plus one embedding column per instruction (``output_columns``).

    Args:
        data: a Ray Dataset, or a path to Parquet, CSV or JSONL (a file or a folder of them).
        instructions: one question (column ``embedding``), a list (``embedding_0``, ...), or a
            mapping of column name to question. Several go through ``encode_multi``.
        options, overrides: how to encode, as for ``InBedder.encode`` (an ``EncodeOptions``, or
            keywords: ``readout``, ``layer``, ``template``, ``batch_size``, ...); every one applies on
            the actors. ``return_generations`` adds the answers (``answer``, or ``NAME_answer`` per
            column ``NAME``). ``cache``: each actor's store, a path every node can open, or True for
            each node's own ``$INBEDDER_CACHE``. Post-processing over the corpus is refused: each
            actor call would be a corpus of its own.
        model: a registered name, path or hub id (default: the default model), or a function
            that returns an ``InBedder``-like object (called once in each actor).
        model_options: ``InBedder``'s other arguments (``device``, ``dtype``, ``max_length``, ...).
        text_column, id_column: the texts, and the ids that errors name; field_columns: columns
            that fill ``{name}`` placeholders row by row (``fields`` as values is refused: a list
            cannot follow the rows into batches).
        concurrency: actors (each holds one model); rows_per_batch: rows per actor call; num_cpus:
            CPUs per actor (Ray's default, 1, when None). Leave the cluster CPUs beyond the
            actors' for reading and writing, or those tasks wait for actors that wait for them.
    """
    options, model_options = EncodeOptions.build(options, **overrides), dict(model_options or {})
    check_options(model, options, model_options)
    columns = output_columns(instructions)
    answers = {_answer_column(c) for c in columns} if options.return_generations else set()
    dataset = checked_dataset(data, text_column, id_column, set(columns) | answers, field_columns)
    return dataset.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "columns": columns,
            "text_column": text_column,
            "id_column": id_column,
            "options": replace(options, show_progress_bar=False),
            "model_options": model_options,
            "field_columns": list(field_columns),
        },
        batch_format="pyarrow",
        batch_size=rows_per_batch,
        concurrency=concurrency,
        num_cpus=num_cpus,
        max_restarts=-1,  # an actor that dies comes back, and its batch is retried
        max_task_retries=-1,
    )


def check_options(model: Any, options: EncodeOptions, model_options: Mapping[str, Any]) -> None:
    """Refuse, before any actor starts, what the actors could not honour or would fail on.

    A named model's readout and layer are checked against its config (no weights loaded).
    """
    if options.convert_to_tensor:
        raise InputError("convert_to_tensor does not apply on Ray: the vectors go into the dataset's columns")
    if options.fields is not None:
        raise InputError(
            "fields given as values do not apply on Ray: the rows are split into batches, and a list of per-text "
            "values cannot follow them; put the values in columns of the data and name them with field_columns"
        )
    if options.return_usage:
        raise InputError("return_usage does not apply on Ray: the dataset has no column for it")
    if options.postprocess not in (None, "none") or model_options.get("postprocess") not in (None, "none"):
        raise InputError(
            "postprocess 'center' or 'standardize' takes statistics over the texts of one encode call, and on Ray "
            "every batch is a call of its own; embed with postprocess 'none' and post-process the gathered vectors"
        )
    if options.cache is not None and not isinstance(options.cache, (bool, str, PathLike)):
        raise InputError("on Ray, cache must be True, False or a path every node can open (not a store object)")
    from inbedder import models
    from inbedder.validation import check_settings

    check_settings(
        None if callable(model) else models.resolve(model or models.DEFAULT_MODEL),
        readout=options.readout or model_options.get("readout"),
        layer=options.layer if options.layer is not None else model_options.get("layer"),
        max_length=model_options.get("max_length"),
        truncate_dim=options.truncate_dim,
    )


def user_error(err: BaseException) -> ValueError | None:
    """The ``ValueError`` at the root of ``err``: what a check or an actor refused (a row with no text,
    named by its id; a prompt too long), in its own words; None when the root is something else (a
    bug, a lost node). An actor's error reaches the driver only as Ray's text of it, read there."""
    chain = [err]
    while (inner := getattr(chain[-1], "cause", None) or chain[-1].__cause__) is not None and inner not in chain:
        chain.append(inner)
    if isinstance(chain[-1], ValueError):
        return chain[-1]
    for wrapper in chain:
        if isinstance(wrapper, ray.exceptions.RayError):
            found = re.findall(r"^(?:[\w.]+\.)?(?:ValueError|InputError): (.+)$", str(wrapper), flags=re.MULTILINE)
            if found:
                return ValueError(found[-1])
    return None


def init(address: str | None = None, **kwargs: Any) -> None:
    """Connect to the Ray cluster at ``address`` ("auto": the one this node belongs to), or start a
    local one; nothing when already connected."""
    if not ray.is_initialized():
        ray.init(address=address, **kwargs)


def _answer_column(name: str) -> str:
    return "answer" if name == "embedding" else f"{name}_answer"


def cluster_dataset(
    data: Any,
    instructions: str | Sequence[str],
    out: str | Path,
    options: EncodeOptions | None = None,
    *,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    k: int | str = "auto",
    sample_size: int = 10_000,
    seed: int = 0,
    reducer: str | Any = "auto",
    text_column: str = "text",
    id_column: str = "id",
    label_columns: Sequence[str] = (),
    concurrency: int = 1,
    rows_per_batch: int = 256,
    num_cpus: float | None = None,
) -> dict[str, Path]:
    """Cluster a dataset under each instruction at scale; write what ``inbedder cluster`` writes.

    The actors embed every row (with its answer); k-means fits a seeded sample of ``sample_size``
    rows, explained as on one machine; every row then goes to its nearest centroid. ``out`` gets
    ``assignments.parquet`` (shards of id, instruction, cluster, distance, answer, swapped in whole),
    ``clusters.json`` (sizes over every row, the rest from the sample) and ``report.html``. With
    every row in the sample, the assignments are ``cluster``'s. The other arguments are as for
    ``embed_dataset`` (answers are always kept); ``seed`` chooses the sample and seeds k-means.
    """
    from inbedder.clustering.pipeline import check_map
    from inbedder.embedder import InBedder

    check_map(reducer)
    options = replace(EncodeOptions.build(options), return_generations=True)
    model_options = dict(model_options or {})
    questions = [instructions] if isinstance(instructions, str) else list(instructions)
    columns = output_columns(questions)
    out = Path(out)
    dataset = checked_dataset(data, text_column, id_column, set())
    check_cluster_settings(dataset, k, sample_size, label_columns)
    rows = {"text_column": text_column, "id_column": id_column, "rows_per_batch": rows_per_batch}
    actors = {"model": model, "model_options": model_options, "concurrency": concurrency, "num_cpus": num_cpus}
    embedded = embed_dataset(dataset, columns, options, **rows, **actors).materialize()
    total = embedded.count()
    sample = (embedded if total <= sample_size else embedded.random_sample(sample_size / total, seed=seed)).to_pandas()
    sample = sample.sort_values(id_column, kind="stable").reset_index(drop=True)  # Ray's order varies; this does not
    explainer = InBedder(model, **model_options)  # names LM-head words only for last-layer states
    settings = {"k": k, "seed": seed, "reducer": reducer}
    result = _cluster_sample(sample, columns, explainer, options, text_column, id_column, label_columns, settings)
    centroids = {
        name: _centroids(np.stack(sample[name].to_numpy()), clustering.assignments)
        for name, clustering in zip(columns, result.clusterings)
    }
    nearest = {"columns": columns, "centroids": centroids, "id_column": id_column}
    assigned = embedded.map_batches(_assign_rows, fn_kwargs=nearest, batch_format="pandas").materialize()
    out.mkdir(parents=True, exist_ok=True)
    sizes = assigned.select_columns(["instruction", "cluster"]).to_pandas().value_counts()
    # the shards go in as a whole new folder: an earlier run's shards never mix with this one's
    return result.for_corpus(sizes.to_dict(), total).save(out, lambda folder: assigned.write_parquet(str(folder)))


def _cluster_sample(
    sample: Any,
    columns: dict[str, str],
    explainer: Any,
    options: EncodeOptions,
    text_column: str,
    id_column: str,
    label_columns: Sequence[str],
    settings: dict[str, Any],
) -> Any:
    """The sample's rows (a DataFrame with their vectors and answers) clustered as on one machine."""
    from inbedder.clustering import cluster
    from inbedder.generic import Precomputed

    texts, questions = sample[text_column].tolist(), list(columns.values())
    vectors = [np.stack(sample[name].to_numpy()) for name in columns]
    answers = [sample[_answer_column(name)].tolist() for name in columns]
    return cluster(
        texts,
        questions,
        Precomputed(texts, questions, vectors, answers, explainer),
        options,
        labels={name: sample[name].astype(str).tolist() for name in label_columns},
        ids=sample[id_column].astype(str).tolist(),
        **settings,
    )


def _centroids(vectors: np.ndarray, assignments: np.ndarray) -> np.ndarray:
    """(k, dim): the mean of each cluster's vectors, cluster c in row c."""
    return np.stack([vectors[assignments == c].mean(0) for c in range(int(assignments.max()) + 1)])


def _assign_rows(batch: Any, columns: dict[str, str], centroids: dict[str, np.ndarray], id_column: str) -> Any:
    """One row per (row, instruction): id, instruction, nearest centroid, distance to it, answer."""
    import pandas as pd

    ids = batch[id_column].astype(str)
    frames = []
    for name, instruction in columns.items():
        vectors, means = np.stack(batch[name].to_numpy()).astype(np.float64), centroids[name].astype(np.float64)
        squared = (vectors**2).sum(1)[:, None] - 2 * vectors @ means.T + (means**2).sum(1)[None, :]
        distances = np.sqrt(np.maximum(squared, 0))  # (rows, k), without a (rows, k, dim) array
        nearest = distances.argmin(1)
        frames.append(
            pd.DataFrame(
                {
                    "id": ids.to_numpy(),
                    "instruction": instruction,
                    "cluster": nearest.astype(np.int64),
                    "distance": distances[np.arange(len(nearest)), nearest].astype(np.float32),
                    "answer": batch[_answer_column(name)].to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
