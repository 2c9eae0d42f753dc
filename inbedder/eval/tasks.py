"""Evaluation tasks, one small class per kind, over any ``Embedder`` (``inbedder.interface``).

An InBedder takes the instruction as its question; a baseline wrapper decides what to do with it
(ignore it, or prepend it to the text). Instructions may hold ``{field}`` placeholders, filled
from each record's fields before the model sees them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.metrics import v_measure_score

from inbedder.errors import InputError
from inbedder.interface import Embedder
from inbedder.options import EncodeOptions
from inbedder.templates import fill_fields

Instruction = str | None


def embed(model: Embedder, texts: list[str], instruction: Any, options: EncodeOptions | None = None) -> np.ndarray:
    """The model's vectors of ``texts`` under one instruction (one per text, or the same for all)."""
    result = model.encode_multi(texts, [instruction], options)[0]
    return np.asarray(result[0] if isinstance(result, tuple) else result, dtype=np.float32)


def embed_groups(
    model: Embedder,
    groups: Sequence[list[str]],
    instruction: Instruction,
    fields: Mapping[str, Mapping[str, str]] | None = None,
    options: EncodeOptions | None = None,
) -> list[np.ndarray]:
    """Embed each distinct text once; one array per group, rows in its order.

    ``fields`` maps a text to its record's fields, for placeholders in the instruction.
    """
    unique = list(dict.fromkeys(text for group in groups for text in group))
    asked = per_text_instructions(instruction, [fields[t] for t in unique] if fields else None)
    vectors = embed(model, unique, asked, options)
    row = {text: i for i, text in enumerate(unique)}
    return [vectors[[row[text] for text in group]] for group in groups]


def per_text_instructions(instruction: Instruction, fields: Sequence[Mapping[str, str]] | None) -> Any:
    """The instruction as the model gets it: filled per record when the records carry fields."""
    if instruction is None or not fields or "{" not in instruction:
        return instruction
    return [fill_fields(instruction, record) for record in fields]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def score_clustering(embeddings: np.ndarray, labels: Sequence[str], seeds: Sequence[int]) -> dict[str, float]:
    """k-means with k = number of classes, once per seed: mean and std of the v-measure."""
    k = len(set(labels))
    scores = [
        v_measure_score(labels, KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(embeddings))
        for seed in seeds
    ]
    return {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores))}


def score_triplets(anchors: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> dict[str, float]:
    """How often the anchor is closer (cosine) to its positive than to its negative."""
    wins = cosine_rows(anchors, positives) > cosine_rows(anchors, negatives)
    return {"accuracy": float(wins.mean())}


def score_sts(first: np.ndarray, second: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    """Spearman correlation of the pairs' cosine similarity with the gold scores."""
    return {"spearman": float(spearmanr(cosine_rows(first, second), gold).statistic)}


@dataclass
class ClusteringTask:
    """Embed texts under the instruction, cluster with k-means, compare with the labels."""

    name: str
    texts: list[str]
    labels: list[str]
    instruction: Instruction
    fields: list[dict[str, str]] | None = None
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    kind: ClassVar[str] = "clustering"
    main_score: ClassVar[str] = "v_measure"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise InputError(f"task {self.name}: {len(self.texts)} texts but {len(self.labels)} labels")

    def with_instruction(self, instruction: Instruction) -> ClusteringTask:
        return replace(self, instruction=instruction)

    def evaluate(self, model: Embedder, options: EncodeOptions | None = None) -> dict[str, float]:
        instruction = per_text_instructions(self.instruction, self.fields)
        return score_clustering(embed(model, self.texts, instruction, options), self.labels, self.seeds)


@dataclass
class TripletTask:
    """Anchor, positive and negative texts: does the anchor embed closer to the positive?"""

    name: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str]
    instruction: Instruction
    fields: dict[str, dict[str, str]] | None = None  # text -> its record's fields
    kind: ClassVar[str] = "triplets"
    main_score: ClassVar[str] = "accuracy"

    def __post_init__(self) -> None:
        if not len(self.anchors) == len(self.positives) == len(self.negatives):
            raise InputError(f"task {self.name}: anchors, positives and negatives differ in number")

    def with_instruction(self, instruction: Instruction) -> TripletTask:
        return replace(self, instruction=instruction)

    def evaluate(self, model: Embedder, options: EncodeOptions | None = None) -> dict[str, float]:
        groups = [self.anchors, self.positives, self.negatives]
        return score_triplets(*embed_groups(model, groups, self.instruction, self.fields, options))


@dataclass
class STSTask:
    """Sentence pairs with gold similarity scores."""

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    instruction: Instruction = None
    kind: ClassVar[str] = "sts"
    main_score: ClassVar[str] = "spearman"

    def with_instruction(self, instruction: Instruction) -> STSTask:
        return replace(self, instruction=instruction)

    def evaluate(self, model: Embedder, options: EncodeOptions | None = None) -> dict[str, float]:
        pairs = [self.sentences1, self.sentences2]
        first, second = embed_groups(model, pairs, self.instruction, options=options)
        return score_sts(first, second, self.scores)


@dataclass
class RobustnessTask:
    """A task rerun under other wordings of its question, scored per group.

    Groups are the card's ``paraphrases`` and ``implicit`` (which a good InBedder should score
    as high as the main instruction) and ``incorrect`` (questions about another aspect, which
    should score low).
    """

    base: ClusteringTask | TripletTask | STSTask
    groups: dict[str, list[str]] = field(default_factory=dict)
    kind: ClassVar[str] = "robustness"

    @property
    def name(self) -> str:
        return f"{self.base.name}/robustness"

    @property
    def main_score(self) -> str:
        return self.base.main_score

    def evaluate(self, model: Embedder, options: EncodeOptions | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for group, instructions in self.groups.items():
            scores = [self.base.with_instruction(i).evaluate(model, options)[self.main_score] for i in instructions]
            result[group] = float(np.mean(scores))
            result[f"{group}_each"] = dict(zip(instructions, scores))
        return result
