"""One instruction's clustering and its explained clusters (what the report draws and JSON holds)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NOISE = -1  # the cluster id of texts HDBSCAN leaves unassigned


@dataclass
class ClusterSummary:
    """One cluster of one instruction, explained.

    ``keywords``: c-TF-IDF terms of the cluster's generated answers against the other clusters.
    ``lm_head_tokens``: tokens the LM head ranks highest for (cluster mean state - corpus mean
    state); None when the readout is not taken at the last layer. ``examples``: the texts
    closest to the centroid. ``composition`` / ``purity`` / ``entropy``: per label column, the
    count of each label, the largest label's share, and the entropy of the labels in bits.
    """

    cluster: int
    size: int
    keywords: list[str]
    lm_head_tokens: list[str] | None
    examples: list[str]
    composition: dict[str, dict[str, int]] = field(default_factory=dict)
    purity: dict[str, float] = field(default_factory=dict)
    entropy: dict[str, float] = field(default_factory=dict)


@dataclass
class InstructionClustering:
    """The corpus clustered under one instruction.

    Arrays hold one row per text, in input order: ``assignments`` (cluster id, NOISE for
    noise), ``distances`` (to the cluster's centroid in the clustering space), ``coords`` (the
    2-D map), and ``answers`` (the generated answer to the instruction).
    """

    instruction: str
    assignments: np.ndarray
    distances: np.ndarray
    coords: np.ndarray
    answers: list[str]
    clusters: list[ClusterSummary]
    method: str
    k: int
    lm_head_note: str | None = None
    v_measure: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready part: everything but the per-text arrays."""
        return {
            "instruction": self.instruction,
            "method": self.method,
            "k": self.k,
            "noise": int((self.assignments == NOISE).sum()),
            "lm_head_note": self.lm_head_note,
            "v_measure": self.v_measure,
            "clusters": [asdict(c) for c in self.clusters],
        }
