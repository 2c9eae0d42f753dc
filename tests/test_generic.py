"""Sentence embedders as inbedder embedders: the pattern, and the store that keeps their vectors."""

import numpy as np
import pytest

TEXTS = [
    "The battery died after two days.",
    "Delivery took three weeks.",
    "The dress fits perfectly.",
    "Customer service never answered.",
    "The blender is loud but strong.",
]
QUESTION = "What does the customer complain about?"


@pytest.fixture(scope="module")
def minilm():
    from inbedder.reencoder import load_sentence_embedder

    return load_sentence_embedder()


def counting(minilm, monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Record how many texts each call of ``minilm.encode`` gets; optionally fail at one call."""
    calls: list[int] = []
    original = minilm.encode

    def encode(texts, **kwargs):
        calls.append(len(texts))
        if fail_on_call == len(calls):
            raise KeyboardInterrupt
        return original(texts, **kwargs)

    monkeypatch.setattr(minilm, "encode", encode)
    return calls


def test_vectors_with_a_store_are_the_models_own_and_computed_once(minilm, tmp_path, monkeypatch):
    from inbedder.generic import SentenceEmbedder
    from inbedder.options import EncodeOptions

    store = tmp_path / "store.sqlite"
    filled = [f"{QUESTION} {text}" for text in TEXTS]
    expected = minilm.encode(filled)
    first = SentenceEmbedder(minilm, "{instruction} {text}").encode(TEXTS, QUESTION, EncodeOptions(cache=store))
    np.testing.assert_allclose(first, expected, atol=1e-5)

    calls = counting(minilm, monkeypatch)
    again = SentenceEmbedder(minilm, "{instruction} {text}").encode(
        TEXTS + ["A new text."], QUESTION, EncodeOptions(cache=store)
    )
    assert calls == [1]  # only the text the store lacked
    np.testing.assert_allclose(again[: len(TEXTS)], first, atol=1e-6)
    plain = SentenceEmbedder(minilm).encode(
        TEXTS, QUESTION, EncodeOptions(cache=store)
    )  # another filled text: computed
    assert calls == [1, len(TEXTS)]
    np.testing.assert_allclose(plain, minilm.encode(TEXTS), atol=1e-5)


def test_an_interrupted_call_keeps_the_chunks_it_finished(minilm, tmp_path, monkeypatch):
    from inbedder import generic
    from inbedder.cache import open_cache
    from inbedder.options import EncodeOptions

    store = tmp_path / "store.sqlite"
    monkeypatch.setattr(generic, "STORE_CHUNK", 2)
    calls = counting(minilm, monkeypatch, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        generic.SentenceEmbedder(minilm).encode(TEXTS, None, EncodeOptions(cache=store))
    assert open_cache(store).info().entries == 2
    vectors = generic.SentenceEmbedder(minilm).encode(TEXTS, None, EncodeOptions(cache=store))
    assert calls == [2, 2, 2, 1]  # the first chunk was not computed again
    np.testing.assert_allclose(vectors, minilm.encode(TEXTS), atol=1e-5)


def test_no_texts_is_refused():
    from inbedder.errors import InputError
    from inbedder.generic import stored_sentence_vectors

    with pytest.raises(InputError, match="no texts to embed"):
        stored_sentence_vectors(object(), [])
