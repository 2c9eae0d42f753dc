"""Embedding datasets bigger than one process, on Ray Data (``pip install "inbedder[ray]"``).

``embed_dataset`` maps a pool of actors over a Ray Dataset (or a Parquet, CSV or JSONL path
that Ray reads in a stream): each actor loads the model once and embeds batch after batch, with
``encode_multi`` when there are several instructions. The result is the input's columns plus
one embedding column per instruction (and answers when asked), in the layout ``inbedder
encode`` writes to Parquet. Each row's vector depends on that row alone, so the result equals
single-process ``encode``, and throughput grows with actors and nodes.

Actors that die are restarted and their batches retried by Ray; a row that cannot be embedded
(an empty text, say) fails the run with the row's id in the message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from inbedder.extras import require

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
        raise ValueError(f"instructions must be one or more non-empty questions, got {instructions!r}")
    return named


class _Embedder:
    """A Ray actor: one model, loaded once, embedding one batch (a pyarrow Table) at a time."""

    def __init__(
        self,
        model: str | Callable[[], Any] | None,
        columns: dict[str, str],
        text_column: str,
        id_column: str | None,
        return_generations: bool,
        encode_options: dict[str, Any],
        model_options: dict[str, Any],
    ) -> None:
        if callable(model):
            self.model = model()
        else:
            from inbedder.embedder import InBedder

            self.model = InBedder(model, **model_options)
        self.columns, self.text_column, self.id_column = columns, text_column, id_column
        self.return_generations, self.options = return_generations, encode_options

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.text_column).to_pylist()
        try:
            results = self.model.encode_multi(
                texts, list(self.columns.values()), return_generations=self.return_generations, **self.options
            )
        except (TypeError, ValueError) as err:
            raise ValueError(_with_row_id(err, texts, batch, self.id_column)) from err
        for name, result in zip(self.columns, results):
            vectors, answers = result if self.return_generations else (result, None)
            vectors = np.asarray(vectors, dtype=np.float32)
            flat = pa.array(vectors.reshape(-1), type=pa.float32())
            batch = batch.append_column(name, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
            if answers is not None:
                batch = batch.append_column(_answer_column(name), pa.array(list(answers), type=pa.string()))
        return batch


def embed_dataset(
    data: Any,
    instructions: Instructions,
    *,
    model: str | Callable[[], Any] | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    readout: str | None = None,
    layer: int | None = None,
    return_generations: bool = False,
    max_new_tokens: int = 8,
    cache: bool | str | None = None,
    concurrency: int = 1,
    batch_size: int = 256,
    encode_batch_size: int = 16,
    num_cpus: float | None = None,
    device: str = "auto",
) -> ray.data.Dataset:
    """A Ray Dataset: ``data``'s columns plus one embedding column per instruction (``output_columns``).

    Args:
        data: a Ray Dataset, or a path to Parquet, CSV or JSONL (a file or a folder of them).
        instructions: one question (column ``embedding``), a list (``embedding_0``, ...), or a
            mapping of column name to question. Several go through ``encode_multi``.
        model: a registered name, path or hub id (default: the default model), or a function
            that returns an ``InBedder``-like object (called once in each actor).
        text_column, id_column: the texts, and the ids that errors name.
        readout, layer, return_generations, max_new_tokens: as in ``encode``; answers go to
            ``answer`` (or ``NAME_answer`` for each embedding column ``NAME``).
        cache: the persistent store each actor uses: a path on a file system every node shares,
            True for each node's own (``$INBEDDER_CACHE``), None for none.
        concurrency: how many actors (each holds one model); batch_size: rows per actor call;
        encode_batch_size: texts per forward pass; num_cpus: CPUs reserved per actor (Ray's
        default, 1, when None). Leave the cluster some CPUs beyond the actors' for reading and
        writing, or those tasks wait for actors that wait for them.
    """
    columns = output_columns(instructions)
    dataset = _as_dataset(data)
    names = set(dataset.schema().names)
    for needed, role in ((text_column, "text"), (id_column, "id")):
        if needed is not None and needed not in names:
            raise ValueError(f"the {role} column {needed!r} is not in the data; its columns are {sorted(names)}")
    clashes = (set(columns) | ({_answer_column(c) for c in columns} if return_generations else set())) & names
    if clashes:
        raise ValueError(f"the data already has column(s) {sorted(clashes)}, which the output would add")
    options = {"batch_size": encode_batch_size, "max_new_tokens": max_new_tokens, "cache": cache or False}
    options.update({k: v for k, v in (("readout", readout), ("layer", layer)) if v is not None})
    return dataset.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "columns": columns,
            "text_column": text_column,
            "id_column": id_column,
            "return_generations": return_generations,
            "encode_options": options,
            "model_options": {"device": device},
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=num_cpus,
        max_restarts=-1,  # an actor that dies comes back, and its batch is retried
        max_task_retries=-1,
    )


def init(address: str | None = None, **kwargs: Any) -> None:
    """Connect to the Ray cluster at ``address`` ("auto": the one this node belongs to), or start a
    local one; nothing when already connected."""
    if not ray.is_initialized():
        ray.init(address=address, **kwargs)


def _as_dataset(data: Any) -> ray.data.Dataset:
    if isinstance(data, ray.data.Dataset):
        return data
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    suffix = path.suffix.lower() if path.is_file() else _folder_suffix(path)
    readers = {".parquet": ray.data.read_parquet, ".csv": ray.data.read_csv, ".jsonl": ray.data.read_json}
    if suffix not in readers:
        raise ValueError(f"{path}: Ray reads Parquet, CSV or JSONL here, not {suffix or 'this folder'}")
    return readers[suffix](str(path))


def _folder_suffix(folder: Path) -> str:
    suffixes = {p.suffix.lower() for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_"))}
    return suffixes.pop() if len(suffixes) == 1 else ""


def _answer_column(name: str) -> str:
    return "answer" if name == "embedding" else f"{name}_answer"


def _with_row_id(err: Exception, texts: list[Any], batch: pa.Table, id_column: str | None) -> str:
    """``err`` with the id of the row it names (``sentences[i]``), when there is one."""
    import re

    found = re.search(r"sentences\[(\d+)\]", str(err))
    if found is None:
        return str(err)
    row = int(found.group(1))
    where = f"row {batch.column(id_column)[row].as_py()!r}" if id_column else f"row with text {texts[row]!r}"
    return f"{where}: {err}".replace(f"sentences[{row}]", "its text")
