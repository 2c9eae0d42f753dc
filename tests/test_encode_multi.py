"""encode_multi: one corpus, several instructions, the shared prompt prefix run once."""

import numpy as np
import pytest

from inbedder.runner import shared_prefix_lengths

TEXTS = [
    "I love my cat",
    "The quick brown fox jumps over the lazy dog. " * 6,  # cut to fit max_length, by each instruction differently
    "dog",
    "Reviews, tweets, stories and poems about my cat and my dog.",
    "I hate my cat",
]
INSTRUCTIONS = [
    "What animal is mentioned?",
    "How does the writer feel?",
    "Is it a story or a review, and who wrote it?",
]


@pytest.mark.parametrize("readout, layer", [("fst_gen", -1), ("fst_gen", 1), ("avg_ppt", -1), ("avg_ppt", 2)])
def test_equals_separate_encode_calls(tiny, readout, layer):
    multi = tiny.encode_multi(TEXTS, INSTRUCTIONS, readout=readout, layer=layer, batch_size=2)
    assert len(multi) == len(INSTRUCTIONS)
    for instruction, got in zip(INSTRUCTIONS, multi):
        expected = tiny.encode(TEXTS, instruction, readout=readout, layer=layer, batch_size=2)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_shared_prefix_runs_once(tiny_model_dir):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=256, max_batch_tokens=100_000)  # one batch; nothing is cut
    texts = [t * 3 for t in TEXTS if len(t) < 100]
    instructions = ["What animal?", "Who?", "Why?"]
    seen = []
    hook = model.backend.layers[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[:2]))
    try:
        model.encode_multi(texts, instructions, batch_size=len(texts))
        multi_passes, multi_tokens = len(seen), sum(rows * width for rows, width in seen)
        seen.clear()
        for instruction in instructions:
            model.encode(texts, instruction, batch_size=len(texts))
        separate_tokens = sum(rows * width for rows, width in seen)
    finally:
        hook.remove()
    assert multi_passes == 2  # the shared prefix once, then every instruction's remaining tokens in one pass
    assert multi_tokens < 0.5 * separate_tokens


def test_per_text_instructions_and_fields(tiny):
    heads = ["cat", "fox", "dog", "poems", "cat"]
    instructions = ["What about the {head}?", [f"Who is {h}?" for h in heads]]
    multi = tiny.encode_multi(TEXTS, instructions, fields={"head": heads})
    np.testing.assert_allclose(multi[0], tiny.encode(TEXTS, [f"What about the {h}?" for h in heads]), atol=1e-4)
    np.testing.assert_allclose(multi[1], tiny.encode(TEXTS, instructions[1]), atol=1e-4)


@pytest.mark.parametrize(
    "readout, layer", [("avg_gen", -1), ("avg_gen", 1), ("last_gen", -1), ("avg_all", 2), ("fst_gen", -1)]
)
def test_generating_readouts_and_answers(tiny, readout, layer):
    options = dict(readout=readout, layer=layer, max_new_tokens=3, return_generations=True, batch_size=2)
    multi = tiny.encode_multi(TEXTS, INSTRUCTIONS, **options)
    for instruction, (emb, answers) in zip(INSTRUCTIONS, multi):
        expected, expected_answers = tiny.encode(TEXTS, instruction, **options)
        np.testing.assert_allclose(emb, expected, atol=1e-4)
        assert answers == expected_answers


def test_generation_runs_the_shared_prefix_once(tiny_model_dir):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=256, max_batch_tokens=100_000)
    texts = [t * 3 for t in TEXTS if len(t) < 100]
    prompt_passes = []  # (rows, width) of the passes through layer 0 that read prompt tokens (decoding reads 1)

    def count(_module, args):
        if args[0].shape[1] > 1:
            prompt_passes.append(args[0].shape[0] * args[0].shape[1])

    hook = model.backend.layers[0].register_forward_pre_hook(count)
    try:
        model.encode_multi(texts, ["What animal?", "Who?", "Why?"], readout="avg_gen", max_new_tokens=2)
        multi = list(prompt_passes)
        prompt_passes.clear()
        model.encode(texts, "What animal?", readout="avg_gen", max_new_tokens=2)
        (one_instruction,) = prompt_passes
    finally:
        hook.remove()
    assert len(multi) == 2  # the shared prefix, then the three instructions' remaining tokens
    assert sum(multi) < 0.6 * 3 * one_instruction


def test_single_text_and_normalization(tiny):
    multi = tiny.encode_multi(TEXTS[0], INSTRUCTIONS, normalize_embeddings=True)
    assert [m.shape for m in multi] == [(tiny.embedding_dim,)] * 3
    for instruction, got in zip(INSTRUCTIONS, multi):
        np.testing.assert_allclose(got, tiny.encode(TEXTS[0], instruction, normalize_embeddings=True), atol=1e-4)


@pytest.mark.parametrize(
    "instructions, kwargs, error, message",
    [
        ("What?", {}, ValueError, "instructions must be a non-empty list"),
        ([], {}, ValueError, "instructions must be a non-empty list"),
        (["a", ["x", "y"]], {}, ValueError, r"instructions\[1\] has 2 entries for 5 texts"),
        (["a", "b"], {"batchsize": 4}, TypeError, "batchsize"),
    ],
)
def test_bad_arguments(tiny, instructions, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny.encode_multi(TEXTS, instructions, **kwargs)


def testshared_prefix_lengths():
    assert shared_prefix_lengths([[[1, 2, 3, 4], [5, 6]], [[1, 2, 9], [5, 6]]]) == [2, 1]
    assert shared_prefix_lengths([[[1, 2]], [[3, 2]]]) == [0]  # nothing shared: no prefix pass
    assert shared_prefix_lengths([[[1, 2], [7, 8]], [[1, 3], [9, 8]]]) == [0, 0]
