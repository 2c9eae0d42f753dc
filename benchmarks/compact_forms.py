"""Compact forms of the head distribution (issue 22): quality on the local suite, bytes a text and cost, one run.

    python benchmarks/compact_forms.py [--model NAME] [--limit 200] [--out out/compact_forms.json]

``fst_head`` is the square root of the LM head's distribution for the first answer token: 49,152
numbers for SmolLM2. Every candidate here is computed from the same fst_gen states (one forward
pass per corpus and question, through the store), so the table compares forms, not runs:

- ``fst_head``: the full square-root distribution (the reference);
- ``RP-d`` (d = 256, 512, 1024): the square-root distribution under the library's fixed random +-1
  projection (Johnson-Lindenstrauss; ``HeadDistribution.project``, the ``fst_head_rp`` readout for
  d = 1,024); the first d' columns of the 1,024 are RP-d';
- ``top-k`` (k = 64, 256): the k largest square-root probabilities kept, the rest zero (stored as
  k (token, weight) pairs);
- ``mean embedding``: the distribution's mean of the LM's output embeddings (hidden size);
- ``fst_gen``: the state itself (hidden size).

Bytes a text: float32 numbers (4 each), or (int32, float32) pairs for top-k. Seconds: what each
form adds to the forward pass that all share, per 1,000 texts, measured here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inbedder import InBedder
from inbedder.eval.suite import LOCAL_SUITE, local_tasks, results_table, run
from inbedder.eval.tasks import ClusteringTask, per_text_instructions
from inbedder.interface import EncodesOneAtATime

Key = tuple[str, str]
DIMENSIONS = (256, 512, 1024)
TOP_K = (64, 256)


def keys(texts: list[str], instruction: Any) -> list[Key]:
    asked = instruction if isinstance(instruction, list) else [instruction] * len(texts)
    return [(t, repr(i)) for t, i in zip(texts, asked)]


class Forms:
    """fst_gen states per (text, instruction), and every candidate form made from them."""

    def __init__(self, model: InBedder, batch_size: int) -> None:
        self.model, self.batch_size = model, batch_size
        self.states: dict[Key, np.ndarray] = {}
        self.embeddings = model.backend.model.get_output_embeddings().weight.detach().float()

    def add(self, texts: list[str], questions: list[Any]) -> None:
        missing = [q for q in questions if not all(k in self.states for k in keys(texts, q))]
        if missing:
            states = self.model.encode_multi(texts, missing, readout="fst_gen", batch_size=self.batch_size)
            for question, rows in zip(missing, states):
                self.states.update(zip(keys(texts, question), rows))

    def sqrt_probs(self, states: np.ndarray) -> torch.Tensor:
        logits = self.model.backend.vocabulary_logits(torch.as_tensor(states, dtype=torch.float32))
        return logits.softmax(-1).sqrt()

    def makers(self) -> dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]]:
        """Form name -> (states -> vectors, bytes a text)."""
        hidden = self.model.backend.hidden_size
        forms: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
            "fst_head": (lambda s: self.sqrt_probs(s).numpy(), 4 * self.model.dimension("fst_head")),
        }
        for d in DIMENSIONS:
            forms[f"RP-{d}"] = (lambda s, d=d: self.model.head.project(self.sqrt_probs(s), d).numpy(), 4 * d)
        for k in TOP_K:
            forms[f"top-{k}"] = (lambda s, k=k: self.top(s, k), 8 * k)
        forms["mean embedding"] = (lambda s: (self.sqrt_probs(s) ** 2 @ self.embeddings).numpy(), 4 * hidden)
        forms["fst_gen"] = (lambda s: np.asarray(s, dtype=np.float32), 4 * hidden)
        return forms

    def top(self, states: np.ndarray, k: int) -> np.ndarray:
        roots = self.sqrt_probs(states)
        kept = roots.topk(k, dim=-1)
        return torch.zeros_like(roots).scatter_(-1, kept.indices, kept.values).numpy()


class Form(EncodesOneAtATime):
    """One form as a model the suite can evaluate: ``encode`` looks its states up and converts them."""

    def __init__(self, make: Callable[[np.ndarray], np.ndarray], forms: Forms) -> None:
        self.make, self.forms = make, forms

    def encode(self, sentences: list[str], instruction: Any = None, options: Any = None) -> np.ndarray:
        if not sentences:
            return np.zeros((0, 1), dtype=np.float32)
        self.forms.add(list(sentences), [instruction])
        states = np.stack([self.forms.states[k] for k in keys(list(sentences), instruction)])
        return self.make(states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="an InBedder model (default: the default model)")
    parser.add_argument("--datasets", nargs="+", default=list(LOCAL_SUITE[:5]))
    parser.add_argument("--kinds", nargs="+", default=["clustering", "triplets"])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("out/compact_forms.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    model = InBedder(args.model)
    tasks = local_tasks(args.datasets, args.kinds, None, args.limit, args.seed)
    forms = Forms(model, args.batch_size)
    for task in tasks:  # every question of a corpus at once
        if isinstance(task, ClusteringTask):
            forms.add(list(task.texts), [per_text_instructions(task.instruction, task.fields)])
    makers = forms.makers()
    results = run({name: Form(make, forms) for name, (make, _) in makers.items()}, tasks)
    table = results_table(results)
    print(table)

    sample = np.stack(list(forms.states.values())[:1000])
    forward = time.perf_counter()
    model.encode([k[0] for k in list(forms.states)[:64]], "What is this text about?", readout="fst_gen")
    forward = (time.perf_counter() - forward) / 64 * 1000
    print(f"\nthe shared forward pass: {forward:.1f} s per 1,000 texts")
    print("| form | numbers | bytes a text | mean of the table's rows | seconds per 1,000 texts |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, (make, size) in makers.items():
        mean = float(np.nanmean([r.main for r in results if r.model == name]))  # a task too small to score: nan
        spent = time.perf_counter()
        vectors = make(sample)
        spent = (time.perf_counter() - spent) / len(sample) * 1000
        numbers = (vectors != 0).sum(1).max() if name.startswith("top-") else vectors.shape[1]
        print(f"| {name} | {numbers} | {size} | {mean:.3f} | {spent:.2f} |")
        summary[name] = {"numbers": int(numbers), "bytes": size, "mean": mean, "seconds_per_1000": spent}
    print(f"\n{(time.perf_counter() - started) / 60:.1f} minutes")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "table": table, "forms": summary}))


if __name__ == "__main__":
    main()
