"""Which defaults follow instructions best: template x readout x layer x post-processing, on the dev sets.

Each (template, readout, layer) embeds the subsampled corpora once; the post-processing variants
reuse those raw states. Scores: clustering v-measure (mean over 5 k-means seeds) and triplet
success for every aspect of each dataset. Results are appended to a JSON file after each
configuration, so an interrupted run keeps what it finished and a rerun skips it.

    python benchmarks/defaults_study.py --limit 200 --out out/defaults-study.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inbedder import InBedder
from inbedder.eval.suite import local_tasks, run
from inbedder.options import EncodeOptions
from inbedder.postprocess import POSTPROCESSING


class _Variant:
    """One configuration and post-processing as an encoder the suite runs: the suite's options (its
    store) with this variant's settings, so the variants of a configuration share its raw rows."""

    def __init__(self, model: InBedder, **settings: Any) -> None:
        self.model, self.settings = model, settings

    def encode(self, sentences: Sequence[str], instruction: Any = None, options: EncodeOptions | None = None) -> Any:
        return self.model.encode(sentences, instruction, EncodeOptions.build(options, **self.settings))

    def encode_multi(self, sentences: Sequence[str], instructions: Sequence[Any], options: EncodeOptions | None = None):
        return self.model.encode_multi(sentences, instructions, EncodeOptions.build(options, **self.settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--datasets", nargs="+", default=["syngoalex", "amazon-reviews"])
    parser.add_argument("--templates", nargs="+", default=["qa", "chat"])
    parser.add_argument("--readouts", nargs="+", default=["fst_gen", "avg_ppt"])
    parser.add_argument("--layers", nargs="+", type=int, default=[-1, 24, 18, 12, 6])
    parser.add_argument("--postprocess", nargs="+", default=list(POSTPROCESSING))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/defaults-study.json"))
    args = parser.parse_args()

    tasks = local_tasks(args.datasets, ("clustering", "triplets"), args.data_dir, args.limit, args.seed)
    model = InBedder(args.model)
    done = json.loads(args.out.read_text()) if args.out.exists() else []
    finished = {(r["template"], r["readout"], r["layer"], r["postprocess"]) for r in done}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for template, readout, layer in itertools.product(args.templates, args.readouts, args.layers):
        methods = [m for m in args.postprocess if (template, readout, layer, m) not in finished]
        if not methods:
            continue
        config = dict(template=template, readout=readout, layer=layer)
        start = time.perf_counter()
        results = run({m: _Variant(model, postprocess=m, **config) for m in methods}, tasks)
        seconds = time.perf_counter() - start
        for method in methods:
            scores = {r.task: r.main for r in results if r.model == method}
            done.append(dict(template=template, readout=readout, layer=layer, postprocess=method, scores=scores))
            print(json.dumps(done[-1]), f"({seconds:.0f} s)", flush=True)
        args.out.write_text(json.dumps(done, indent=1))
    print(table(done, args.datasets))


def table(rows: list[dict[str, Any]], datasets: Sequence[str]) -> str:
    """Markdown: one row per setting, its main scores, and each dataset's mean over its tasks."""
    tasks = list(dict.fromkeys(t for r in rows for t in r["scores"]))
    means = {d: [t for t in tasks if t.startswith(f"{d}/")] for d in datasets}
    head = ["template", "readout", "layer", "postprocess", *(f"{d} mean" for d in datasets), *tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -np.mean([r["scores"][t] for t in tasks])):
        cells = [r["template"], r["readout"], str(r["layer"]), r["postprocess"]]
        cells += [f"{np.mean([r['scores'][t] for t in ts]):.3f}" for ts in means.values()]
        cells += [f"{r['scores'][t]:.3f}" for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
