"""Split the training sets into the parts a weighted mix takes: qa-open by group, qa-aspects capped per task.

``inbedder train`` weighs whole files (``--data PATH:WEIGHT``). This writes one JSONL file per
``qa-open`` group (topics_en, keyphrases, multilingual, forms) and a copy of ``qa-aspects`` with
at most ``--cap`` records of each closed-label task (seeded), so that no single task of a few
labels dominates the mix. ``--task-cap TASK=N`` caps one task lower, as a task whose few answers
would crowd out the open ones of the same question (qa-aspects' "style" answers every "What is the
writing style?" with "modern" or "shakespearean"):

    python scripts/training_mix.py --data-dir ../shared/data --out out/mix --cap 1200 \
        --task-cap style=300 --task-cap topic=500
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def parse_task_cap(spec: str) -> tuple[str, int]:
    """``"style=300"`` -> ``("style", 300)``."""
    task, sep, count = spec.partition("=")
    if not sep or not task or not count.isdigit():
        raise SystemExit(f"--task-cap takes TASK=N (a task name and a whole number), got {spec!r}")
    return task, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=1200, help="most records of one qa-aspects task")
    parser.add_argument(
        "--task-cap", action="append", default=[], metavar="TASK=N", help="a lower cap for one task (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task_caps = dict(parse_task_cap(spec) for spec in args.task_cap)
    args.out.mkdir(parents=True, exist_ok=True)

    groups: dict[str, list[dict]] = defaultdict(list)
    for record in read_jsonl(args.data_dir / "qa-open.jsonl"):
        groups[record["group"]].append(record)
    for group, records in sorted(groups.items()):
        write_jsonl(args.out / f"qa-open-{group}.jsonl", records)
        print(f"qa-open-{group}.jsonl: {len(records)} records")

    tasks: dict[str, list[dict]] = defaultdict(list)
    for record in read_jsonl(args.data_dir / "qa-aspects.jsonl"):
        tasks[record["task"]].append(record)
    rng = random.Random(args.seed)
    unknown = sorted(set(task_caps) - set(tasks))
    if unknown:
        raise SystemExit(f"--task-cap names tasks qa-aspects does not have: {', '.join(unknown)}")
    capped = []
    for task, records in sorted(tasks.items()):
        capped.extend(rng.sample(records, min(task_caps.get(task, args.cap), len(records))))
    write_jsonl(args.out / "qa-aspects-capped.jsonl", capped)
    print(f"qa-aspects-capped.jsonl: {len(capped)} records ({len(tasks)} tasks, at most {args.cap} each)")


if __name__ == "__main__":
    main()
