"""Local benchmark sets (JSON Lines plus a ``.card.json``) and the tasks they yield.

A card names the set's aspects (label types), their classes, and instructions for each: a main
``instruction``, ``paraphrases``, ``implicit`` and ``incorrect`` ones. Records look like
``{"id": ..., "text": ..., "labels": {aspect: class}}``, other keys being per-record fields
for ``{field}`` placeholders in instructions.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inbedder.errors import InputError, check_positive_int
from inbedder.eval.tasks import ClusteringTask, RobustnessTask, STSTask, TripletTask

ROBUSTNESS_GROUPS = ("paraphrases", "implicit", "incorrect")
_NOT_FIELDS = {"id", "text", "labels"}


@dataclass
class LocalDataset:
    name: str
    records: list[dict[str, Any]]
    card: dict[str, Any]

    @property
    def aspects(self) -> dict[str, dict[str, Any]]:
        return self.card.get("aspects", {})

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.records]

    def labels(self, aspect: str) -> list[str]:
        if aspect not in self.aspects:
            raise InputError(f"dataset {self.name} has no aspect {aspect!r}; its aspects are {list(self.aspects)}")
        return [r["labels"][aspect] for r in self.records]

    def subsample(self, n: int, seed: int = 0) -> LocalDataset:
        """At most ``n`` records, stratified by their joint labels, chosen by ``seed``; in file order."""
        check_positive_int("limit", n)
        if n >= len(self.records):
            return self
        rng = np.random.default_rng(seed)
        strata: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(self.records):
            strata[json.dumps(record.get("labels", {}), sort_keys=True)].append(i)
        # each stratum's members, in a seeded order, spread evenly over [0, 1): the first n taken
        position = {}
        for members in strata.values():
            for rank, j in enumerate(rng.permutation(len(members))):
                position[members[j]] = (rank + 0.5) / len(members)
        chosen = sorted(sorted(range(len(self.records)), key=position.__getitem__)[:n])
        return LocalDataset(self.name, [self.records[i] for i in chosen], self.card)

    def fields(self) -> list[dict[str, str]] | None:
        """Per-record values for instruction placeholders, or None when records carry none."""
        fields = [{k: str(v) for k, v in r.items() if k not in _NOT_FIELDS} for r in self.records]
        return fields if any(fields) else None


def default_data_dir() -> Path | None:
    """``$INBEDDER_DATA``, else a ``shared/data`` beside the working directory or the checkout."""
    if os.environ.get("INBEDDER_DATA"):
        return Path(os.environ["INBEDDER_DATA"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def load_local(name: str, data_dir: str | os.PathLike | None = None) -> LocalDataset:
    """``NAME.jsonl`` or ``NAME.dev.jsonl`` with ``NAME.card.json``, from ``data_dir``."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    if directory is None or not directory.is_dir():
        raise FileNotFoundError(f"data directory not found: {directory}; set INBEDDER_DATA or pass data_dir")
    candidates = [directory / f"{name}.jsonl", directory / f"{name}.dev.jsonl"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        available = sorted(p.name.split(".")[0] for p in directory.glob("*.card.json"))
        raise FileNotFoundError(f"no dataset {name!r} in {directory}; available: {available}")
    card_path = directory / f"{name}.card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        records = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read dataset {name!r} ({path}, {card_path}): {err}") from err
    return LocalDataset(name, records, card)


def clustering_tasks(dataset: LocalDataset) -> list[ClusteringTask]:
    """One clustering task per aspect, asked with the aspect's main instruction."""
    return [
        ClusteringTask(
            name=f"{dataset.name}/{aspect}/clustering",
            texts=dataset.texts,
            labels=dataset.labels(aspect),
            instruction=spec["instruction"],
            fields=dataset.fields(),
        )
        for aspect, spec in dataset.aspects.items()
    ]


def robustness_tasks(dataset: LocalDataset) -> list[RobustnessTask]:
    """Each clustering task rerun under the card's paraphrases, implicit and incorrect instructions."""
    tasks = []
    for task, spec in zip(clustering_tasks(dataset), dataset.aspects.values()):
        groups = {group: spec[group] for group in ROBUSTNESS_GROUPS if spec.get(group)}
        if groups:
            tasks.append(RobustnessTask(task, groups))
    return tasks


def triplet_tasks(dataset: LocalDataset, per_aspect: int = 500, seed: int = 0) -> list[TripletTask]:
    """Triplets for each aspect A of a multi-aspect set, built deterministically from ``seed``.

    Anchor and positive share A and differ in another aspect B; the negative shares B with the
    anchor and differs in A. So only the asked aspect tells positive from negative.
    """
    aspects = list(dataset.aspects)
    if len(aspects) < 2:
        return []
    labels = {a: dataset.labels(a) for a in aspects}
    texts = dataset.texts
    record_fields = dataset.fields()
    fields = dict(zip(texts, record_fields)) if record_fields else None
    tasks = []
    for asked in aspects:
        rng = np.random.default_rng([seed, aspects.index(asked)])
        anchors, positives, negatives = [], [], []
        for _ in range(per_aspect * 20):  # bounded: rare cells can leave an anchor without a partner
            if len(anchors) == per_aspect:
                break
            a = int(rng.integers(len(texts)))
            other = aspects[int(rng.choice([i for i, x in enumerate(aspects) if x != asked]))]
            same_asked, same_other = labels[asked][a], labels[other][a]
            pos = [i for i in range(len(texts)) if labels[asked][i] == same_asked and labels[other][i] != same_other]
            neg = [i for i in range(len(texts)) if labels[asked][i] != same_asked and labels[other][i] == same_other]
            if pos and neg:
                anchors.append(texts[a])
                positives.append(texts[pos[int(rng.integers(len(pos)))]])
                negatives.append(texts[neg[int(rng.integers(len(neg)))]])
        tasks.append(
            TripletTask(
                name=f"{dataset.name}/{asked}/triplets",
                anchors=anchors,
                positives=positives,
                negatives=negatives,
                instruction=dataset.aspects[asked]["instruction"],
                fields=fields,
            )
        )
    return tasks


def sts_task(dataset: LocalDataset) -> STSTask:
    """Pairs with gold scores (``sentence1``, ``sentence2``, ``score``), asked with no instruction."""
    return STSTask(
        name=f"{dataset.name}/sts",
        sentences1=[r["sentence1"] for r in dataset.records],
        sentences2=[r["sentence2"] for r in dataset.records],
        scores=[float(r["score"]) for r in dataset.records],
    )
