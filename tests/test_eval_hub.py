"""The hub datasets' loading path, on local files in the same schema, and its offline message."""

import json

import pytest

from inbedder.eval import ClusteringTask, TripletTask
from inbedder.eval.hub import HUB_TASKS, load_hub_task


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_clustering_schema(tmp_path):
    rows = [{"text": f"news {i}", "cluster": i % 3} for i in range(9)]
    task = load_hub_task("NYTClustering/topic", write_jsonl(tmp_path / "nyt.jsonl", rows))
    assert isinstance(task, ClusteringTask)
    assert task.texts == [r["text"] for r in rows] and task.labels == [str(r["cluster"]) for r in rows]
    assert task.instruction == HUB_TASKS["NYTClustering/topic"].instruction


def test_triplet_schema(tmp_path):
    rows = [{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(4)]
    task = load_hub_task("IntentEmotion/emotion", write_jsonl(tmp_path / "ie.jsonl", rows))
    assert isinstance(task, TripletTask)
    assert (task.anchors, task.negatives) == (["a0", "a1", "a2", "a3"], ["n0", "n1", "n2", "n3"])
    assert task.instruction == "How does the customer feel?"


def test_wrong_schema_and_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"columns \['cluster'\] missing"):
        load_hub_task("FewRelClustering", write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": 1}]))
    with pytest.raises(ValueError, match="unknown hub task 'Nope'"):
        load_hub_task("Nope")


def test_unreachable_hub_is_one_clear_error(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # the libraries read HF_HUB_OFFLINE at import; set their flags as the variable would have
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ConnectionError, match=r"cannot load FeedbacksClustering from the Hugging Face hub \(BrandonZYW/"
    ):
        load_hub_task("FeedbacksClustering")
