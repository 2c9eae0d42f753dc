"""Raw states and answers of a clustering run, saved chunk by chunk so that no finished work is lost."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from inbedder.tables import atomic_write

logger = logging.getLogger(__name__)


class EmbeddingStore:
    """The corpus embedded under every instruction, computed in chunks of texts.

    With a ``directory``, each finished chunk is written to ``DIR/embeddings/`` at once; a
    later run with the same fingerprint (model, template, readout, layer, length limits,
    instructions, texts) reads the chunks it finds and computes only the rest.
    """

    def __init__(
        self, directory: str | Path | None, model: Any, texts: list[str], instructions: list[str], max_new_tokens: int
    ) -> None:
        self.model, self.texts, self.instructions = model, texts, instructions
        self.max_new_tokens = max_new_tokens
        self.directory = Path(directory) / "embeddings" if directory is not None else None
        self.fingerprint = _fingerprint(
            model=model.name,
            template=model.template.pattern,
            readout=model.readout.name,
            layer=model.readout.layer,
            max_length=model.max_seq_length,
            max_new_tokens=max_new_tokens,
            instructions=instructions,
            texts=hashlib.sha256("\0".join(texts).encode()).hexdigest(),
        )

    def compute(self, chunk_size: int, **encode_kwargs: Any) -> tuple[list[np.ndarray], list[list[str]]]:
        """Raw states (one (n, dim) array per instruction) and answers (one list per instruction)."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
        starts = range(0, len(self.texts), chunk_size)
        self._prepare()
        chunks = []
        for start in tqdm(starts, desc="embed chunks", unit="chunk", disable=len(starts) == 1):
            chunk = self._load(start)
            if chunk is None:
                chunk = self._encode(self.texts[start : start + chunk_size], **encode_kwargs)
                self._save(start, *chunk)
            chunks.append(chunk)
        states = [np.concatenate([c[0][k] for c in chunks]) for k in range(len(self.instructions))]
        answers = [[a for c in chunks for a in c[1][k]] for k in range(len(self.instructions))]
        return states, answers

    def _encode(self, texts: Sequence[str], **encode_kwargs: Any) -> tuple[np.ndarray, list[list[str]]]:
        results = self.model.encode_multi(
            list(texts),
            self.instructions,
            postprocess="none",
            return_generations=True,
            max_new_tokens=self.max_new_tokens,
            **encode_kwargs,
        )
        return np.stack([vectors for vectors, _ in results]), [list(answers) for _, answers in results]

    def _prepare(self) -> None:
        """Create the directory; drop chunks of a run with another fingerprint."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.directory / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") == self.fingerprint:
            return
        stale = sorted(self.directory.glob("chunk-*.npz"))
        if stale:
            logger.info("embeddings in %s are from another corpus or settings; recomputing", self.directory)
        for path in stale:
            path.unlink()
        atomic_write(manifest, lambda p: p.write_text(json.dumps({"fingerprint": self.fingerprint})))

    def _path(self, start: int) -> Path | None:
        return self.directory / f"chunk-{start:08d}.npz" if self.directory is not None else None

    def _load(self, start: int) -> tuple[np.ndarray, list[list[str]]] | None:
        path = self._path(start)
        if path is None or not path.exists():
            return None
        with np.load(path, allow_pickle=False) as saved:
            return saved["states"], saved["answers"].tolist()

    def _save(self, start: int, states: np.ndarray, answers: list[list[str]]) -> None:
        path = self._path(start)
        if path is not None:
            atomic_write(path, lambda p: np.savez(p, states=states, answers=np.array(answers, dtype=str)))


def _fingerprint(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
