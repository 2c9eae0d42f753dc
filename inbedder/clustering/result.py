"""What a personalized clustering returns: per instruction, the assignments and an explained card per cluster."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inbedder import written
from inbedder.clustering.report import render_report
from inbedder.clustering.summary import NOISE, ClusterSummary, InstructionClustering
from inbedder.errors import InputError, option
from inbedder.tables import FOLDER_MARKER, atomic_folder, atomic_write, check_directory, refuse_inputs

__all__ = [
    "NOISE",
    "RESULT_FILES",
    "ClusterSummary",
    "ClusteringResult",
    "InstructionClustering",
    "check_results_folder",
]

RESULT_FILES = ("assignments.parquet", "clusters.json", "report.html")
"""What ``ClusteringResult.save`` writes."""


def check_results_folder(
    out: str | Path, overwrite: bool, inputs: Sequence[str | Path] = (), also: Sequence[str] = ()
) -> Path:
    """Before any work: ``out`` may take the result files (and ``also``, such as the store), and they
    replace only an earlier run's results, only with ``overwrite``, and never an input."""
    out = Path(out)
    check_directory(out, create=False)
    for name in (*RESULT_FILES, *also):
        refuse_inputs(out / name, inputs, folder=True)
    finished = [name for name in RESULT_FILES if (out / name).exists()]
    if finished and not overwrite:
        raise InputError(
            f"{out} already holds a clustering ({', '.join(finished)}); pass {option('overwrite')} to replace it"
        )
    _refuse_foreign(out, finished)
    return out


def _refuse_foreign(directory: Path, names: Sequence[str]) -> None:
    """Refuse result files of these names in ``directory`` that inbedder did not write (``written``); a
    folder of shards is inbedder's when it carries its ``FOLDER_MARKER``."""
    foreign = [name for name in names if (directory / name).exists() and not _ours(directory / name)]
    if foreign:
        raise InputError(
            f"{directory} holds {', '.join(foreign)}, which inbedder did not write (or which changed since); "
            f"choose another output folder: {option('overwrite')} only replaces an earlier run's results"
        )


def _ours(path: Path) -> bool:
    return (path / FOLDER_MARKER).is_file() if path.is_dir() else written.wrote(path)


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
        """Write ``assignments.parquet``, ``clusters.json`` and ``report.html`` into ``directory`` (made if
        missing), each replaced whole or not at all.
        ``assignments``: a writer of the assignments as a folder (at scale, Parquet shards) in place of
        this result's own table. Files of those names that an earlier save did not write are refused.
        """
        directory = Path(directory)
        paths = {name: directory / name for name in RESULT_FILES}
        _refuse_foreign(directory, RESULT_FILES)
        directory.mkdir(parents=True, exist_ok=True)
        table = paths["assignments.parquet"]
        if assignments is None:
            if table.is_dir():
                shutil.rmtree(table)  # an earlier save's shards (checked above to be ours), now one file
            atomic_write(table, lambda p: self.assignments().to_parquet(p, index=False))
        else:
            if table.is_file():
                table.unlink()  # an earlier save's single file (checked above to be ours), now shards
            atomic_folder(table, assignments)
        atomic_write(paths["clusters.json"], lambda p: Path(p).write_text(json.dumps(self.clusters_json(), indent=1)))
        atomic_write(paths["report.html"], lambda p: Path(p).write_text(render_report(self), encoding="utf-8"))
        return paths
