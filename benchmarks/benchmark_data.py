"""What the benchmark scripts share: the default benchmark set, its texts and its instructions."""

from __future__ import annotations

import sys
from pathlib import Path

from inbedder.eval import load_local

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "syngoalex.dev.jsonl"


def load_texts_and_instructions(path: Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """The first ``limit`` texts of a local set (``NAME[.dev].jsonl`` beside ``NAME.card.json``)
    and the main instruction of each of its aspects, in card order."""
    if not path.is_file():
        sys.exit(f"benchmark data not found: {path} (pass --data)")
    data = load_local(path.name.split(".")[0], path.parent)
    return data.texts[:limit], [aspect["instruction"] for aspect in data.aspects.values()]
