"""What a personalized clustering returns: per instruction, the assignments and an explained card per cluster."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inbedder.clustering.report import render_report
from inbedder.clustering.summary import NOISE, ClusterSummary, InstructionClustering
from inbedder.tables import atomic_folder, atomic_write

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
    corpus_size: int | None = None
    """The whole corpus's size when ``texts`` are a sample of it (clustering at scale), else None."""

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
        sample = {} if self.corpus_size is None else {"sample": len(self.texts)}
        return {
            "model": self.model,
            "texts": len(self.texts) if self.corpus_size is None else self.corpus_size,
            **sample,
            "map": self.map_method,
            "label_columns": list(self.labels),
            "instructions": [c.summary() for c in self.clusterings],
        }

    def for_corpus(self, sizes: Mapping[tuple[str, int], int], corpus_size: int) -> ClusteringResult:
        """This result, clustered on a sample, with each cluster's size counted over the whole corpus
        (``sizes``: (instruction, cluster) -> rows); the original is left as it was."""
        clusterings = [
            replace(
                clustering,
                clusters=[
                    replace(summary, size=int(sizes.get((clustering.instruction, summary.cluster), 0)))
                    for summary in clustering.clusters
                ],
            )
            for clustering in self.clusterings
        ]
        return replace(self, clusterings=clusterings, corpus_size=corpus_size)

    def save(self, directory: str | Path, assignments: Callable[[Path], object] | None = None) -> dict[str, Path]:
        """Write ``assignments.parquet``, ``clusters.json`` and ``report.html`` into ``directory``, each
        replaced whole or not at all. ``assignments``: a writer of the assignments as a folder (at
        scale, Parquet shards) in place of this result's own table."""
        directory = Path(directory)
        paths = {name: directory / name for name in RESULT_FILES}
        if assignments is None:
            atomic_write(paths["assignments.parquet"], lambda p: self.assignments().to_parquet(p, index=False))
        else:
            atomic_folder(paths["assignments.parquet"], assignments)
        atomic_write(paths["clusters.json"], lambda p: Path(p).write_text(json.dumps(self.clusters_json(), indent=1)))
        atomic_write(paths["report.html"], lambda p: Path(p).write_text(render_report(self), encoding="utf-8"))
        return paths
