"""Running tasks over several models, and reporting the results."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from inbedder.errors import InputError
from inbedder.eval.datasets import clustering_tasks, load_local, robustness_tasks, sts_task, triplet_tasks
from inbedder.eval.tasks import ClusteringTask, RobustnessTask, per_text_instructions
from inbedder.options import EncodeOptions

LOCAL_SUITE = ("syngoalex", "amazon-reviews", "stance", "fewrel", "banking77", "stsb-test")
KINDS = ("clustering", "triplets", "robustness", "sts")


@dataclass
class TaskResult:
    task: str
    kind: str
    model: str
    main_score: str
    scores: dict[str, Any]
    seconds: float

    @property
    def main(self) -> float:
        return (
            self.scores[self.main_score] if self.kind != "robustness" else self.scores.get("paraphrases", float("nan"))
        )


def local_tasks(
    datasets: Sequence[str] = LOCAL_SUITE,
    kinds: Sequence[str] = KINDS,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Any]:
    """The local suite's tasks; ``limit`` subsamples each dataset (stratified, seeded)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise InputError(f"unknown task kinds {sorted(unknown)}; choose from {list(KINDS)}")
    tasks: list[Any] = []
    for name in datasets:
        data = load_local(name, data_dir)
        if limit is not None:
            data = data.subsample(limit, seed)
        if data.records and "sentence1" in data.records[0]:
            tasks += [sts_task(data)] if "sts" in kinds else []
            continue
        tasks += clustering_tasks(data) if "clustering" in kinds else []
        tasks += triplet_tasks(data, seed=seed) if "triplets" in kinds else []
        tasks += robustness_tasks(data) if "robustness" in kinds else []
    return tasks


def run(models: dict[str, Any], tasks: Sequence[Any], options: EncodeOptions | None = None) -> list[TaskResult]:
    """Every task for every model; each result says what it measured and how long it took.

    The models share one store of raw vectors (``inbedder.cache``): ``options.cache`` if it names
    one, else a temporary one for this run (``cache=False``: none). A model that ``shares_prefixes``
    first embeds each corpus once under all the instructions its clustering tasks ask (robustness
    rewordings included), reusing the shared prompt prefix; the tasks' own ``encode`` calls then
    find their rows in the store, and post-process them over each call's texts.
    """
    options = options or EncodeOptions()
    with contextlib.ExitStack() as stack:
        if options.cache is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="inbedder-eval-"))
            options = replace(options, cache=Path(folder) / "embeddings.sqlite")
        results = []
        for model_name, model in models.items():
            if getattr(model, "shares_prefixes", False) and options.cache is not False:
                _embed_corpora(model, tasks, options)
            for task in tasks:
                start = time.perf_counter()
                scores = task.evaluate(model, options)
                seconds = time.perf_counter() - start
                results.append(TaskResult(task.name, task.kind, model_name, task.main_score, scores, seconds))
    return results


def _clustering_questions(task: Any) -> list[tuple[ClusteringTask, Any]]:
    """(clustering task, instruction as the model gets it) for each question a task will ask."""
    if isinstance(task, ClusteringTask):
        return [(task, per_text_instructions(task.instruction, task.fields))]
    if isinstance(task, RobustnessTask) and isinstance(task.base, ClusteringTask):
        base = task.base
        return [(base, per_text_instructions(i, base.fields)) for group in task.groups.values() for i in group]
    return []


def _embed_corpora(model: Any, tasks: Sequence[Any], options: EncodeOptions) -> None:
    """Fill the store: one ``encode_multi`` call per corpus that is asked several questions."""
    corpora: dict[tuple[str, ...], dict[Any, Any]] = {}
    for task in tasks:
        for base, instruction in _clustering_questions(task):
            key = tuple(instruction) if isinstance(instruction, list) else instruction
            corpora.setdefault(tuple(base.texts), {})[key] = instruction
    for texts, questions in corpora.items():
        if len(questions) > 1:
            model.encode_multi(list(texts), list(questions.values()), options)


def results_table(results: Sequence[TaskResult]) -> str:
    """A markdown table: one row per task, one column per model, the task's main score.

    Robustness rows show the paraphrase / implicit / incorrect means.
    """
    models = list(dict.fromkeys(r.model for r in results))
    tasks = list(dict.fromkeys(r.task for r in results))
    cell = {(r.task, r.model): r for r in results}
    lines = ["| task | score | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for task in tasks:
        first = next(cell[(task, m)] for m in models if (task, m) in cell)
        label = "paraphrase / implicit / incorrect" if first.kind == "robustness" else first.main_score
        values = [_format(cell.get((task, m))) for m in models]
        lines.append(f"| {task} | {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def _format(result: TaskResult | None) -> str:
    if result is None:
        return ""
    if result.kind == "robustness":
        return " / ".join(
            f"{result.scores[g]:.3f}" if g in result.scores else "-" for g in ("paraphrases", "implicit", "incorrect")
        )
    std = result.scores.get(f"{result.main_score}_std")
    return f"{result.main:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def results_json(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
