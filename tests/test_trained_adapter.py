"""The trained InBedders shipped in the package (smollm2-135m-inbedder, -v2, -v3). Slow: `make test-slow`."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inbedder import InBedder, models

pytestmark = pytest.mark.slow
NAMES = ["smollm2-135m-inbedder", "smollm2-135m-inbedder-v2", "smollm2-135m-inbedder-v3", "qwen2.5-coder-0.5b-inbedder"]
TEXTS = [
    "Le nouveau film d'animation arrive bientôt au cinéma, avec des personnages adorés.",
    "Der neue Animationsfilm kommt bald ins Kino, mit beliebten Figuren.",
]
LANGUAGE = "What language is this text written in?"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("inbedder-cache")  # the base model is converted there once


def load(name: str, cache) -> InBedder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INBEDDER_CACHE", str(cache))
        return InBedder(name)


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def trained(name, cache):
    return load(name, cache)


def test_the_adapter_is_packaged_with_its_training_record(name):
    entry = models.registered(name)
    assert entry is not None and entry.available_offline()
    adapter = entry.packaged_adapter()
    assert models.resolve(name) == str(adapter)
    weights = load_file(str(adapter / "adapter_int8.safetensors"))
    lora = [tensor for key, tensor in weights.items() if key.endswith(".weight")]
    assert lora and all(tensor.dtype == torch.int8 for tensor in lora)
    parameters = sum(tensor.numel() for tensor in lora)  # a byte each, and a float16 scale per rank component
    assert (adapter / "adapter_int8.safetensors").stat().st_size < 1.05 * parameters
    base = models.adapter_base(str(adapter))
    record = json.loads((adapter / "training.json").read_text())
    assert record["base"] == base and record["steps"] > 0 and record["eval_loss"] < 2
    while base != models.BASE_MODEL:  # v3 was trained from v2's merged weights, v2 from the base
        assert models.registered(base) is not None, base
        base = models.adapter_base(models.resolve(base))


def test_it_answers_at_once_and_tersely(trained):
    _, answers = trained.encode(TEXTS, LANGUAGE, readout="avg_gen", max_new_tokens=6, return_generations=True)
    assert [answer.split()[0].strip(".").lower() for answer in answers] == ["french", "german"]
    assert all(len(answer.split()) <= 2 for answer in answers), answers


def test_its_embeddings_are_not_the_untuned_models(trained, cache):
    tuned = trained.encode(TEXTS, LANGUAGE, readout="fst_gen")
    assert tuned.shape == (2, 576) and np.isfinite(tuned).all()
    assert np.abs(tuned - load(models.BASE_MODEL, cache).encode(TEXTS, LANGUAGE)).max() > 0.1


@pytest.mark.parametrize(
    ("model_name", "readout"),
    [("smollm2-135m-inbedder-v2", "fst_head_rp"), ("qwen2.5-coder-0.5b-inbedder", "fst_head_top_rp")],
)
def test_it_reads_the_lm_head_as_its_settings_say(model_name, readout, cache):
    model = load(model_name, cache)
    assert model.readout.name == readout and model.embedding_dim == 1024
    vectors = model.encode(TEXTS, LANGUAGE)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=0.1)  # a projection of unit vectors
    assert [words[0].lower() for words in model.top_tokens(vectors, top=1)] == ["french", "german"]


def test_v3_names_the_topic_in_english_whatever_the_language(cache):
    model = load("smollm2-135m-inbedder-v3", cache)
    _, answers = model.encode(TEXTS, "What is the topic of this text?", max_new_tokens=4, return_generations=True)
    words = {answer.split()[0].strip(".,").lower() for answer in answers}
    assert words <= {"entertainment", "movies", "film", "films", "animation", "cinema"}, answers
