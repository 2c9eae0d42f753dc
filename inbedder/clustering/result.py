"""What a personalized clustering returns: per instruction, the assignments and an explained card per cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inbedder.clustering.report import render_report
from inbedder.clustering.summary import NOISE, ClusterSummary, InstructionClustering
from inbedder.tables import atomic_write

__all__ = ["NOISE", "RESULT_FILES", "ClusterSummary", "ClusteringResult", "InstructionClustering"]

RESULT_FILES = ("assignments.parquet", "clusters.json", "report.html")
"""What ``ClusteringResult.save`` writes."""


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
        directory = Path(directory)
        paths = {name: directory / name for name in RESULT_FILES}
        atomic_write(paths["assignments.parquet"], lambda p: self.assignments().to_parquet(p, index=False))
        atomic_write(paths["clusters.json"], lambda p: Path(p).write_text(json.dumps(self.clusters_json(), indent=1)))
        atomic_write(paths["report.html"], lambda p: Path(p).write_text(render_report(self), encoding="utf-8"))
        return paths
