"""Post-processing of hidden states over a corpus, before any normalization.

A language model's hidden states carry a few dimensions with huge values in every text; they
dominate cosine similarity and k-means distances, so that all raw states look alike. Centering
removes what every text of the corpus shares; standardizing also scales each dimension to unit
variance, so that no dimension outweighs the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inbedder.errors import InputError

if TYPE_CHECKING:
    import torch

POSTPROCESSING: dict[str, str] = {
    "none": "the raw hidden states",
    "center": "minus the corpus mean of each dimension",
    "standardize": "minus the corpus mean, divided by the corpus standard deviation of each dimension",
}


def check_postprocess(name: str, rows: int | None = None) -> str:
    """``name`` if it is a known method that can run over ``rows`` texts; a clear error if not."""
    if name not in POSTPROCESSING:
        raise InputError(f"unknown postprocess {name!r}; choose one of {list(POSTPROCESSING)}")
    if name != "none" and rows is not None and rows < 2:
        raise InputError(
            f"postprocess={name!r} uses statistics over the texts of one call and needs at least 2 texts, "
            f"got {rows}; encode the whole corpus at once or use postprocess='none'"
        )
    return name


def postprocess(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    """``embeddings`` (n, dim) post-processed with statistics over its n rows.

    The corpus methods need at least two rows: one text has no corpus to compare with.
    """
    if check_postprocess(name, embeddings.shape[0]) == "none":
        return embeddings
    centered = embeddings - embeddings.mean(0, keepdim=True)
    if name == "center":
        return centered
    return centered / embeddings.std(0, keepdim=True).clamp(min=1e-6)
