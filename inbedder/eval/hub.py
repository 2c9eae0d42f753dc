"""The original paper's evaluation sets on the Hugging Face hub, declared as data (as mteb does).

Clustering sets have ``text`` and ``cluster`` columns; IntentEmotion has ``anchor``,
``positive`` and ``negative``. The same loader reads local JSON Lines files in that schema, so
the path is testable offline; with the hub out of reach it says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inbedder.errors import InputError
from inbedder.eval.tasks import ClusteringTask, TripletTask
from inbedder.extras import require

NAMESPACE = "BrandonZYW"


@dataclass(frozen=True)
class HubTask:
    name: str
    dataset: str
    kind: str  # "clustering" or "triplets"
    instruction: str
    config: str | None = None
    split: str = "test"
    revision: str | None = None

    @property
    def hub_id(self) -> str:
        return f"{NAMESPACE}/{self.dataset}"


# IntentEmotion's instructions are the original's; the clustering instructions are ours.
HUB_TASKS: dict[str, HubTask] = {
    t.name: t
    for t in [
        HubTask("IntentEmotion/intent", "IntentEmotion", "triplets", "What does the customer need?", "intent"),
        HubTask("IntentEmotion/emotion", "IntentEmotion", "triplets", "How does the customer feel?", "emotion"),
        HubTask("NYTClustering/topic", "NYTClustering", "clustering", "What is the topic of this news?", "topic"),
        HubTask("NYTClustering/location", "NYTClustering", "clustering", "Where did the news happen?", "location"),
        HubTask(
            "RateMyProfClustering", "RateMyProfClustering", "clustering", "What aspect of the professor is discussed?"
        ),
        HubTask("FeedbacksClustering", "FeedbacksClustering", "clustering", "What is the feedback about?"),
        HubTask("FewRelClustering", "FewRelClustering", "clustering", "What is the relation between the entities?"),
        HubTask("FewNerdClustering", "FewNerdClustering", "clustering", "What is the type of the entity?"),
        HubTask("FewEventClustering", "FewEventClustering", "clustering", "What type of event is described?"),
    ]
}


def load_hub_task(name: str, data_files: str | Path | None = None) -> ClusteringTask | TripletTask:
    """The task ``name`` (see ``HUB_TASKS``), from the hub or from local files in the same schema."""
    require("eval", "datasets")
    import datasets

    if name not in HUB_TASKS:
        raise InputError(f"unknown hub task {name!r}; available: {sorted(HUB_TASKS)}")
    spec = HUB_TASKS[name]
    try:
        if data_files is not None:
            rows = datasets.load_dataset("json", data_files=str(data_files), split="train")
        else:
            rows = datasets.load_dataset(spec.hub_id, spec.config, split=spec.split, revision=spec.revision)
    except (ConnectionError, OSError, ValueError) as err:
        where = data_files if data_files is not None else f"the Hugging Face hub ({spec.hub_id})"
        raise ConnectionError(f"cannot load {name} from {where}: {type(err).__name__}: {err}") from err
    columns = {"clustering": ["text", "cluster"], "triplets": ["anchor", "positive", "negative"]}[spec.kind]
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise InputError(f"{name}: columns {missing} missing; found {rows.column_names}")
    if spec.kind == "clustering":
        return ClusteringTask(name, list(rows["text"]), [str(c) for c in rows["cluster"]], spec.instruction)
    return TripletTask(name, list(rows["anchor"]), list(rows["positive"]), list(rows["negative"]), spec.instruction)
