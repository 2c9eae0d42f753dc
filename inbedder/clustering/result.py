"""What a personalized clustering returns: per instruction, the assignments and an explained card per cluster."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


@dataclass
class ClusteringResult:
    """One corpus clustered under each of several instructions."""

    texts: list[str]
    ids: list[str]
    model: str
    map_method: str
    clusterings: list[InstructionClustering]
    labels: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, instruction: str) -> InstructionClustering:
        for clustering in self.clusterings:
            if clustering.instruction == instruction:
                return clustering
        raise KeyError(
            f"no clustering for instruction {instruction!r}; have {[c.instruction for c in self.clusterings]}"
        )

    def assignments(self) -> pd.DataFrame:
        """One row per (text, instruction): id, instruction, cluster, distance, answer."""
        frames = [
            pd.DataFrame(
                {
                    "id": self.ids,
                    "instruction": c.instruction,
                    "cluster": c.assignments.astype(np.int64),
                    "distance": c.distances.astype(np.float32),
                    "answer": c.answers,
                }
            )
            for c in self.clusterings
        ]
        return pd.concat(frames, ignore_index=True)

    def clusters_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "texts": len(self.texts),
            "map": self.map_method,
            "label_columns": list(self.labels),
            "instructions": [c.summary() for c in self.clusterings],
        }

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``assignments.parquet``, ``clusters.json`` and ``report.html`` into ``directory``."""
        from inbedder.clustering.report import render_report
        from inbedder.tables import atomic_write

        directory = Path(directory)
        paths = {name: directory / name for name in ("assignments.parquet", "clusters.json", "report.html")}
        atomic_write(paths["assignments.parquet"], lambda p: self.assignments().to_parquet(p, index=False))
        atomic_write(paths["clusters.json"], lambda p: Path(p).write_text(json.dumps(self.clusters_json(), indent=1)))
        atomic_write(paths["report.html"], lambda p: Path(p).write_text(render_report(self), encoding="utf-8"))
        return paths
