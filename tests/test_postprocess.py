"""Post-processing over a corpus: values against numpy, errors, and its place in encode."""

import numpy as np
import pytest
import torch

from inbedder.postprocess import POSTPROCESSING, postprocess

STATES = torch.tensor([[1.0, 100.0, 3.0], [2.0, 300.0, 3.0], [6.0, 200.0, 3.0]])


def test_center_and_standardize_match_numpy():
    x = STATES.numpy()
    np.testing.assert_allclose(postprocess(STATES, "center").numpy(), x - x.mean(0))
    expected = (x - x.mean(0)) / np.maximum(x.std(0, ddof=1), 1e-6)
    np.testing.assert_allclose(postprocess(STATES, "standardize").numpy(), expected, rtol=1e-6)
    assert postprocess(STATES, "none") is STATES


def test_standardize_removes_the_weight_of_an_outlier_dimension():
    # dimension 1 is huge and carries nothing the other dimensions do not: raw cosines are all near 1
    raw = torch.nn.functional.normalize(STATES, dim=1)
    assert (raw @ raw.T).min() > 0.99
    out = torch.nn.functional.normalize(postprocess(STATES, "standardize"), dim=1)
    assert (out @ out.T).min() < 0


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="'whiten'.*none"):
        postprocess(STATES, "whiten")
    with pytest.raises(ValueError, match="at least 2 texts, got 1"):
        postprocess(STATES[:1], "center")


@pytest.mark.parametrize("method", list(POSTPROCESSING))
def test_encode_post_processes_each_instructions_corpus(tiny, method):
    texts = ["a red ball", "a blue cube", "the green cone", "one more text"]
    questions = ["What colour?", "What shape?"]
    raw = tiny.encode_multi(texts, questions, postprocess="none", convert_to_tensor=True)
    out = tiny.encode_multi(texts, questions, postprocess=method)
    for r, o in zip(raw, out):
        np.testing.assert_allclose(o, postprocess(r, method).numpy(), atol=1e-5)
    normalized = tiny.encode(texts, questions[0], postprocess=method, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)


def test_model_default_and_a_single_text(tiny_model_dir):
    from inbedder import InBedder

    with pytest.raises(ValueError, match="'zscore'"):
        InBedder(str(tiny_model_dir), postprocess="zscore")
    model = InBedder(str(tiny_model_dir), postprocess="center", max_length=64)
    centered = model.encode(["one text", "another text"], "Why?")
    np.testing.assert_allclose(centered.sum(0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="postprocess='center'.*at least 2 texts"):
        model.encode("a single text", "Why?")
    assert model.encode("a single text", "Why?", postprocess="none").shape == (model.embedding_dim,)
    assert model.encode([], "Why?").shape == (0, model.embedding_dim)
