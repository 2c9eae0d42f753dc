"""Evaluation tasks on hand-made embeddings and a tiny crossed dataset, with answers known by hand."""

import json
from itertools import product

import numpy as np
import pytest

from inbedder.eval import (
    ClusteringTask,
    RobustnessTask,
    STSTask,
    TripletTask,
    clustering_tasks,
    load_local,
    robustness_tasks,
    triplet_tasks,
)
from inbedder.eval.tasks import score_clustering, score_sts, score_triplets
from inbedder.interface import EncodesOneAtATime
from inbedder.options import EncodeOptions

COLOURS, SHAPES = ["red", "blue"], ["circle", "square"]


class AspectEncoder(EncodesOneAtATime):
    """Embeds a text as a one-hot of whichever aspect the instruction asks about (shape otherwise)."""

    def __init__(self):
        self.calls = []

    def encode(self, sentences, instruction=None, options=None):
        self.calls.append((list(sentences), instruction))
        instructions = instruction if isinstance(instruction, list) else [instruction] * len(sentences)
        vectors = []
        for text, asked in zip(sentences, instructions):
            colour, shape = text.split()[:2]
            if asked and "colour" in asked:
                vectors.append([1.0, 0.0] if colour == "red" else [0.0, 1.0])
            else:
                vectors.append([1.0, 0.0] if shape == "circle" else [0.0, 1.0])
        return np.array(vectors)


@pytest.fixture
def crossed_dir(tmp_path):
    """A fully crossed set: 2 colours x 2 shapes x 4 texts, with a card of instructions."""
    records = [
        {"id": f"{c}-{s}-{i}", "text": f"{c} {s} number{i}", "owner": f"o{i}", "labels": {"colour": c, "shape": s}}
        for c, s, i in product(COLOURS, SHAPES, range(4))
    ]
    (tmp_path / "toys.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    card = {
        "name": "toys",
        "aspects": {
            "colour": {
                "classes": COLOURS,
                "instruction": "What colour is {owner}'s toy?",
                "paraphrases": ["Which colour?", "Which hue?"],
                "incorrect": ["What shape is it?"],
            },
            "shape": {"classes": SHAPES, "instruction": "What shape is it?"},
        },
    }
    (tmp_path / "toys.card.json").write_text(json.dumps(card))
    return tmp_path


def test_v_measure_is_one_for_separated_classes_and_zero_for_independent_ones():
    labels = ["a"] * 5 + ["b"] * 5
    separated = np.array([[0.0, 0.0]] * 5 + [[10.0, 10.0]] * 5)
    assert score_clustering(separated, labels, seeds=[0, 1]) == {"v_measure": 1.0, "v_measure_std": 0.0}
    four_and_four = np.array([[0.0, 0.0]] * 4 + [[10.0, 10.0]] * 4)
    crossed = ["a", "b"] * 4  # each of the two clusters holds both labels, two of each
    assert score_clustering(four_and_four, crossed, seeds=[0])["v_measure"] == pytest.approx(0.0, abs=1e-12)


def test_triplet_accuracy_counts_wins():
    anchors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    positives = np.array([[1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    negatives = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
    assert score_triplets(anchors, positives, negatives) == {"accuracy": pytest.approx(2 / 3)}


def test_sts_spearman_follows_the_order_of_similarities():
    first = np.array([[1.0, 0.0]] * 4)
    second = np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])  # cosine falls row by row
    assert score_sts(first, second, [5, 4, 2, 0])["spearman"] == pytest.approx(1.0)
    assert score_sts(first, second, [0, 1, 2, 3])["spearman"] == pytest.approx(-1.0)


def test_clustering_task_fills_fields_and_follows_the_instruction():
    texts = [f"{c} {s} x" for c, s in product(COLOURS, SHAPES)] * 2
    colours = [t.split()[0] for t in texts]
    encoder = AspectEncoder()
    task = ClusteringTask(
        "t", texts, colours, "What colour is {owner}'s?", fields=[{"owner": str(i)} for i in range(8)]
    )
    assert task.evaluate(encoder)["v_measure"] == pytest.approx(1.0)
    assert encoder.calls[-1][1] == [f"What colour is {i}'s?" for i in range(8)]
    assert task.with_instruction("What shape?").evaluate(encoder)["v_measure"] == pytest.approx(0.0, abs=1e-12)


def test_triplet_and_sts_tasks_embed_each_text_once():
    encoder = AspectEncoder()
    task = TripletTask(
        "t",
        ["red circle a", "blue square b"],
        ["red square c", "blue circle d"],
        ["blue circle e", "red square c"],
        "Which colour?",
    )
    assert task.evaluate(encoder) == {"accuracy": 1.0}
    ((texts, instruction),) = encoder.calls
    assert len(texts) == len(set(texts)) == 5 and instruction == "Which colour?"
    sts = STSTask("s", ["red circle a", "red circle a"], ["red circle b", "red square c"], [5.0, 1.0])
    assert sts.evaluate(encoder)["spearman"] == pytest.approx(1.0)


def test_tasks_from_a_local_card(crossed_dir):
    data = load_local("toys", crossed_dir)
    tasks = clustering_tasks(data)
    assert [t.name for t in tasks] == ["toys/colour/clustering", "toys/shape/clustering"]
    scores = [t.evaluate(AspectEncoder())["v_measure"] for t in tasks]
    assert scores == [pytest.approx(1.0), pytest.approx(1.0)]


def test_triplets_differ_only_in_the_asked_aspect(crossed_dir):
    data = load_local("toys", crossed_dir)
    labels = {r["text"]: r["labels"] for r in data.records}
    colour_task, shape_task = triplet_tasks(data, per_aspect=50, seed=3)
    for task, asked, other in [(colour_task, "colour", "shape"), (shape_task, "shape", "colour")]:
        assert len(task.anchors) == 50
        for a, p, n in zip(task.anchors, task.positives, task.negatives):
            assert labels[a][asked] == labels[p][asked] != labels[n][asked]
            assert labels[a][other] == labels[n][other] != labels[p][other]
    assert colour_task.evaluate(AspectEncoder())["accuracy"] == 1.0
    assert shape_task.evaluate(AspectEncoder())["accuracy"] == 1.0
    again = triplet_tasks(data, per_aspect=50, seed=3)[0]
    other_seed = triplet_tasks(data, per_aspect=50, seed=4)[0]
    assert again.anchors == colour_task.anchors and again.negatives == colour_task.negatives
    assert other_seed.anchors != colour_task.anchors


def test_robustness_scores_each_group(crossed_dir):
    (task,) = robustness_tasks(load_local("toys", crossed_dir))  # only 'colour' has extra wordings
    assert isinstance(task, RobustnessTask) and task.name == "toys/colour/clustering/robustness"
    result = task.evaluate(AspectEncoder())
    assert result["paraphrases"] == pytest.approx(
        0.5
    )  # "Which colour?" -> 1; "Which hue?" -> 0 (the encoder misses it)
    assert result["paraphrases_each"] == {"Which colour?": pytest.approx(1.0), "Which hue?": pytest.approx(0.0)}
    assert result["incorrect"] == pytest.approx(0.0)


def test_load_local_errors_name_what_is_missing(crossed_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dataset 'nope' .* available: \['toys'\]"):
        load_local("nope", crossed_dir)
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_local("toys", tmp_path / "missing")
    (crossed_dir / "broken.jsonl").write_text("{not json\n")
    (crossed_dir / "broken.card.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot read dataset 'broken'"):
        load_local("broken", crossed_dir)
    with pytest.raises(ValueError, match="has no aspect 'size'"):
        load_local("toys", crossed_dir).labels("size")


def test_mismatched_task_inputs_are_refused():
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        ClusteringTask("t", ["a", "b", "c"], ["x", "y"], None)
    with pytest.raises(ValueError, match="differ in number"):
        TripletTask("t", ["a"], ["b", "c"], ["d"], None)


def test_subsample_is_stratified_and_seeded(crossed_dir):
    data = load_local("toys", crossed_dir)
    half = data.subsample(8, seed=1)
    cells = [tuple(r["labels"].values()) for r in half.records]
    assert len(cells) == 8 and all(cells.count(cell) == 2 for cell in set(cells)) and len(set(cells)) == 4
    assert [r["id"] for r in half.records] == [r["id"] for r in data.subsample(8, seed=1).records]
    assert [r["id"] for r in half.records] != [r["id"] for r in data.subsample(8, seed=2).records]
    assert half.records == sorted(half.records, key=data.records.index)  # file order kept
    assert data.subsample(100) is data
    with pytest.raises(ValueError, match="limit must be a positive int, got 0"):
        data.subsample(0)


def test_local_tasks_and_results_table(crossed_dir):
    from inbedder.eval.suite import local_tasks, results_table, run

    tasks = local_tasks(["toys"], ["clustering", "robustness"], crossed_dir)
    assert [t.kind for t in tasks] == ["clustering", "clustering", "robustness"]
    results = run({"aspect": AspectEncoder()}, tasks)
    table = results_table(results).splitlines()
    assert table[0] == "| task | score | aspect |"
    assert table[2] == "| toys/colour/clustering | v_measure | 1.000 ± 0.000 |"
    assert table[4] == "| toys/colour/clustering/robustness | paraphrase / implicit / incorrect | 0.500 / - / 0.000 |"
    with pytest.raises(ValueError, match="unknown task kinds"):
        local_tasks(["toys"], ["clusters"], crossed_dir)


def test_eval_command_end_to_end(tiny_model_dir, crossed_dir, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    out = tmp_path / "results.json"
    args = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data-dir",
        str(crossed_dir),
        "--tasks",
        "toys",
        "--kind",
        "clustering",
        "--kind",
        "triplets",
        "--limit",
        "12",
        "--baselines",
        "--baseline-model",
        "all-MiniLM-L6-v2",  # all-mpnet-base-v2 is not installed for the default test run
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["limit"] == 12
    models = {r["model"] for r in payload["results"]}
    assert models == {
        str(tiny_model_dir),
        "all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2 + instruction",
        f"{tiny_model_dir} mean over raw text",
    }
    tasks = {r["task"] for r in payload["results"]}
    assert tasks == {"toys/colour/clustering", "toys/shape/clustering", "toys/colour/triplets", "toys/shape/triplets"}
    for r in payload["results"]:
        assert 0.0 <= r["scores"][r["main_score"]] <= 1.0
    assert "| toys/colour/clustering | v_measure |" in result.output
    again = CliRunner().invoke(cli.app, args)
    assert again.exit_code != 0 and "exists" in str(again.exception)


class MultiAspectEncoder(AspectEncoder):
    """AspectEncoder that shares prompt prefixes (as a causal InBedder does), counting its encode_multi calls."""

    shares_prefixes = True

    def __init__(self):
        super().__init__()
        self.multi_calls = []

    def encode_multi(self, sentences, instructions, options=None):
        self.multi_calls.append(list(instructions))
        return [AspectEncoder.encode(self, sentences, i, options) for i in instructions]


def test_run_embeds_each_corpus_once_under_all_its_instructions(crossed_dir):
    from inbedder.eval.suite import local_tasks, run

    tasks = local_tasks(["toys"], ["clustering", "robustness", "triplets"], crossed_dir)
    multi = MultiAspectEncoder()
    with_multi = run({"m": multi}, tasks)
    plain = run({"m": AspectEncoder()}, tasks)
    assert [r.scores for r in with_multi] == [r.scores for r in plain]
    asked, *tasks_own = multi.multi_calls  # one corpus, so one call under all its questions; then each task's
    assert all(len(call) == 1 for call in tasks_own)
    assert asked[0] == [f"What colour is {r['owner']}'s toy?" for r in load_local("toys", crossed_dir).records]
    assert sorted(map(str, asked[1:])) == sorted(["What shape is it?", "Which colour?", "Which hue?"])


def test_run_passes_each_text_through_the_model_once(tiny, crossed_dir):
    from inbedder.eval.suite import local_tasks, run

    tasks = local_tasks(["toys"], ["clustering", "robustness", "triplets"], crossed_dir)
    rows = []
    with tiny.watch(rows.extend):
        run({"m": tiny}, tasks)
    # one encode_multi over the corpus under all its questions; every task then finds its rows in the store
    assert sorted(rows) == list(range(len(load_local("toys", crossed_dir).records)))


def test_run_with_a_persistent_store_resumes_without_recomputing(tiny, crossed_dir, tmp_path):
    from inbedder.eval.suite import local_tasks, run

    tasks = local_tasks(["toys"], ["clustering", "robustness", "triplets"], crossed_dir)
    options = EncodeOptions(cache=tmp_path / "vectors.sqlite")  # benchmarks/quality.py --cache
    first = run({"m": tiny}, tasks, options)
    rows = []
    with tiny.watch(rows.extend):
        again = run({"m": tiny}, tasks, options)
    assert rows == []  # a run started again finds every vector it had computed
    assert [r.scores for r in again] == [r.scores for r in first]


class EncodeOnly(EncodesOneAtATime):
    """A model that shares no prefixes (one instruction at a time), so the suite cannot share its passes."""

    def __init__(self, model):
        self.model = model

    def encode(self, sentences, instruction=None, options=None):
        return self.model.encode(sentences, instruction, options)


def test_shared_passes_keep_the_models_post_processing(tiny, crossed_dir, monkeypatch):
    from inbedder.eval.suite import local_tasks, run

    tasks = local_tasks(["toys"], ["clustering", "triplets"], crossed_dir)
    monkeypatch.setattr(tiny, "postprocess", "standardize")
    shared = run({"m": tiny}, tasks)
    direct = run({"m": EncodeOnly(tiny)}, tasks)
    for a, b in zip(shared, direct):
        assert a.task == b.task and a.main == pytest.approx(b.main, abs=1e-6), a.task
    raw = run({"m": tiny}, tasks, EncodeOptions(postprocess="none"))
    assert [r.main for r in raw] != [r.main for r in shared]  # post-processing changes the geometry


def test_raw_text_baseline_ignores_the_question_and_embeds_a_corpus_once(tiny, tmp_path):
    from inbedder.eval.baselines import RawTextMean

    texts = ["a red ball", "a blue cube"]
    options = EncodeOptions(cache=tmp_path / "store.sqlite")  # the store run() gives every model
    baseline, rows = RawTextMean(tiny, "raw"), []
    with tiny.watch(rows.extend):
        first = baseline.encode(texts, "What colour?", options)
        again = baseline.encode(texts, "What shape?", options)
    assert sorted(rows) == [0, 1]  # the second question found the first one's rows
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, tiny.encode(texts, None, readout="avg_ppt"), atol=1e-6)


def test_eval_command_passes_the_readout_settings(tiny_model_dir, crossed_dir, tmp_path):
    from typer.testing import CliRunner

    from inbedder import cli

    out = tmp_path / "results.json"
    args = ["eval", "--model", str(tiny_model_dir), "--data-dir", str(crossed_dir), "--tasks", "toys"]
    args += ["--kind", "clustering", "--readout", "avg_ppt", "--layer", "1", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    described = json.loads(out.read_text())["models"][str(tiny_model_dir)]
    assert "readout='avg_ppt'" in described and "layer=1" in described and "device='cpu'" in described


def test_generic_baselines_are_prompted_the_way_each_takes_a_question(monkeypatch):
    """EmbeddingGemma gets its task prompts; any other embedder gets the instruction before the text."""
    from inbedder.eval import baselines

    seen: list[list[str]] = []

    class Recorder:
        def encode(self, texts, batch_size=32, show_progress_bar=False):
            seen.append(list(texts))
            return np.zeros((len(texts), 2))

    monkeypatch.setattr(baselines, "load_sentence_embedder", lambda name: Recorder())
    encoders = baselines.generic_baselines(("all-MiniLM-L6-v2", "embeddinggemma-300m"))
    assert sorted(encoders) == [
        "all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2 + instruction",
        "embeddinggemma-300m",
        "embeddinggemma-300m + clustering prompt",
        "embeddinggemma-300m + instruction",
    ]
    for name in sorted(encoders):
        encoders[name].encode(["a {text} with braces", "b"], "Which {instruction}?")
    assert seen == [
        ["a {text} with braces", "b"],
        ["Which {instruction}? a {text} with braces", "Which {instruction}? b"],
        ["a {text} with braces", "b"],
        ["task: clustering | query: a {text} with braces", "task: clustering | query: b"],
        ["task: Which {instruction}? | query: a {text} with braces", "task: Which {instruction}? | query: b"],
    ]
    encoders["embeddinggemma-300m + instruction"].encode(["c"], None)
    assert seen[-1] == ["c"]
