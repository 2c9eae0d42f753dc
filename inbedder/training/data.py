"""QA training records: read from a local table or a hub dataset, checked, shuffled and split."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from inbedder import tables
from inbedder.errors import InputError

DEFAULT_HUB_DATA = "KomeijiForce/Inbedder-Pretrain-Data"
"""The original paper's QA fine-tuning set on the Hugging Face hub. The original training code reads
its records as ``input`` (context), ``instruction`` (question) and ``output`` (answer): pass those
as the column names."""


@dataclass(frozen=True)
class QARecord:
    """One training example: a question about a context and its short answer."""

    context: str
    question: str
    answer: str


@dataclass(frozen=True)
class Columns:
    """Which columns of the data hold the context, the question and the answer."""

    context: str = "context"
    question: str = "question"
    answer: str = "answer"


def is_local(source: str | Path) -> bool:
    """A local file (or a path meant as one) rather than a hub dataset id."""
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in tables.TABLE_SUFFIXES


def load_records(
    source: str | Path,
    columns: Columns = Columns(),
    *,
    split: str = "train",
    data_files: str | Path | None = None,
) -> list[QARecord]:
    """All records of a CSV/TSV/JSONL/Parquet file, or of split ``split`` of a hub dataset.

    ``data_files`` loads a local JSON Lines file through the hub code path (``datasets``),
    which is how that path is tested offline. Errors name the missing column or empty cell.
    """
    if data_files is None and is_local(source):
        table = tables.read_table(Path(source).expanduser())
    else:
        table = _hub_table(str(source), split, data_files)
    names = [tables.pick_column(table, column, source, role) for role, column in _roles(columns)]
    context, question, answer = (tables.column_texts(table, name, source) for name in names)
    return [QARecord(c, q, a) for c, q, a in zip(context, question, answer)]


def _roles(columns: Columns) -> list[tuple[str, str]]:
    return [("context", columns.context), ("question", columns.question), ("answer", columns.answer)]


def _hub_table(dataset_id: str, split: str, data_files: str | Path | None) -> pd.DataFrame:
    import datasets

    try:
        if data_files is not None:
            rows = datasets.load_dataset("json", data_files=str(data_files), split="train")
        else:
            rows = datasets.load_dataset(dataset_id, split=split)
    except (ConnectionError, OSError, ValueError) as err:
        where = data_files if data_files is not None else f"the Hugging Face hub ({dataset_id}, split {split!r})"
        raise ConnectionError(f"cannot load training data from {where}: {type(err).__name__}: {err}") from err
    return rows.to_pandas()


def shuffle_split(
    records: list[QARecord],
    *,
    seed: int = 0,
    limit: int | None = None,
    eval_size: int | None = None,
    eval_fraction: float = 0.02,
) -> tuple[list[QARecord], list[QARecord]]:
    """Shuffle (seeded), keep the first ``limit``, and hold out ``eval_size`` records (else a fraction).

    Returns (train, held_out); at least one record is always left for training.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of records, got {limit}")
    if eval_size is not None and eval_size < 0:
        raise InputError(f"eval_size must be 0 or more, got {eval_size}")
    if not 0 <= eval_fraction < 1:
        raise InputError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    shuffled = shuffled[:limit]
    held = eval_size if eval_size is not None else round(eval_fraction * len(shuffled))
    if held >= len(shuffled):
        raise InputError(f"cannot hold out {held} of {len(shuffled)} records and still train; lower eval_size")
    return shuffled[held:], shuffled[:held]
