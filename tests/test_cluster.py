"""Personalized clustering: explanations by hand, the pipeline on hand-made states and on a tiny model."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.cluster import HDBSCAN

from inbedder import EncodeOptions
from inbedder.clustering import NOISE, cluster
from inbedder.clustering.explain import composition, ctfidf_keywords, representatives
from inbedder.readout import Readout
from inbedder.templates import PromptTemplate
from inbedder.vocabulary import clusters_of, mean_shifts

COLOURS = ["red", "blue"]
SHAPES = ["ball", "cube", "cone"]
TEXTS = [f"a {c} {s} number {i}" for i in range(3) for c in COLOURS for s in SHAPES]  # 18 texts


class HandMadeModel:
    """Answers "colour?" with the text's colour and "shape?" with its shape; states are one-hot
    per answer (dims 0-1 colour, 2-4 shape) plus a small offset in dim 5 that grows with the text's row."""

    name = "hand-made"
    template = PromptTemplate()
    readout = Readout()
    max_seq_length = 64
    postprocess = "none"
    num_layers = 2
    names_clusters = True

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = [], fail_after

    def encode_multi(self, texts, instructions, options=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(list(texts))
        results = []
        for instruction in instructions:
            vocab = COLOURS if instruction == "colour?" else SHAPES
            offset = 0 if instruction == "colour?" else 2
            states = np.zeros((len(texts), 6), dtype=np.float32)
            answers = []
            for row, text in enumerate(texts):
                word = next(w for w in vocab if f" {w} " in f" {text} ")
                states[row, offset + vocab.index(word)] = 1.0
                states[row, 5] = 0.01 * TEXTS.index(text) if text in TEXTS else 0.0
                answers.append(f"it is {word}")
            results.append((states, answers))
        return results

    def top_tokens(self, states, top=10):
        return [[f"dim{int(np.argmax(row))}"] for row in np.asarray(states)]

    def explain_clusters(self, texts, instruction, vectors, assignments, options=None, reread=True):
        """As ``InBedder`` names clusters: the head's words for each cluster's mean shift, at the last layer only."""
        if self.readout.layer_index(self.num_layers) != self.num_layers:
            return None
        clusters = clusters_of(assignments)
        return dict(zip(clusters, self.top_tokens(mean_shifts(vectors, assignments, clusters))))


def colour_of(text):
    return text.split()[1]


def test_ctfidf_prefers_words_that_set_a_cluster_apart():
    # "text" is the most frequent word of both clusters but says nothing about either:
    # c0: tf(text) = 3/4, idf = log(1 + 4/6) -> 0.383; tf(french) = 1/4, idf = log(1 + 4/1) -> 0.402
    answers = ["text text text french", "text text text german", "it is the"]
    assignments = np.array([0, 1, 2])
    keywords = ctfidf_keywords(answers, assignments, [0, 1, 2])
    assert keywords[0] == ["french", "text"]
    assert keywords[1] == ["german", "text"]
    assert keywords[2] == []  # stop words only
    assert ctfidf_keywords(["the", "it is"], np.array([0, 1]), [0, 1]) == {0: [], 1: []}
    # answers echo the question: its words say nothing about a cluster
    echoed = ["the product reviewed is a book", "the product reviewed is a lamp"]
    assert ctfidf_keywords(echoed, np.array([0, 1]), [0, 1], exclude="What product is reviewed?") == {
        0: ["book"],
        1: ["lamp"],
    }


def test_composition_purity_and_entropy_by_hand():
    counts, purity, entropy = composition(["a", "b", "a", "c"])
    assert counts == {"a": 2, "b": 1, "c": 1} and list(counts) == ["a", "b", "c"]
    assert purity == 0.5
    assert entropy == pytest.approx(-(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25)))  # 1.5 bits
    assert composition(["x", "x"])[1:] == (1.0, 0.0)


def test_representatives_are_the_closest_members():
    distances = np.array([0.5, 0.1, 9.0, 0.3, 0.2])
    assignments = np.array([0, 0, 1, 0, 1])
    assert representatives(distances, assignments, 0, top=2) == [1, 3]
    assert representatives(distances, assignments, 1, top=5) == [4, 2]


def test_each_instruction_clusters_by_its_own_aspect():
    labels = {"colour": [colour_of(t) for t in TEXTS], "shape": [t.split()[2] for t in TEXTS]}
    result = cluster(TEXTS, ["colour?", "shape?"], HandMadeModel(), k="auto", labels=labels, ids=range(18))
    by_colour, by_shape = result["colour?"], result["shape?"]
    assert (by_colour.k, by_shape.k) == (2, 3)  # picked by silhouette
    assert by_colour.v_measure["colour"] == pytest.approx(1.0) and by_colour.v_measure["shape"] < 0.01
    assert by_shape.v_measure["shape"] == pytest.approx(1.0)
    for summary in by_colour.clusters:
        assert summary.size == 9 and summary.purity["colour"] == 1.0 and summary.entropy["colour"] == 0.0
        colour = summary.keywords[0]
        assert colour in COLOURS and summary.composition["colour"] == {colour: 9}
        assert summary.composition["shape"] == {"ball": 3, "cube": 3, "cone": 3}
        assert summary.lm_head_tokens == [f"dim{COLOURS.index(colour)}"]
        # the closest texts to the centroid are the middle rows of its colour: those of number 1
        assert all(colour_of(e) == colour and e.endswith("number 1") for e in summary.examples)
    table = result.assignments()
    assert list(table.columns) == ["id", "instruction", "cluster", "distance", "answer"]
    assert len(table) == 36 and table["id"].iloc[0] == "0" and table["answer"].iloc[0] == "it is red"
    assert by_colour.coords.shape == (18, 2)


def test_fixed_k_hdbscan_noise_and_no_head_at_lower_layers():
    model = HandMadeModel()
    model.readout = Readout("fst_gen", 1)
    result = cluster(TEXTS, "shape?", model, k=2, seed=3)
    assert result["shape?"].k == 2 and sorted(c.size for c in result["shape?"].clusters) == [6, 12]
    assert all(c.lm_head_tokens is None for c in result["shape?"].clusters)
    assert "last layer" in result["shape?"].lm_head_note

    texts = TEXTS + ["an odd green pyramid number 7"]

    class WithOutlier(HandMadeModel):
        def encode_multi(self, texts, instructions, options=None):
            states, answers = super().encode_multi(texts[:-1], instructions)[0]
            far = np.full((1, 6), 50.0, dtype=np.float32)
            return [(np.concatenate([states, far]), [*answers, "it is green"])]

    found = cluster(texts, "colour?", WithOutlier(), clusterer=HDBSCAN(min_cluster_size=4, copy=True))["colour?"]
    assert found.k == 2 and found.assignments[-1] == NOISE
    assert found.clusters[-1].cluster == NOISE and found.clusters[-1].size == 1
    assert np.isnan(found.distances[-1]) and not np.isnan(found.distances[:-1]).any()
    with pytest.raises(ValueError, match="HDBSCAN found no cluster among 19 texts"):
        cluster(texts, "colour?", WithOutlier(), clusterer=HDBSCAN(min_cluster_size=19, copy=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": []}, "corpus is empty"),
        ({"k": 19}, "k=19 is larger than the number of texts"),
        ({"k": 1}, "at least 2"),
        ({"clusterer": "dbscan"}, "'dbscan'"),
        ({"clusterer": object()}, "clusterer must be one of"),
        ({"reducer": "tsne"}, "'tsne'"),
        ({"reducer": object()}, "reducer must be one of"),
        ({"labels": {"colour": ["red"]}}, "'colour' has 1 values for 18 texts"),
        ({"instructions": ["colour?", "colour?"]}, "repeat"),
        ({"instructions": [""]}, "non-empty"),
        ({"ids": ["a", "b", "c", "b"] + [f"x{i}" for i in range(14)]}, r"id 'b' of row 4 repeats row 2's"),
        ({"clusterer": "hdbscan", "k": 3}, "k=3 is for k-means; HDBSCAN finds the number of clusters itself"),
    ],
)
def test_bad_input_is_refused_before_any_model_work(kwargs, message):
    model = HandMadeModel()
    args = {"texts": TEXTS, "instructions": ["colour?"], **kwargs}
    with pytest.raises(ValueError, match=message):
        cluster(args.pop("texts"), args.pop("instructions"), model, **args)
    assert model.calls == []


def test_precomputed_embeddings_need_no_model():
    model = HandMadeModel()
    (colour, colour_answers), (shape, shape_answers) = model.encode_multi(TEXTS, ["colour?", "shape?"])
    given = cluster(TEXTS, ["colour?", "shape?"], embeddings=[colour, shape], answers=[colour_answers, shape_answers])
    computed = cluster(TEXTS, ["colour?", "shape?"], HandMadeModel())
    for a, b in zip(given.clusterings, computed.clusterings):
        np.testing.assert_array_equal(a.assignments, b.assignments)
        assert [c.keywords for c in a.clusters] == [c.keywords for c in b.clusters]
        assert all(c.lm_head_tokens is None for c in a.clusters) and "model" in a.lm_head_note
    assert given.model == "precomputed embeddings"
    alone = cluster(TEXTS, "shape?", embeddings=shape)["shape?"]  # no answers: keywords from the texts
    assert alone.k == 3 and alone.answers == [""] * 18
    assert {c.keywords[0] for c in alone.clusters} == set(SHAPES)
    with_model = cluster(TEXTS, "shape?", model, embeddings=[shape])
    assert model.calls == [TEXTS] and with_model.model == "hand-made"  # only the first call above ran it


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": [np.zeros((18, 4))] * 3}, "3 arrays for 2 instructions"),
        ({"embeddings": [np.zeros((17, 4))] * 2}, r"shape \(17, 4\); expected \(18, dim\)"),
        ({"embeddings": [np.zeros((18, 4))] * 2, "answers": [["a"] * 18]}, "18 answers for each of the 2"),
        ({"answers": [["a"] * 18] * 2}, "answers come with embeddings"),
    ],
)
def test_bad_precomputed_embeddings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cluster(TEXTS, ["colour?", "shape?"], HandMadeModel(), **kwargs)


def test_lm_head_tokens_of_the_tiny_model_match_a_direct_computation(tiny):
    state = torch.randn(1, tiny.embedding_dim, generator=torch.Generator().manual_seed(0))
    (words,) = tiny.top_tokens(state, top=3)
    logits = state @ tiny.backend.model.get_output_embeddings().weight.T
    ranked = [tiny.tokenizer.decode([i]).strip() for i in logits[0].argsort(descending=True).tolist()]
    expected = list(dict.fromkeys(w.lower() for w in ranked if any(ch.isalpha() for ch in w)))[:3]
    assert [w.lower() for w in words] == expected


def test_pipeline_and_files_on_a_tiny_model(tiny, tmp_path):
    texts = [f"review {i}: {'great' if i % 2 else 'awful'} {'book' if i % 3 else 'lamp'}" for i in range(12)]
    result = cluster(texts, ["Is it good?", "What product?"], tiny, k=3, labels={"half": ["a"] * 6 + ["b"] * 6})
    for clustering in result.clusterings:
        assert sorted(np.unique(clustering.assignments)) == [0, 1, 2]
        assert sum(c.size for c in clustering.clusters) == 12
        assert all(c.lm_head_tokens for c in clustering.clusters)  # fst_gen at the last layer
        assert len(clustering.answers) == 12 and 0.0 <= clustering.v_measure["half"] <= 1.0
    paths = result.save(tmp_path)
    table = pd.read_parquet(paths["assignments.parquet"])
    assert len(table) == 24 and set(table["instruction"]) == {"Is it good?", "What product?"}
    saved = json.loads(paths["clusters.json"].read_text())
    assert [i["instruction"] for i in saved["instructions"]] == ["Is it good?", "What product?"]
    assert saved["instructions"][0]["clusters"][0]["size"] >= saved["instructions"][0]["clusters"][-1]["size"]
    assert paths["report.html"].read_text().startswith("<!DOCTYPE html>")


REVIEWS = [f"review {i}: {'great' if i % 2 else 'awful'} {'book' if i % 3 else 'lamp'}" for i in range(12)]
QUESTIONS = ["Is it good?", "What product?"]


class Passes:
    """Counts the model's forward passes (a hook on its embedding layer); raises after ``stop_after`` of them."""

    def __init__(self, model, stop_after: int | None = None) -> None:
        self.count, self.stop_after = 0, stop_after
        self.hook = model.backend.model.get_input_embeddings().register_forward_pre_hook(self)

    def __call__(self, _module, _args):
        if self.stop_after is not None and self.count >= self.stop_after:
            raise KeyboardInterrupt
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


def same_clusterings(a, b):
    for x, y in zip(a.clusterings, b.clusterings):
        np.testing.assert_array_equal(x.assignments, y.assignments)
        assert x.answers == y.answers


def test_an_interrupted_run_keeps_finished_batches_in_the_work_dir(tiny_model_dir, tmp_path):
    from inbedder import InBedder
    from inbedder.cache import EmbeddingCache

    model = InBedder(str(tiny_model_dir), max_length=64)
    with Passes(model) as full:
        fresh = cluster(REVIEWS, QUESTIONS, model, EncodeOptions(batch_size=4, max_new_tokens=3), k=2)
    with Passes(model, stop_after=full.count // 2), pytest.raises(KeyboardInterrupt):
        cluster(REVIEWS, QUESTIONS, model, EncodeOptions(batch_size=4, max_new_tokens=3), k=2, work_dir=tmp_path)
    kept = EmbeddingCache(tmp_path / "embeddings.sqlite").info().entries
    assert 0 < kept < len(REVIEWS) * len(QUESTIONS)
    with Passes(model) as rerun:
        resumed = cluster(
            REVIEWS, QUESTIONS, model, EncodeOptions(batch_size=4, max_new_tokens=3), k=2, work_dir=tmp_path
        )
    assert 0 < rerun.count < full.count
    same_clusterings(resumed, fresh)
    with Passes(model) as again:
        cluster(REVIEWS, QUESTIONS, model, EncodeOptions(batch_size=4, max_new_tokens=3), k=3, work_dir=tmp_path)
    assert again.count == 0  # another k: everything reused


def test_weights_retrained_in_place_are_not_served_stale_vectors(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from inbedder import InBedder

    path = shutil.copytree(tiny_model_dir, tmp_path / "model")
    before = cluster(REVIEWS, QUESTIONS, InBedder(str(path), max_length=64), k=2, work_dir=tmp_path / "out")
    weights = load_file(str(path / "model.safetensors"))
    save_file({name: t + 0.05 * torch.randn_like(t) for name, t in weights.items()}, str(path / "model.safetensors"))
    retrained = InBedder(str(path), max_length=64)  # same name, other weights
    with Passes(retrained) as passes:
        after = cluster(REVIEWS, QUESTIONS, retrained, k=2, work_dir=tmp_path / "out")
    assert passes.count > 0
    same_clusterings(after, cluster(REVIEWS, QUESTIONS, retrained, k=2))
    assert before.model == after.model


def test_corpora_that_join_alike_are_told_apart(tiny_model_dir, tmp_path):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=64)
    first = ["a cat\0a dog", "a bird", "a fish", "a cow"]
    second = ["a cat", "a dog\0a bird", "a fish", "a cow"]
    cluster(first, QUESTIONS, model, k=2, work_dir=tmp_path)
    reused = cluster(second, QUESTIONS, model, k=2, work_dir=tmp_path)
    same_clusterings(reused, cluster(second, QUESTIONS, model, k=2))


def test_texts_the_model_cannot_tell_apart_get_inbedders_words():
    with pytest.raises(ValueError, match=r"'colour\?': only 1 distinct embedding\(s\) among 18 texts"):
        cluster(TEXTS, "colour?", embeddings=np.ones((18, 4)))
    with pytest.raises(ValueError, match=r"only 2 distinct embedding\(s\) among 18 texts.*k=3"):
        cluster(TEXTS, "colour?", k=3, embeddings=np.repeat(np.eye(2), 9, axis=0))
    two = cluster(TEXTS, "colour?", embeddings=np.repeat(np.eye(2), 9, axis=0))["colour?"]
    assert two.k == 2  # auto tries no more clusters than there are distinct points


def test_a_projected_readouts_clusters_are_named_from_the_full_distribution(tiny_model_dir):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), readout="fst_head_rp")
    texts = [f"{animal} number {i} sat on the mat." for i, animal in enumerate(["A cat", "The dog", "A bird"] * 4)]
    found = cluster(texts, "What animal?", model, k=3, seed=0)["What animal?"]
    full = model.encode(texts, "What animal?", readout="fst_head")  # what the projection stands for
    for summary in found.clusters:
        shift = full[found.assignments == summary.cluster].mean(0) - full.mean(0)
        assert summary.lm_head_tokens == model.top_tokens(shift[None])[0]


def test_a_sample_result_scaled_to_the_corpus_keeps_the_original(tmp_path):
    import json

    model = HandMadeModel()
    ((shape, answers),) = model.encode_multi(TEXTS, ["shape?"])
    result = cluster(TEXTS, "shape?", embeddings=[shape], answers=[answers], k=3)
    before = [c.size for c in result["shape?"].clusters]
    sizes = {("shape?", c.cluster): 1000 + c.cluster for c in result["shape?"].clusters}
    scaled = result.for_corpus(sizes, 3003)
    assert [c.size for c in result["shape?"].clusters] == before
    assert [c.size for c in scaled["shape?"].clusters] == [1000 + c.cluster for c in scaled["shape?"].clusters]
    scaled.save(tmp_path)
    written = json.loads((tmp_path / "clusters.json").read_text())
    assert written["texts"] == 3003 and written["sample"] == len(TEXTS)
    assert "sample" not in result.clusters_json() and result.clusters_json()["texts"] == len(TEXTS)


def test_any_scikit_learn_clusterer_and_reducer_plug_in():
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import TruncatedSVD

    given = AgglomerativeClustering(3)
    result = cluster(TEXTS, ["shape?", "colour?"], HandMadeModel(), clusterer=given, reducer=TruncatedSVD(2))
    shape = result["shape?"]
    assert shape.k == 3 and shape.method == "AgglomerativeClustering"
    assert {c.keywords[0] for c in shape.clusters} == set(SHAPES)
    assert shape.coords.shape == (len(TEXTS), 2) and sorted(set(shape.assignments.tolist())) == [0, 1, 2]
    assert result.map_method == "TruncatedSVD" and not hasattr(given, "labels_")  # the caller's object is not fitted


def test_a_reducer_that_gives_the_wrong_shape_is_named_at_once():
    from sklearn.decomposition import TruncatedSVD

    with pytest.raises(ValueError, match=r"the reducer TruncatedSVD gave an array of shape \(\d+, 3\); the map needs"):
        cluster(TEXTS, "shape?", HandMadeModel(), k=3, reducer=TruncatedSVD(3))


def test_naming_a_projected_heads_clusters_runs_the_model_no_more(tiny_model_dir):
    """fst_head_rp's clusters are named from the full head distributions of the states the run stored:
    read again from the store, not computed again."""
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=64, readout="fst_head_rp")
    options = EncodeOptions(batch_size=4, max_new_tokens=3)
    with Passes(model) as embedding:
        model.encode_multi(REVIEWS, QUESTIONS, options, return_generations=True)
    with Passes(model) as clustering:
        result = cluster(REVIEWS, QUESTIONS, model, options, k=2)
    assert clustering.count == embedding.count > 0
    assert all(c.lm_head_tokens for one in result.clusterings for c in one.clusters)
