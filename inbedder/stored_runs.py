"""One encode call's batches: those the store lacks run through the model, each stored as it finishes.

``call_session`` is the store's view of a call (None: no store, or results that are not
reproducible); ``run_batches`` fills the raw vectors and answers from it, runs the rest through the
runner and the readout stage, and copies the results of prompts the call repeats.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from inbedder.backends import AnswerStates, GenerationSettings
from inbedder.cache import EmbeddingCache
from inbedder.fingerprints import prompt_key, settings_fingerprint, weights_fingerprint
from inbedder.options import EncodeOptions
from inbedder.pooling import ReadoutStage
from inbedder.readout import Readout
from inbedder.runner import Prompts, Runner

logger = logging.getLogger(__name__)


def call_session(
    store: EmbeddingCache | None,
    model: str,
    model_name: str,
    prompts: Prompts,
    spec: Readout,
    layer: int,
    settings: GenerationSettings | None,
    seed: int | None,
    reencoder: Callable[[], Any],
) -> CacheSession | None:
    """The store's view of one call (``model``: the model's fingerprint), or None: no store, or results
    that are not reproducible.

    The key's settings are the readout (with its resolved layer and filter words) and, when the
    call generates, the decoding settings; the prompt's token ids stand for text, instruction,
    template, fields and truncation. Sampling without a ``seed``, and ``re_encode`` with a
    re-encoder that is not a torch module, are not cached.
    """
    if store is None:
        return None
    parts: dict[str, Any] = {
        "readout": [spec.name, spec.kind.definition],  # what it computes, not only its name
        "layer": layer,
        "filter_words": sorted(spec.filter_words),
        "generation": None,  # a single pass
    }
    if settings is not None:
        if settings.sampling and seed is None:
            logger.info("not cached: sampling (temperature %s) without a seed differs run by run", settings.temperature)
            return None
        parts["generation"] = {**asdict(settings), "seed": seed if settings.sampling else None}
    if spec.kind.reencodes:
        embedder = reencoder()
        if not isinstance(embedder, torch.nn.Module):
            logger.info("not cached: re-encoder %s is not a torch module to fingerprint", type(embedder).__name__)
            return None
        parts["reencoder"] = [type(embedder).__qualname__, weights_fingerprint(embedder)]
    return CacheSession(store, model, settings_fingerprint(**parts), model_name, prompts)


def run_batches(
    runner: Runner,
    stage: ReadoutStage,
    prompts: Prompts,
    layer: int,
    settings: GenerationSettings | None,
    options: EncodeOptions,
    session: CacheSession | None,
    decode: Callable[[AnswerStates], list[str]],
) -> tuple[torch.Tensor, list[list[Any]]]:
    """Raw vectors (instructions, texts, dim) and answers: from the store, else from the runner
    and the readout stage, each finished batch stored at once (an interrupted run keeps it)."""
    n, n_prompts = len(prompts[0]), len(prompts)
    embeddings = torch.empty((n_prompts, n, stage.dimension), dtype=torch.float32)
    answers: list[list[Any]] = [[""] * n for _ in prompts]
    todo, copies = list(range(n)), {}
    if session is not None:
        found, todo, copies = session.lookup()
        for i, rows in found.items():
            for k, (vector, answer) in enumerate(rows):
                embeddings[k, i] = torch.from_numpy(vector.copy())
                answers[k][i] = answer
    plan = runner.plan(prompts, todo, options.batch_size)
    samples = settings.num_samples if settings is not None else 1
    with seeded(options.seed if settings is not None else None, runner.backend.device):
        for batch in tqdm(plan.batches, desc="encode", unit="batch", disable=not options.show_progress_bar):
            runs = [runner.run(plan, batch, layer, settings) for _ in range(samples)]
            for k in range(n_prompts):
                gens = [run[k] for run in runs]
                said = [decode(gen) for gen in gens] if settings is not None else [[]]
                embeddings[k, batch] = stage(gens, said).float().cpu()
                for i, answer in zip(batch, said[0] if samples == 1 else [list(a) for a in zip(*said)]):
                    answers[k][i] = answer
            if session is not None:
                done = [(embeddings[k, batch].numpy(), [answers[k][i] for i in batch]) for k in range(n_prompts)]
                session.save(batch, done)
    for i, source in copies.items():  # a prompt the call repeats ran once
        embeddings[:, i] = embeddings[:, source]
        for k in range(n_prompts):
            answers[k][i] = copy.deepcopy(answers[k][source])
    return embeddings, answers


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed sampling for one call without touching the caller's random state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class CacheSession:
    """One encode call's use of a store: which texts to run, what was found, and writing each batch.

    ``prompts`` holds, per instruction, each text's token ids; a text is complete when its rows
    under every instruction are stored. Among texts that miss, those with identical prompts run once.
    """

    def __init__(
        self,
        store: EmbeddingCache,
        model: str,
        settings: str,
        model_name: str,
        prompts: list[list[list[int]]],
    ) -> None:
        self.store, self.model, self.settings, self.model_name = store, model, settings, model_name
        self.keys = [[prompt_key(ids) for ids in per_text] for per_text in prompts]

    def lookup(self) -> tuple[dict[int, list[tuple[np.ndarray, Any]]], list[int], dict[int, int]]:
        """Texts found ({text: [(vector, answer) per instruction]}), texts to run, and {duplicate: text it copies}."""
        stored = self.store.get_many(self.model, self.settings, (key for keys in self.keys for key in keys))
        found: dict[int, list[tuple[np.ndarray, Any]]] = {}
        todo: list[int] = []
        copies: dict[int, int] = {}
        first: dict[tuple[str, ...], int] = {}
        for i, keys in enumerate(zip(*self.keys)):
            if all(key in stored for key in keys):
                found[i] = [(stored[key][0], json.loads(stored[key][1])) for key in keys]
            elif keys in first:
                copies[i] = first[keys]
            else:
                first[keys] = i
                todo.append(i)
        return found, todo, copies

    def save(self, batch: list[int], results: list[tuple[Any, list[Any]]]) -> int:
        """Store one finished batch: per instruction, the raw vectors (B, dim) and answers of ``batch``."""
        rows = [
            (self.keys[k][i], vectors[row], answer)
            for k, (vectors, answers) in enumerate(results)
            for row, (i, answer) in enumerate(zip(batch, answers))
        ]
        return self.store.put_many(self.model, self.settings, self.model_name, rows)
