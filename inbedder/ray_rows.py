"""Rows in and out of Ray Data for ``inbedder.distributed``: the dataset a path or a Dataset names
(checked by column), a batch's texts and field values (a bad one named by its row's id), and
vectors as fixed-size-list columns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from inbedder.errors import InputError
from inbedder.extras import require

require("ray", "ray")

import ray  # noqa: E402


def batch_texts(batch: pa.Table, text_column: str, id_column: str | None) -> list[str]:
    """The batch's texts; one that is empty or not a string is named by its row's id (encode knows only positions)."""
    texts = batch.column(text_column).to_pylist()
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            where = f"row {batch.column(id_column)[row].as_py()!r}" if id_column else f"row {row} of a batch"
            problem = "is empty" if isinstance(text, str) else f"is {text!r}, not a string"
            raise InputError(f"{where}: its text {problem}; every text must have some content")
    return texts


def batch_values(batch: pa.Table, column: str, id_column: str | None) -> list[str]:
    """A field column's values as text; a missing one is named by its row's id."""
    values = batch.column(column).to_pylist()
    for row, value in enumerate(values):
        if value is None:
            where = f"row {batch.column(id_column)[row].as_py()!r}" if id_column else f"row {row} of a batch"
            raise InputError(f"{where}: its field column {column!r} is empty; the template needs a value")
    return [str(value) for value in values]


def with_vectors(batch: pa.Table, name: str, vectors: Any) -> pa.Table:
    """``batch`` with a fixed-size-list column ``name`` of float32 vectors."""
    vectors = np.asarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return batch.append_column(name, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))


def checked_dataset(
    data: Any, text_column: str, id_column: str | None, added: set[str], field_columns: Sequence[str] = ()
) -> ray.data.Dataset:
    """``data`` as a Ray Dataset, refused by name when it lacks the text, id or a field column or already
    has a column the output would add."""
    dataset = as_dataset(data)
    names = set(dataset.schema().names)
    for needed, role in ((text_column, "text"), (id_column, "id"), *((c, "field") for c in field_columns)):
        if needed is not None and needed not in names:
            raise InputError(f"the {role} column {needed!r} is not in the data; its columns are {sorted(names)}")
    if added & names:
        raise InputError(f"the data already has column(s) {sorted(added & names)}, which the output would add")
    return dataset


def check_cluster_settings(
    dataset: ray.data.Dataset, k: int | str, sample_size: int, label_columns: Sequence[str]
) -> None:
    """What ``cluster_dataset`` would refuse only after embedding every row, refused before."""
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 3:
        raise InputError(f"sample_size must be a number of rows of at least 3, got {sample_size!r}")
    if k != "auto" and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise InputError(f"k must be an int of at least 2 or 'auto', got {k!r}")
    if k != "auto" and k > sample_size:
        raise InputError(f"k={k} is larger than the sample k-means is fit on (sample_size={sample_size})")
    names = set(dataset.schema().names)
    missing = [name for name in label_columns if name not in names]
    if missing:
        raise InputError(f"the label column {missing[0]!r} is not in the data; its columns are {sorted(names)}")


def as_dataset(data: Any) -> ray.data.Dataset:
    if isinstance(data, ray.data.Dataset):
        return data
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    suffix = path.suffix.lower() if path.is_file() else folder_suffix(path)
    readers = {".parquet": ray.data.read_parquet, ".csv": ray.data.read_csv, ".jsonl": ray.data.read_json}
    if suffix not in readers:
        raise InputError(f"{path}: Ray reads Parquet, CSV or JSONL here, not {suffix or 'this folder'}")
    return readers[suffix](str(path))


def folder_suffix(folder: Path) -> str:
    suffixes = {p.suffix.lower() for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_"))}
    return suffixes.pop() if len(suffixes) == 1 else ""
