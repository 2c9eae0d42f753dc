"""Does a flatter LM-head distribution cluster topics better? fst_head at several softmax temperatures,
and the head over other states (``--states avg_gen``: the mean over the greedy answer's states).

``fst_head`` is sqrt(softmax(logits)) of the first answer token. Dividing the logits by a
temperature T > 1 spreads the mass over more tokens (synonyms, related words), which may help
questions whose answers vary in wording (topics). The fst_gen states are computed once (the
suite's store) and every variant is derived from them, so the variants cost no model work.

    python benchmarks/head_temperature.py [--model NAME] [--limit 200] [--temperatures 1 2 4] [--states fst_gen]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from inbedder import EncodeOptions, InBedder
from inbedder.eval.suite import local_tasks, results_table, run
from inbedder.interface import EncodesOneAtATime


class HeadAt(EncodesOneAtATime):
    """The LM head over ``model``'s ``state`` readout, at softmax temperature ``t`` (square roots)."""

    def __init__(self, model: InBedder, t: float, state: str = "fst_gen", max_new_tokens: int = 3) -> None:
        self.model, self.t, self.state, self.max_new_tokens = model, t, state, max_new_tokens

    def encode(self, sentences: list[str], instruction: Any = None, options: EncodeOptions | None = None) -> Any:
        asked = EncodeOptions.build(options, readout=self.state, max_new_tokens=self.max_new_tokens)
        states = self.model.encode(sentences, instruction, asked)
        with torch.inference_mode():
            logits = self.model.backend.vocabulary_logits(torch.as_tensor(states))
        return (logits / self.t).softmax(-1).sqrt().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--datasets", nargs="+", default=["syngoalex", "amazon-reviews", "stance"])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--states", nargs="+", default=["fst_gen"], help="readouts the head reads")
    args = parser.parse_args()

    model = InBedder(args.model)
    tasks = local_tasks(args.datasets, ["clustering", "triplets"], None, args.limit, 0)
    encoders = {f"head({state}) T={t:g}": HeadAt(model, t, state) for state in args.states for t in args.temperatures}
    results = run(encoders, tasks)
    print(results_table(results))
    for name in encoders:
        scores = [r.main for r in results if r.model == name]
        print(f"{name}: mean {np.mean(scores):.3f} over {len(scores)} tasks")


if __name__ == "__main__":
    main()
