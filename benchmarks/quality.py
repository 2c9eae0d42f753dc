"""The local evaluation suite for InBedder models and the baselines; the table goes into BENCHMARKS.md.

    python benchmarks/quality.py --limit 200 [--model NAME ...] [--write BENCHMARKS.md]

Every dataset is subsampled to --limit records (stratified by its labels, seeded) so the whole
suite fits in an hour on a 2-core CPU. The generic baselines (--baselines: all-MiniLM-L6-v2 and
all-mpnet-base-v2 by default, each plain and with the instruction; embeddinggemma-300m plain, with
its clustering prompt and with the instruction as its task; --baselines none for none) run beside the
models, and the table's last column says, per task, whether the first model beats the best generic
row (a tie: within 0.005). With --write, the section between the bench-quality markers of that
file is replaced by this run's table, settings and command.

The InBedder rows keep their vectors in a temporary store for the run; ``--cache PATH`` keeps them
in a persistent one (``inbedder.cache``), so a run that is interrupted and started again with the
same command recomputes only what it had not finished.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

from inbedder import InBedder
from inbedder.eval import baselines
from inbedder.eval.suite import KINDS, LOCAL_SUITE, TaskResult, local_tasks, results_json, results_table, run
from inbedder.options import EncodeOptions

BEGIN, END = "<!-- bench-quality:begin -->", "<!-- bench-quality:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="InBedder model(s); default: the default model")
    parser.add_argument("--datasets", nargs="+", default=list(LOCAL_SUITE))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument(
        "--baselines", nargs="+", default=list(baselines.GENERIC_EMBEDDERS), help="generic embedders, or 'none'"
    )
    parser.add_argument("--no-raw-mean", action="store_true", help="skip the LM's mean over the raw text")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/quality.json"))
    parser.add_argument("--write", type=Path, default=None, help="markdown file whose bench-quality section to replace")
    parser.add_argument("--cache", type=Path, default=None, help="a persistent store of the InBedder rows' vectors")
    args = parser.parse_args()

    start = time.perf_counter()
    tasks = local_tasks(args.datasets, args.kinds, args.data_dir, args.limit, args.seed)
    names = args.model or [None]
    encoders = {}
    for name in names:
        model = InBedder(name)
        encoders[model.name] = model
    first = next(iter(encoders.values()))
    generic = baselines.generic_baselines(tuple(n for n in args.baselines if n != "none"))
    encoders.update(generic)
    if not args.no_raw_mean:
        encoders[f"{first.name} mean over raw text"] = baselines.RawTextMean(first, first.name)
    results = run(encoders, tasks, EncodeOptions(cache=args.cache))
    minutes = (time.perf_counter() - start) / 60

    table = with_verdict(results, first.name, list(generic)) if generic else results_table(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"limit": args.limit, "seed": args.seed, "results": results_json(results)}
    args.out.write_text(json.dumps(payload, indent=1))
    settings = {
        name: f"readout {m.readout.name}, layer {m.readout.layer}, template {template_name(m)}, "
        f"postprocess {m.postprocess}"
        for name, m in encoders.items()
        if isinstance(m, InBedder)
    }
    section = report(table, args, minutes, settings)
    if args.write:
        replace_section(args.write, section)
        print(f"wrote the table into {args.write}", file=sys.stderr)


def template_name(model: InBedder) -> str:
    from inbedder.templates import QA_PATTERN

    return "qa" if model.template.pattern == QA_PATTERN else "chat/custom"


def with_verdict(results: list[TaskResult], model: str, generic: list[str]) -> str:
    """The results table plus a column: does ``model`` beat the best of the ``generic`` rows on the task?"""
    lines = results_table(results).splitlines()
    score = {(r.task, r.model): r.main for r in results}
    tasks = list(dict.fromkeys(r.task for r in results))
    lines[0] += f" {model} vs best generic |"
    lines[1] += "---|"
    for i, task in enumerate(tasks, start=2):
        ours, best = score.get((task, model)), max(score.get((task, m), float("-inf")) for m in generic)
        lines[i] += " - |" if ours is None else f" {verdict(ours, best)} |"
    return "\n".join(lines)


def verdict(ours: float, best: float, tie: float = 0.005) -> str:
    if abs(ours - best) <= tie:
        return "ties"
    return "**wins**" if ours > best else "loses"


def report(table: str, args: argparse.Namespace, minutes: float, settings: dict[str, str]) -> str:
    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:])
    setup = "\n".join(f"- {name}: {text}" for name, text in settings.items())
    return f"""{BEGIN}
Command (`make bench-quality` runs it): `{command}`

Run {datetime.date.today().isoformat()}, {minutes:.0f} minutes. Each dataset subsampled to {args.limit} records
(stratified by its labels, seed {args.seed}); triplets are built from those records (500 per aspect
where they allow, seeded). Clustering: k-means with k = classes, v-measure mean ± std over 5
seeds; triplets: success rate; robustness: the clustering task's v-measure averaged over the
card's paraphrased / implicit / incorrect instructions (a model that follows instructions scores
high, high, low); STS: Spearman. InBedder settings:
{setup}

{table}
{END}"""


def replace_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Quality: the local suite (`make bench-quality`)\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
