"""mteb: ``InBedderEncoder`` runs any ``Embedder`` in ``mteb.evaluate``, asking each task a question.

    import mteb
    from inbedder.integrations.mteb import InBedderEncoder

    model = InBedderEncoder("smollm2-135m-inbedder-v2", instructions={"Clustering": "What is the text about?"})
    mteb.evaluate(model, mteb.get_tasks(tasks=["TwentyNewsgroupsClustering"]))

    # your own labelled texts as a clustering task: does the model group them by your question?
    task = clustering_task("ReviewsBySatisfaction", reviews, satisfied_or_not)
    mteb.evaluate(InBedderEncoder(instruction="Is the reviewer satisfied?"), task, cache=None)

The question a task is asked: ``instructions`` looked up by the task's name, then its type
("Clustering", "Retrieval", ...), then the prompt type ("query", "document"); else ``instruction``;
else the task's own prompt, as mteb gives instruction-tuned models. The model's metadata names the
questions' digest, so mteb's result cache keeps runs with different questions apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inbedder.extras import require
from inbedder.integrations import embed_lists, embedder_of
from inbedder.options import EncodeOptions

require("mteb", "mteb")

from datasets import Dataset, DatasetDict  # noqa: E402
from mteb.abstasks.clustering import AbsTaskClustering  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta  # noqa: E402
from mteb.types import PromptType  # noqa: E402


class InBedderEncoder(AbsEncoder):
    """An mteb encoder over an ``Embedder`` (or a model name; None: the default model).

    Args:
        model: an ``Embedder`` (``InBedder``, ``GuidedEmbedder``, ...) or a model name.
        instruction: the question asked of every task that ``instructions`` does not name.
        instructions: questions by task name, task type or prompt type ("query", "document").
        options: how the model encodes (``EncodeOptions``); mteb's ``batch_size`` overrides its batch size.
    """

    def __init__(
        self,
        model: Any = None,
        instruction: str | None = None,
        instructions: Mapping[str, str] | None = None,
        options: EncodeOptions | None = None,
    ) -> None:
        self.model = embedder_of(model)
        self.instruction = instruction
        self.instructions = dict(instructions or {})
        self.options = options
        self.mteb_model_meta = model_meta(self.model, self.questions_digest())

    def question(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str:
        """The question asked of a task's texts (see the module's docstring for the order)."""
        for key in (task_metadata.name, task_metadata.type, prompt_type.value if prompt_type else None):
            if key in self.instructions:
                return self.instructions[key]
        if self.instruction is not None:
            return self.instruction
        return self.get_instruction(task_metadata, prompt_type)

    def encode(
        self,
        inputs: Any,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Unit-length vectors (float32) of every text ``inputs`` (mteb's batches) yields, asked the task's question."""
        texts = [text for batch in inputs for text in batch["text"]]
        options = self.options
        if kwargs.get("batch_size"):
            options = EncodeOptions.build(options, batch_size=int(kwargs["batch_size"]))
        rows = embed_lists(self.model, texts, self.question(task_metadata, prompt_type), options)
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)

    def questions_digest(self) -> str:
        """A short digest of the questions and options: runs that ask differently are different experiments."""
        asked = {"instruction": self.instruction, "instructions": self.instructions, "options": repr(self.options)}
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:12]


def model_meta(embedder: Any, questions: str) -> ModelMeta:
    """mteb's metadata for ``embedder``: a hub id as it is, else ``inbedder/<name>``; the revision is
    the weights' fingerprint."""
    fingerprint = getattr(embedder, "fingerprint", None)  # an InBedder's; a generic embedder has none
    revision = fingerprint[:12] if isinstance(fingerprint, str) else "unversioned"
    name = str(getattr(embedder, "name", None) or type(embedder).__name__)
    if name.count("/") != 1 or Path(name).exists():  # a registered name or a folder: inbedder/<its last part>
        name = f"inbedder/{Path(name).name}"
    return ModelMeta.create_empty(
        {
            "name": name,
            "revision": revision,
            "embed_dim": getattr(embedder, "embedding_dim", None),
            "framework": ["PyTorch", "Transformers"],
            "similarity_fn_name": "cosine",
            "use_instructions": True,
            "open_weights": True,
            "experiment_kwargs": {"questions": questions},
        }
    )


def clustering_task(
    name: str,
    texts: Sequence[str],
    labels: Sequence[Any],
    *,
    description: str = "",
    languages: Sequence[str] = ("eng-Latn",),
    samples: int = 10,
) -> AbsTaskClustering:
    """An mteb clustering task over labelled texts held in memory (v-measure of k-means, k = classes).

    Every text is embedded once; k-means then runs on ``samples`` resamples of all of them (mteb's
    bootstrap), and the task's score is the mean v-measure against ``labels``.
    """
    if len(texts) != len(labels):
        raise ValueError(f"clustering_task {name!r}: {len(texts)} texts but {len(labels)} labels")
    if len(set(labels)) < 2:
        raise ValueError(f"clustering_task {name!r}: the labels must name at least 2 classes, got {set(labels)}")
    split = Dataset.from_dict({"sentences": list(texts), "labels": [str(label) for label in labels]})
    task_metadata = TaskMetadata(
        name=name,
        description=description or f"{name}: {len(texts)} texts in {len(set(labels))} classes, held in memory.",
        dataset={"path": f"local/{name}", "revision": "in-memory"},
        type="Clustering",
        category="t2c",
        eval_splits=["test"],
        eval_langs=list(languages),
        main_score="v_measure",
    )

    class LocalClustering(AbsTaskClustering):
        metadata = task_metadata
        max_fraction_of_documents_to_embed = None
        max_documents_per_cluster = len(texts)
        n_clusters = samples

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = DatasetDict({"test": split})
            self.data_loaded = True

    LocalClustering.__name__ = LocalClustering.__qualname__ = name
    return LocalClustering()
