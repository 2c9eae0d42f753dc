"""Evaluation of instruction awareness: tasks over any model with ``encode``, built from datasets."""

from inbedder.extras import require

require("eval", "sklearn", "scipy")

from inbedder.eval.datasets import LocalDataset, clustering_tasks, load_local, robustness_tasks, triplet_tasks
from inbedder.eval.tasks import ClusteringTask, RobustnessTask, STSTask, TripletTask

__all__ = [
    "ClusteringTask",
    "LocalDataset",
    "RobustnessTask",
    "STSTask",
    "TripletTask",
    "clustering_tasks",
    "load_local",
    "robustness_tasks",
    "triplet_tasks",
]
