"""A weighted mix of several QA files: ``--data qa-aspects.jsonl:0.7 --data qa-short-answers.jsonl:0.3``.

Each source is shuffled (seeded) and gives up its share of the held-out records first, so a
record held out is never also trained on. The training mix then takes from each source its
weight's share of the mix's size: a source with fewer records than its share is repeated whole
(then its first records again), never sampled with replacement at random.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inbedder.errors import InputError
from inbedder.training.data import Columns, QARecord, load_records, shuffle_split


@dataclass(frozen=True)
class DataSource:
    """One file (or hub dataset id) of QA records and its relative weight in the mix."""

    path: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.path:
            raise InputError("a data source needs a path or dataset id, got an empty string")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise InputError(f"the weight of {self.path} must be a positive number, got {self.weight}")

    @classmethod
    def parse(cls, spec: str | Path | DataSource | tuple[str | Path, float]) -> DataSource:
        """``"file.jsonl"``, ``"file.jsonl:0.7"``, ``(path, weight)`` or a ``DataSource``."""
        if isinstance(spec, DataSource):
            return spec
        if isinstance(spec, tuple):
            path, weight = spec
            return cls(str(path), float(weight))
        text = str(spec)
        head, sep, tail = text.rpartition(":")
        try:
            weight = float(tail) if sep else None
        except ValueError:
            weight = None  # a colon that is part of the name, as in a hub id with a revision
        return cls(text) if weight is None else cls(head, weight)


DataSpec = str | Path | DataSource | tuple[str | Path, float]
"""How a caller names one source: ``"file.jsonl"``, ``"file.jsonl:0.7"``, ``(path, weight)`` or a ``DataSource``."""


@dataclass(frozen=True)
class MixedData:
    """The training and held-out records of a mix, and what each source gave (for training.json)."""

    train: list[QARecord]
    held_out: list[QARecord]
    sources: list[dict[str, Any]]


def parse_sources(data: Any) -> list[DataSource]:
    """One source or a list of them, each as ``DataSource.parse`` reads it; refuses an empty list."""
    specs = data if isinstance(data, (list, tuple)) and not _is_pair(data) else [data]
    if not specs:
        raise InputError("no training data given")
    sources = [DataSource.parse(spec) for spec in specs]
    seen = set()
    for source in sources:
        if source.path in seen:
            raise InputError(f"{source.path} is given twice; give it once with the weight it should have")
        seen.add(source.path)
    return sources


def mix(
    sources: Sequence[DataSource],
    columns: Columns = Columns(),
    *,
    split: str = "train",
    seed: int = 0,
    limit: int | None = None,
    eval_size: int | None = None,
    eval_fraction: float = 0.02,
) -> MixedData:
    """Read every source, hold out from each, and mix the rest by weight into one seeded order.

    ``limit`` is the size of the training mix (default: all training records of all sources);
    ``eval_size`` records are held out in all (split by weight), else ``eval_fraction`` of each.
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of records, got {limit}")
    loaded = [load_records(source.path, columns, split=split) for source in sources]
    total_weight = sum(source.weight for source in sources)
    shares = [source.weight / total_weight for source in sources]
    held_counts = _split_by_share(eval_size, shares) if eval_size is not None else [None] * len(sources)
    trains, held_out = [], []
    for index, (records, held) in enumerate(zip(loaded, held_counts)):
        train, held_part = shuffle_split(
            records, seed=seed + index, eval_size=held, eval_fraction=0.0 if held is not None else eval_fraction
        )
        trains.append(train)
        held_out.extend(held_part)
    size = limit if limit is not None else sum(len(t) for t in trains)
    counts = _split_by_share(size, shares) if len(sources) > 1 else [size]
    mixed: list[QARecord] = []
    summary = []
    for index, (source, train, count) in enumerate(zip(sources, trains, counts)):
        mixed.extend(_take(train, count))
        summary.append(
            {"path": source.path, "weight": source.weight, "records": len(loaded[index]), "train_records": count}
        )
    random.Random(seed).shuffle(mixed)
    return MixedData(mixed, held_out, summary)


def _is_pair(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], (int, float))


def _split_by_share(total: int, shares: list[float]) -> list[int]:
    """``total`` split in proportion to ``shares`` (largest remainders), summing to ``total`` exactly."""
    exact = [total * share for share in shares]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _take(records: list[QARecord], count: int) -> list[QARecord]:
    """The first ``count`` of the (already shuffled) ``records``, repeating them whole as often as needed."""
    if count and not records:
        raise InputError("a data source has no records left to train on after holding some out")
    passes, remainder = divmod(count, len(records)) if records else (0, 0)
    return records * passes + records[:remainder]
