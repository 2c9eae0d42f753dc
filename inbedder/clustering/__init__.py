"""Personalized clustering: one corpus clustered under each instruction, every cluster explained."""

from inbedder.extras import require

require("cluster", "sklearn")

from inbedder.clustering.pipeline import cluster
from inbedder.clustering.result import NOISE, ClusteringResult, ClusterSummary, InstructionClustering

__all__ = ["NOISE", "ClusterSummary", "ClusteringResult", "InstructionClustering", "cluster"]
