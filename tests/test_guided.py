"""Guided embeddings: a map fitted on a sample of the model's vectors, applied to generic sentence embeddings."""

import json

import numpy as np
import pytest
import torch

TEXTS = [
    "The striker scored twice in the final minutes of the match.",
    "Parliament passed the budget after a long night of debate.",
    "The new phone has a brighter screen and a faster chip.",
    "Heavy rain flooded the valley roads this morning.",
    "The orchestra played Mahler to a full house.",
    "Shares fell sharply after the bank's quarterly report.",
    "A recipe for lemon cake with poppy seeds.",
    "The goalkeeper saved a penalty in extra time.",
    "Scientists found water ice in a crater on the moon.",
    "The senator announced she will not run again.",
    "This laptop battery lasts a full working day.",
    "Snow is expected across the north tonight.",
]
QUESTION = "What is the topic of this text?"


@pytest.fixture(scope="module")
def minilm():
    from inbedder.reencoder import load_sentence_embedder

    return load_sentence_embedder()


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from inbedder import InBedder

    return InBedder(str(tiny_model_dir), max_length=64)


def guided(model, minilm, **options):
    from inbedder.guided import GuidedEmbedder

    return GuidedEmbedder(model, minilm, **{"steps": 30, **options})


@pytest.mark.parametrize(
    ("method", "dim"), [("ridge", 11), ("contrastive", 16), ("gstransform", 16), ("concat", 384 + 11)]
)
def test_each_method_gives_vectors_of_its_size(model, minilm, method, dim):
    vectors = guided(model, minilm, method=method, dim=16).encode(TEXTS, QUESTION)
    assert vectors.shape == (len(TEXTS), dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()


def test_ridge_map_is_sklearns_ridge_onto_the_model_vectors_principal_components(model, minilm):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    embedder = guided(model, minilm, method="ridge", dim=4)
    fitted = embedder.fit(TEXTS, QUESTION)
    targets = np.asarray(model.encode(TEXTS, QUESTION), dtype=np.float32)
    targets = targets - targets.mean(0)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    generic = minilm.encode(TEXTS, normalize_embeddings=True)
    goal = PCA(4, random_state=0).fit_transform(targets)
    expected = (
        RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(generic - generic.mean(0), goal).predict(generic - generic.mean(0))
    )
    np.testing.assert_allclose(fitted.transform(generic), expected, atol=1e-4)


def test_sample_is_seeded_and_answers_exist_only_for_it(model, minilm):
    embedder = guided(model, minilm, sample=5, seed=3)
    vectors, answers = embedder.encode(TEXTS, QUESTION, return_generations=True, max_new_tokens=3)
    rows = embedder.sample_rows(len(TEXTS))
    assert len(rows) == 5 and list(rows) == sorted(set(rows.tolist()))
    assert [i for i, a in enumerate(answers) if a is not None] == rows.tolist()
    assert all(isinstance(answers[i], str) for i in rows)
    again = guided(model, minilm, sample=5, seed=3).encode(TEXTS, QUESTION)
    np.testing.assert_array_equal(vectors, again)
    other = guided(model, minilm, sample=5, seed=4)
    assert other.sample_rows(len(TEXTS)).tolist() != rows.tolist()
    assert not np.allclose(other.encode(TEXTS, QUESTION), vectors)


def test_saved_map_gives_the_same_vectors_without_the_model(model, minilm, tmp_path):
    from inbedder.guided import GuidedEmbedder, GuidedMap

    fitted = guided(model, minilm, method="gstransform", dim=8).fit(TEXTS, QUESTION)
    fitted.save(tmp_path / "map")
    settings = json.loads((tmp_path / "map" / "guided.json").read_text())
    assert settings["instruction"] == QUESTION and settings["options"]["method"] == "gstransform"
    loaded = GuidedMap.load(tmp_path / "map")
    applier = GuidedEmbedder(generic=minilm)  # no language model given, and none loads
    np.testing.assert_array_equal(applier.transform(TEXTS, loaded), applier.transform(TEXTS, fitted))
    assert applier._model is None
    assert loaded.model == fitted.model and loaded.model_fingerprint == fitted.model_fingerprint


def test_map_applied_with_another_generic_embedder_is_refused(model, minilm, tmp_path):
    import copy

    from inbedder.errors import InputError
    from inbedder.guided import GuidedEmbedder

    fitted = guided(model, minilm, method="ridge").fit(TEXTS, QUESTION)
    other = copy.deepcopy(minilm)
    with torch.no_grad():
        next(other.parameters()).mul_(1.01)
    with pytest.raises(InputError, match="fitted on vectors of"):
        GuidedEmbedder(generic=other).transform(TEXTS, fitted)


def test_generic_vectors_are_kept_in_the_store(model, minilm, tmp_path):
    from inbedder.guided import GuidedEmbedder

    calls = []
    original = minilm.encode

    def counting(texts, **kwargs):
        calls.append(len(texts))
        return original(texts, **kwargs)

    embedder = GuidedEmbedder(model, minilm, cache=tmp_path / "store.sqlite")
    first = embedder.generic_vectors(TEXTS)
    minilm.encode = counting
    try:
        second = GuidedEmbedder(model, minilm, cache=tmp_path / "store.sqlite").generic_vectors(TEXTS + ["A new text."])
    finally:
        del minilm.encode
    assert calls == [1]  # only the text the store lacked
    np.testing.assert_allclose(second[: len(TEXTS)], first, atol=1e-6)
    np.testing.assert_allclose(first, minilm.encode(TEXTS, normalize_embeddings=True), atol=1e-5)


def test_bad_settings_and_inputs_are_refused_by_name(model, minilm, tmp_path):
    from inbedder.errors import InputError
    from inbedder.guided import GuidedMap, GuidedOptions

    with pytest.raises(ValueError, match="unknown guided method 'pca'"):
        GuidedOptions(method="pca")
    with pytest.raises(ValueError, match="sample must be at least 3"):
        GuidedOptions(sample=2)
    with pytest.raises(ValueError, match="need an instruction"):
        guided(model, minilm).encode(TEXTS, None)
    with pytest.raises(ValueError, match=r"sentences\[1\] is empty"):
        guided(model, minilm).encode([TEXTS[0], " ", TEXTS[2]], QUESTION)
    with pytest.raises(InputError, match="holds no guided map"):
        GuidedMap.load(tmp_path)
    fitted = guided(model, minilm, method="ridge").fit(TEXTS, QUESTION)
    with pytest.raises(InputError, match="takes vectors of 384 numbers"):
        fitted.transform(np.zeros((2, 10)))


def test_cluster_guided_explains_clusters_from_the_sample(model, minilm):
    from inbedder import EncodeOptions
    from inbedder.clustering import cluster
    from inbedder.guided import GuidedEmbedder

    options = EncodeOptions(max_new_tokens=3)
    embedder = GuidedEmbedder(model, minilm, sample=6)
    result = cluster(TEXTS, QUESTION, embedder, options, k=3)
    clustering = result.clusterings[0]
    assert len(clustering.assignments) == len(TEXTS) and clustering.k == 3
    answered = [i for i, a in enumerate(clustering.answers) if a]
    assert 0 < len(answered) <= 6
    assert sum(s.size for s in clustering.clusters) == len(TEXTS)
    sample = embedder.maps[QUESTION].sample
    assert answered == sorted(sample.rows.tolist())
    # each cluster's words are the model's, for the sampled members' vectors
    named = [s for s in clustering.clusters if s.lm_head_tokens]
    assert named and clustering.lm_head_note is None
    for summary in named:
        members = clustering.assignments[sample.rows] == summary.cluster
        shift = sample.vectors[members].mean(0) - sample.vectors.mean(0)
        assert summary.lm_head_tokens == model.top_tokens(shift[None])[0]


def test_cli_encode_guided_saves_a_map_that_applies_without_the_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import pandas as pd
    from typer.testing import CliRunner

    from inbedder import cli

    table = tmp_path / "texts.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(table, index=False)
    common = ["encode", str(table), "--model", str(tiny_model_dir), "--max-length", "64"]
    fitted = CliRunner().invoke(
        cli.app,
        [*common, "-i", QUESTION, "--out", str(tmp_path / "a.npy"), "--guided", "--sample", "6"]
        + ["--guided-method", "ridge", "--save-map", str(tmp_path / "map")],
    )
    assert fitted.exit_code == 0, fitted.output
    vectors = np.load(tmp_path / "a.npy")
    assert vectors.shape == (len(TEXTS), 5)  # ridge onto the sample's 5 principal components
    applied = CliRunner().invoke(
        cli.app, ["encode", str(table), "--guided-map", str(tmp_path / "map"), "--out", str(tmp_path / "b.npy")]
    )
    assert applied.exit_code == 0, applied.output
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), vectors, atol=1e-6)

    monkeypatch.setattr(
        "sys.argv", ["inbedder", *common, "-i", QUESTION, "--out", str(tmp_path / "c.npy"), "--sample", "9"]
    )
    with pytest.raises(SystemExit):
        cli.main()
    assert "--sample applies with --guided only" in capsys.readouterr().err
    monkeypatch.setattr(
        "sys.argv",
        [
            "inbedder",
            "encode",
            str(table),
            "--guided-map",
            str(tmp_path / "map"),
            "-i",
            "What else?",
            "--out",
            str(tmp_path / "d.npy"),
        ],
    )
    with pytest.raises(SystemExit):
        cli.main()
    assert f"was fitted for {QUESTION!r}, not 'What else?'" in capsys.readouterr().err


def test_cli_cluster_guided(tiny_model_dir, tmp_path):
    import pandas as pd
    from typer.testing import CliRunner

    from inbedder import cli

    table = tmp_path / "texts.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(table, index=False)
    result = CliRunner().invoke(
        cli.app,
        [
            "cluster",
            str(table),
            "-i",
            QUESTION,
            "--out",
            str(tmp_path / "out"),
            "-k",
            "2",
            "--model",
            str(tiny_model_dir),
        ]
        + ["--guided", "--sample", "8", "--max-new-tokens", "3"],
    )
    assert result.exit_code == 0, result.output
    clusters = json.loads((tmp_path / "out" / "clusters.json").read_text())
    assert sum(c["size"] for c in clusters["instructions"][0]["clusters"]) == len(TEXTS)
    assert clusters["model"].endswith("(guided by all-MiniLM-L6-v2, ridge map, sample 8)")


def test_a_generic_embedder_loaded_by_name_keeps_its_float32_fingerprint_in_bfloat16():
    from inbedder.guided import GuidedEmbedder

    half, full = GuidedEmbedder(dtype="bfloat16"), GuidedEmbedder(dtype="float32")
    assert next(half.generic.parameters()).dtype == torch.bfloat16
    assert next(full.generic.parameters()).dtype == torch.float32
    assert half.generic_fingerprint() == full.generic_fingerprint()
    cosine = (half.generic_vectors(TEXTS) * full.generic_vectors(TEXTS)).sum(1)
    assert cosine.min() > 0.99


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--save-map", "m"], "--save-map saves the map --guided fits; add --guided"),
        (["--guided", "--guided-map", "m"], "give one of them"),
        (["--guided", "--truncate-dim", "8"], "--truncate-dim applies to the model's own readouts"),
        (["--guided-map", "m", "--return-generations"], "there are no answers to return"),
        (["--guided-map", "m", "--engine", "ray"], "--guided-map applies a saved map in this process"),
        (["--guided", "--guided-method", "pca"], "unknown guided method 'pca'"),
    ],
)
def test_cli_refuses_guided_flags_that_do_not_go_together(tmp_path, monkeypatch, capsys, extra, message):
    from inbedder import cli

    table = tmp_path / "texts.txt"
    table.write_text("\n".join(TEXTS))
    argv = ["inbedder", "encode", str(table), "-i", QUESTION, "--out", str(tmp_path / "e.npy"), *extra]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.npy").exists()


def test_a_damaged_saved_map_is_named(model, minilm, tmp_path):
    from inbedder.errors import InputError
    from inbedder.guided import GuidedMap

    guided(model, minilm, method="ridge").fit(TEXTS, QUESTION).save(tmp_path / "map")
    (tmp_path / "map" / "map.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match=f"cannot read the guided map in {tmp_path / 'map'}"):
        GuidedMap.load(tmp_path / "map")
    (tmp_path / "map" / "guided.json").write_text("{")
    with pytest.raises(InputError, match="cannot read the guided map"):
        GuidedMap.load(tmp_path / "map")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"generic": 123}, "generic is 123, not str"),
        ({"hidden": "2"}, "hidden is '2', not int or null"),
        ({"input_dim": True}, "input_dim is True, not int"),
        ({"options": None}, "options is None, not dict"),
    ],
)
def test_a_saved_map_with_settings_of_the_wrong_type_is_named(model, minilm, tmp_path, change, message):
    """Case 12 of the reliability probe: a setting of the wrong type is one line, not an AttributeError."""
    import json

    from inbedder.errors import InputError
    from inbedder.guided import GuidedMap

    guided(model, minilm, method="ridge").fit(TEXTS, QUESTION).save(tmp_path / "map")
    settings = json.loads((tmp_path / "map" / "guided.json").read_text())
    (tmp_path / "map" / "guided.json").write_text(json.dumps(settings | change))
    with pytest.raises(InputError, match=f"cannot read the guided map in .*map: guided.json: {message}"):
        GuidedMap.load(tmp_path / "map")


def test_a_saved_map_with_nan_weights_is_refused(model, minilm, tmp_path):
    """Case 12: NaN weights would write all-NaN vectors with exit 0."""
    import torch
    from safetensors.torch import load_file, save_file

    from inbedder.errors import InputError
    from inbedder.guided import GuidedMap

    guided(model, minilm, method="ridge").fit(TEXTS, QUESTION).save(tmp_path / "map")
    weights = load_file(tmp_path / "map" / "map.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, tmp_path / "map" / "map.safetensors")
    with pytest.raises(InputError, match=f"its weights {name}.* hold NaN or infinite numbers"):
        GuidedMap.load(tmp_path / "map")


def test_per_text_instructions_are_refused_by_name(model, minilm, tiny_model_dir, tmp_path):
    """Case 11: a guided map is learned for one question; texts asked different ones get no silent mix."""
    import pandas as pd
    from typer.testing import CliRunner

    from inbedder import cli
    from inbedder.errors import InputError

    asked = [QUESTION] * (len(TEXTS) - 1) + ["What is the tone?"]
    with pytest.raises(InputError, match=r"a guided map is learned for one question, and these texts are asked 2"):
        guided(model, minilm).encode(TEXTS, asked)
    same = guided(model, minilm, method="ridge").fit(TEXTS, [QUESTION] * len(TEXTS))
    assert same.instruction == QUESTION
    table = tmp_path / "t.csv"
    pd.DataFrame({"text": TEXTS, "q": asked}).to_csv(table, index=False)
    result = CliRunner().invoke(
        cli.app,
        ["encode", str(table), "--model", str(tiny_model_dir), "--instruction-column", "q", "--guided"]
        + ["-o", str(tmp_path / "g.npy")],
    )
    assert result.exit_code != 0 and "--guided learns one map for one question" in str(result.exception)


def test_an_unknown_generic_embedder_is_refused_before_the_language_model_loads(tmp_path, monkeypatch, capsys):
    """--guided --generic nosuch-embedder: one line, and the language model (here: none at that path) never loads."""
    import pandas as pd

    from inbedder import cli

    table = tmp_path / "texts.csv"
    pd.DataFrame({"text": TEXTS}).to_csv(table, index=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # offline at once, not after retries
    monkeypatch.setattr("inbedder.embedder.InBedder.__init__", lambda *a, **k: pytest.fail("the LM was loaded"))
    argv = ["inbedder", "encode", str(table), "-i", QUESTION, "--guided", "--generic", "nosuch-embedder"]
    monkeypatch.setattr("sys.argv", [*argv, "-o", str(tmp_path / "g.npy")])
    with pytest.raises(SystemExit):
        cli.main()
    assert "error: cannot load the sentence embedder 'nosuch-embedder': it is not one inbedder knows" in (
        capsys.readouterr().err
    )
