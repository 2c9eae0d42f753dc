"""InBedder.encode on a tiny random Llama, checked against direct computations."""

import numpy as np
import pytest
import torch

from inbedder import InBedder
from inbedder.errors import InputError
from inbedder.readout import register_readout, unregister_readout

TEXTS = [
    "I love my cat",
    "The quick brown fox jumps over the lazy dog, and the dog does not mind.",
    "dog",
    "Reviews, tweets, stories and poems about my cat and my dog.",
    "I hate my cat",
]
INSTRUCTION = "What animal is mentioned?"


def prompt_ids(tiny, text, instruction=INSTRUCTION, template=None):
    return tiny.prompt_tokenizer(text, instruction, template or tiny.template)


@torch.no_grad()
def all_states(tiny, ids):
    """Every layer's states for one unpadded sequence, from a plain full forward."""
    return tiny.backend.model(torch.tensor([ids]), output_hidden_states=True).hidden_states


@torch.no_grad()
def reference_generation(tiny, text, layer, max_new_tokens, instruction=INSTRUCTION):
    """Answer tokens and answer states: greedy generate, then one forward over prompt + answer."""
    ids = prompt_ids(tiny, text, instruction)
    end = tiny.backend.end_ids.tolist()
    seq = tiny.backend.model.generate(
        torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end, pad_token_id=end[0]
    )[0].tolist()
    answer = seq[len(ids) :]
    kept = next((i for i, t in enumerate(answer) if t in end), len(answer))
    n_states = min(kept + 1, len(answer))  # fst_gen plus one state per answer token that has one
    states = all_states(tiny, seq[: len(ids) + n_states - 1])[layer][0]
    return ids, answer[:kept], states[: len(ids) - 1], states[len(ids) - 1 : len(ids) - 1 + n_states]


@pytest.mark.parametrize("layer", [0, 1, 2, 3, -1, -2, -4])
def test_single_pass_readouts_match_hidden_states(tiny, layer):
    for text in TEXTS[:3]:
        states = all_states(tiny, prompt_ids(tiny, text))[layer][0]
        fst = tiny.encode(text, INSTRUCTION, layer=layer)
        avg = tiny.encode(text, INSTRUCTION, layer=layer, readout="avg_ppt")
        np.testing.assert_allclose(fst, states[-1].numpy(), atol=1e-5)
        np.testing.assert_allclose(avg, states.mean(0).numpy(), atol=1e-5)


@pytest.fixture
def max_gen():
    """A readout added the way a contributor adds one: a name, a line, a pool function."""
    register_readout(
        "max_gen",
        "elementwise maximum over fst_gen and the answer tokens' states",
        lambda run, kept: run.answer_states.masked_fill(~kept.bool().unsqueeze(-1), -torch.inf).amax(1),
        generating=True,
    )
    yield "max_gen"
    unregister_readout("max_gen")


def test_a_registered_readout_works_end_to_end(tiny, max_gen):
    got = tiny.encode(TEXTS, INSTRUCTION, readout=max_gen, max_new_tokens=4, batch_size=2)
    for text, vector in zip(TEXTS, got):
        _, _, _, answer_states = reference_generation(tiny, text, -1, 4)
        np.testing.assert_allclose(vector, answer_states.amax(0).numpy(), atol=1e-4)


def test_single_pass_stops_at_the_requested_layer(tiny):
    calls = [0] * len(tiny.backend.layers)
    hooks = [
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, layer in enumerate(tiny.backend.layers)
    ]
    try:
        tiny.encode(TEXTS, INSTRUCTION, layer=1, batch_size=8)
        assert calls == [1, 0, 0]
        tiny.encode(TEXTS, INSTRUCTION, layer=-1, batch_size=8)
        assert calls == [2, 1, 1]
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("layer", [-1, 1])
def test_generation_readouts_match_direct_computation(tiny, layer):
    for text in TEXTS[:3]:
        _, answer, prompt_states, answer_states = reference_generation(tiny, text, layer, max_new_tokens=5)
        got = {
            name: tiny.encode(text, INSTRUCTION, readout=name, layer=layer, max_new_tokens=5, return_generations=True)
            for name in ("avg_gen", "last_gen", "avg_all")
        }
        np.testing.assert_allclose(got["avg_gen"][0], answer_states.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(got["last_gen"][0], answer_states[-1].numpy(), atol=1e-5)
        everything = torch.cat([prompt_states, answer_states]).mean(0)
        np.testing.assert_allclose(got["avg_all"][0], everything.numpy(), atol=1e-5)
        assert got["avg_gen"][1] == tiny.tokenizer.decode(answer, skip_special_tokens=True).strip()


def test_answer_ends_at_end_of_sequence_token(tiny, monkeypatch):
    text = TEXTS[0]
    _, answer, _, _ = reference_generation(tiny, text, -1, max_new_tokens=6)
    stop = next(t for t in answer[1:] if t != answer[0])  # a token that appears after the first one
    monkeypatch.setattr(tiny.backend, "end_ids", torch.tensor([stop]))
    _, cut, _, answer_states = reference_generation(tiny, text, -1, max_new_tokens=6)
    assert stop not in cut and 1 <= len(cut) < 6
    emb, generated = tiny.encode(text, INSTRUCTION, readout="avg_gen", max_new_tokens=6, return_generations=True)
    assert generated == tiny.tokenizer.decode(cut, skip_special_tokens=True).strip()
    assert len(answer_states) == len(cut) + 1
    np.testing.assert_allclose(emb, answer_states.mean(0).numpy(), atol=1e-5)


def test_filter_words_drop_their_states_from_avg_gen(tiny):
    text = TEXTS[0]
    _, answer, _, answer_states = reference_generation(tiny, text, -1, max_new_tokens=5)
    word = tiny.tokenizer.decode([answer[0]]).strip()
    assert word, "the first generated token should spell something"
    drop = [
        j + 1
        for j, t in enumerate(answer[: len(answer_states) - 1])
        if tiny.tokenizer.decode([t]).strip().lower() == word.lower()
    ]
    keep = [j for j in range(len(answer_states)) if j not in drop]
    emb = tiny.encode(text, INSTRUCTION, readout="avg_gen", max_new_tokens=5, filter_words=[word.upper()])
    np.testing.assert_allclose(emb, answer_states[keep].mean(0).numpy(), atol=1e-5)


@pytest.mark.parametrize("readout", ["fst_gen", "avg_ppt", "avg_gen", "last_gen", "avg_all"])
def test_result_does_not_depend_on_the_batch(tiny, readout):
    together = tiny.encode(TEXTS, INSTRUCTION, readout=readout, batch_size=3, max_new_tokens=4)
    alone = np.stack([tiny.encode(t, INSTRUCTION, readout=readout, max_new_tokens=4) for t in TEXTS])
    assert together.shape == (len(TEXTS), tiny.embedding_dim)
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_per_text_instructions_equal_separate_calls(tiny):
    instructions = ["What animal?", "How does the writer feel?", "What animal?", "Is it a story?", "Who?"]
    together = tiny.encode(TEXTS, instructions, batch_size=2)
    alone = np.stack([tiny.encode(t, i) for t, i in zip(TEXTS, instructions)])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_instruction_changes_the_embedding(tiny):
    a = tiny.encode(TEXTS[0], "What animal is mentioned?")
    b = tiny.encode(TEXTS[0], "How does the writer feel?")
    raw = tiny.encode(TEXTS[0], None)
    assert not np.allclose(a, b, atol=1e-3) and not np.allclose(a, raw, atol=1e-3)
    np.testing.assert_array_equal(a, tiny.encode(TEXTS[0], "What animal is mentioned?"))


def test_raw_text_without_instruction(tiny):
    states = all_states(tiny, tiny.tokenizer(TEXTS[1])["input_ids"])[-1][0]
    np.testing.assert_allclose(tiny.encode(TEXTS[1], readout="avg_ppt"), states.mean(0).numpy(), atol=1e-5)


def test_chat_template(tiny):
    rendered = tiny.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{TEXTS[0]}\n\n{INSTRUCTION}"}], tokenize=False, add_generation_prompt=True
    )
    states = all_states(tiny, tiny.tokenizer(rendered, add_special_tokens=False)["input_ids"])[-1][0]
    np.testing.assert_allclose(tiny.encode(TEXTS[0], INSTRUCTION, template="chat"), states[-1].numpy(), atol=1e-5)


def test_fields_fill_instruction_placeholders(tiny):
    heads = ["cat", "fox"]
    by_name = tiny.encode(TEXTS[:2], "What about the {head}?", fields={"head": heads})
    by_record = tiny.encode(TEXTS[:2], "What about the {head}?", fields=[{"head": h} for h in heads])
    filled = tiny.encode(TEXTS[:2], [f"What about the {h}?" for h in heads])
    np.testing.assert_allclose(by_name, filled, atol=1e-5)
    np.testing.assert_allclose(by_record, filled, atol=1e-5)


def test_sampling_is_reproducible_with_a_seed(tiny):
    kwargs = dict(readout="avg_gen", temperature=1.0, top_p=0.9, max_new_tokens=6, seed=7, return_generations=True)
    first, answers1 = tiny.encode(TEXTS, INSTRUCTION, **kwargs)
    second, answers2 = tiny.encode(TEXTS, INSTRUCTION, **kwargs)
    np.testing.assert_array_equal(first, second)
    assert answers1 == answers2


def test_return_generations_with_a_single_pass_readout(tiny):
    plain = tiny.encode(TEXTS, INSTRUCTION)
    emb, answers = tiny.encode(TEXTS, INSTRUCTION, return_generations=True, max_new_tokens=3)
    np.testing.assert_allclose(emb, plain, atol=1e-5)
    assert len(answers) == len(TEXTS) and all(isinstance(a, str) for a in answers)


def test_output_forms(tiny):
    dim = tiny.embedding_dim
    assert tiny.get_sentence_embedding_dimension() == dim
    assert tiny.encode("I love my cat", INSTRUCTION).shape == (dim,)
    empty = tiny.encode([], INSTRUCTION)
    assert isinstance(empty, np.ndarray) and empty.shape == (0, dim)
    tensor = tiny.encode(TEXTS, INSTRUCTION, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (len(TEXTS), dim)
    as_list = tiny.encode(TEXTS, INSTRUCTION, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == len(TEXTS)
    unit = tiny.encode(TEXTS, INSTRUCTION, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    raw = tiny.encode(TEXTS, INSTRUCTION)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((None,), {}, TypeError, "sentences must be a string or a list of strings, got NoneType"),
        ((["ok", None],), {}, TypeError, r"sentences\[1\] is None"),
        ((["ok", 3],), {}, TypeError, r"sentences\[1\] is 3 \(int\)"),
        ((["ok", "  "],), {}, ValueError, r"sentences\[1\] is empty"),
        ((["a", "b", "c"], ["x", "y"]), {}, ValueError, "instruction has 2 entries for 3 texts"),
        ((["a"], [5]), {}, TypeError, r"instruction\[0\] is 5"),
        ((["a"], "q"), {"layer": 4}, ValueError, "layer 4 does not exist: the model has 3 layers"),
        ((["a"], "q"), {"readout": "mean"}, ValueError, "unknown readout 'mean'"),
        ((["a"], "q"), {"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ((["a"], "q"), {"max_new_tokens": 0}, ValueError, "max_new_tokens must be a positive int"),
        ((["a"], "q"), {"top_p": 0}, ValueError, r"top_p must be in \(0, 1\]"),
        ((["a"], "q"), {"fields": {"head": ["x", "y"]}}, ValueError, r"fields\['head'\] must hold one value per text"),
    ],
)
def test_bad_input_is_named(tiny, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny.encode(*args, **kwargs)


def test_bad_model_arguments(tiny_model_dir):
    from inbedder import InBedder

    with pytest.raises(ValueError, match="layer 9 does not exist"):
        InBedder(str(tiny_model_dir), layer=9)
    with pytest.raises(ValueError, match="max_length=1000 exceeds the model's 256 positions"):
        InBedder(str(tiny_model_dir), max_length=1000)
    with pytest.raises(ValueError, match="unknown dtype 'float33'"):
        InBedder(str(tiny_model_dir), dtype="float33")


def test_length_sorted_batches_respect_count_and_token_budget():
    from inbedder.runner import length_sorted_batches

    widths = [10, 50, 20, 50, 5, 30]
    assert length_sorted_batches(widths, batch_size=2, max_tokens=None) == [[1, 3], [5, 2], [0, 4]]
    # two 50-wide rows fill 100 tokens; three rows under a 30-wide first fit (90); the fourth would not
    assert length_sorted_batches(widths, batch_size=8, max_tokens=100) == [[1, 3], [5, 2, 0], [4]]
    assert length_sorted_batches([300, 10], batch_size=8, max_tokens=100) == [[0], [1]]  # a long text goes alone
    assert length_sorted_batches([], batch_size=8, max_tokens=100) == []


def test_max_batch_tokens_is_checked(tiny_model_dir):
    from inbedder import InBedder

    assert InBedder(str(tiny_model_dir), max_length=64).max_batch_tokens == 1024  # the CPU default
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive int or None, got 0"):
        InBedder(str(tiny_model_dir), max_length=64, max_batch_tokens=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": 999}, "layer 999 does not exist"),
        ({"readout": "nope"}, "unknown readout 'nope'"),
        ({"max_length": 0}, "max_length must be a positive number of tokens, got 0"),
        ({"postprocess": "whiten"}, "unknown postprocess 'whiten'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_settings_are_refused_before_the_weights_load(tiny_model_dir, tmp_path, kwargs, message):
    import shutil

    from inbedder import InBedder

    weightless = tmp_path / "weightless"  # any attempt to load weights would fail with another message
    shutil.copytree(tiny_model_dir, weightless, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ValueError, match=message):
        InBedder(str(weightless), **kwargs)


@pytest.mark.parametrize(
    "option, message",
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive int, got 0"),
        ({"num_samples": 0}, "num_samples must be a positive int, got 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"layer": "last"}, "layer must be an int"),
    ],
)
def test_encode_options_check_their_own_values(option, message):
    from inbedder import EncodeOptions

    with pytest.raises(ValueError, match=message):
        EncodeOptions(**option)


def test_check_refuses_what_encode_would_refuse_without_running_the_model(tiny):
    with tiny.runner.watch(lambda batch: pytest.fail("check ran the model")):
        tiny.check(readout="avg_gen", layer=1)
        with pytest.raises(ValueError, match="layer 99 does not exist"):
            tiny.check(layer=99)
        with pytest.raises(ValueError, match="unknown readout 'nope'"):
            tiny.check(readout="nope")
        with pytest.raises(ValueError, match="reads the LM head"):
            tiny.check(readout="fst_head", layer=1)


def test_truncate_dim_keeps_a_projections_prefix_and_is_refused_elsewhere(tiny):
    full = tiny.encode(["I love my cat", "the dog"], "Animal?", readout="fst_head_rp")
    cut = tiny.encode(["I love my cat", "the dog"], "Animal?", readout="fst_head_rp", truncate_dim=128)
    np.testing.assert_allclose(cut, full[:, :128], atol=1e-6)
    unit = tiny.encode(["I love my cat"], "Animal?", readout="fst_head_rp", truncate_dim=64, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)  # normalized after the cut
    with pytest.raises(ValueError, match="not to 'fst_gen': its numbers have no such order"):
        tiny.encode(["I love my cat"], "Animal?", readout="fst_gen", truncate_dim=8)
    with pytest.raises(ValueError, match=r"truncate_dim=2048 is more than readout 'fst_head_rp' gives \(1024"):
        tiny.check(readout="fst_head_rp", truncate_dim=2048)


def test_a_readout_registered_again_with_other_code_does_not_read_the_old_rows(tiny, tmp_path):
    store = tmp_path / "store.sqlite"
    register_readout("probe", "first state", lambda run, kept: run.answer_states[:, 0])
    try:
        first = tiny.encode(TEXTS, INSTRUCTION, readout="probe", cache=store)
    finally:
        unregister_readout("probe")
    register_readout("probe", "twice the first state", lambda run, kept: 2 * run.answer_states[:, 0])
    try:
        second = tiny.encode(TEXTS, INSTRUCTION, readout="probe", cache=store)
    finally:
        unregister_readout("probe")
    np.testing.assert_allclose(second, 2 * first, rtol=1e-5, atol=1e-6)


def test_usage_counts_each_prompt_as_the_tokenizer_does(tiny):
    from inbedder.templates import PromptTemplate

    def lengths(instruction):
        qa = PromptTemplate.from_spec("qa", tiny.tokenizer)
        return [len(tiny.prompt_tokenizer(t, instruction, qa)) for t in TEXTS]

    vectors, usage = tiny.encode(TEXTS, INSTRUCTION, return_usage=True)
    expected = lengths(INSTRUCTION)
    assert usage == expected and vectors.shape[0] == len(TEXTS)
    vectors, answers, usage = tiny.encode(TEXTS, INSTRUCTION, return_generations=True, return_usage=True)
    assert len(answers) == len(usage) == len(TEXTS)
    (_, first), (_, second) = tiny.encode_multi(TEXTS, [INSTRUCTION, "Why?"], return_usage=True)
    assert first == expected and second == lengths("Why?") != expected
    assert tiny.encode(TEXTS[0], INSTRUCTION, return_usage=True)[1] == expected[0]


def test_every_encode_option_has_a_case_each_engine_is_tested_with():
    from conftest import ENCODE_OPTION_CASES

    from inbedder.options import OPTION_NAMES

    assert sorted(ENCODE_OPTION_CASES) == sorted(OPTION_NAMES)  # a new option needs its case in conftest.py


@pytest.mark.parametrize(
    ("texts", "instruction", "message"),
    [
        (["fine", "x\ud800y"], "Q?", r"sentences\[1\] holds '\\ud800' at position 1, half of a surrogate pair"),
        (["fine"], "Q\udc80?", r"instruction holds '\\udc80' at position 1"),
        (["a", "b"], ["Q?", "\ud800"], r"instruction\[1\] holds '\\ud800' at position 0"),
    ],
)
def test_a_lone_surrogate_is_refused_by_name(tiny, texts, instruction, message):
    """What the CLI refuses when reading a file, refused from Python too (not a tokenizer's TypeError)."""
    with pytest.raises(InputError, match=message):
        tiny.encode(texts, instruction)


def test_top_tokens_reads_truncated_projections_and_names_other_widths(tiny_model_dir):
    model = InBedder(str(tiny_model_dir), readout="fst_head_rp")
    full = model.encode(["the cat sat"], "What animal?")
    truncated = model.encode(["the cat sat"], "What animal?", truncate_dim=256)
    cosine = truncated[0] @ full[0, :256] / np.linalg.norm(truncated[0]) / np.linalg.norm(full[0, :256])
    assert cosine > 0.9999  # the first 256 numbers of the projection
    assert len(model.top_tokens(truncated)) == 1
    with pytest.raises(InputError, match=r"top_tokens reads vectors of 32 numbers \(states\) or \d+ \(fst_head\), "
                       r"or up to 1024 \(fst_head_rp, truncated too\); got 20"):  # fmt: skip
        model.top_tokens(np.zeros((1, 20), dtype=np.float32))


def test_the_sentence_transformers_names_map_onto_the_instruction(tiny_model_dir):
    from inbedder import InBedder

    texts = ["great lamp", "it broke in a week"]
    prompts = {"query": "What is asked?", "document": "What is it about?"}
    model = InBedder(str(tiny_model_dir), max_length=64, prompts=prompts)
    asked = model.encode(texts, "What is it about?")
    np.testing.assert_allclose(model.encode(texts, prompt="What is it about?"), asked)
    np.testing.assert_allclose(model.encode(texts, prompt_name="document"), asked)
    np.testing.assert_allclose(model.encode_document(texts), asked)
    np.testing.assert_allclose(model.encode_query(texts), model.encode(texts, "What is asked?"))
    np.testing.assert_allclose(model.encode_query(texts, "Why?"), model.encode(texts, "Why?"))  # given wins
    with pytest.raises(
        ValueError, match=r"prompt_name 'title' is not one of this model's prompts; it has \['document', 'query'\]"
    ):
        model.encode(texts, prompt_name="title")
    with pytest.raises(
        ValueError, match=r"give one of instruction, prompt and prompt_name .*\['instruction', 'prompt'\]"
    ):
        model.encode(texts, "Why?", prompt="How?")
    with pytest.raises(ValueError, match="prompts must map names to instructions"):
        InBedder(str(tiny_model_dir), prompts={"query": 3})

    similarity = model.similarity(asked, asked[:1])
    a = asked / np.linalg.norm(asked, axis=1, keepdims=True)
    assert model.similarity_fn_name == "cosine" and tuple(similarity.shape) == (2, 1)
    np.testing.assert_allclose(similarity.numpy()[:, 0], a @ a[0], atol=1e-5)


def test_binary_precision_packs_the_signs_as_sentence_transformers_does(tiny_model_dir):
    from inbedder import InBedder

    model = InBedder(str(tiny_model_dir), max_length=64)
    vectors = model.encode(["great lamp", "it broke"], "Why?")
    packed = model.encode(["great lamp", "it broke"], "Why?", precision="ubinary")
    assert packed.dtype == np.uint8 and packed.shape == (2, vectors.shape[1] // 8)
    np.testing.assert_array_equal(packed, np.packbits(vectors > 0, axis=-1))
    signed = model.encode("great lamp", "Why?", precision="binary")
    np.testing.assert_array_equal(signed, (np.packbits(vectors[0] > 0) - 128).astype(np.int8))
    with pytest.raises(ValueError, match="precision 'int8' needs ranges from a calibration set"):
        model.encode(["a"], "Why?", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of float32, binary, ubinary, got 'float16'"):
        model.encode(["a"], "Why?", precision="float16")


def test_named_prompts_come_from_the_models_settings(tiny_model_dir, tmp_path):
    import shutil

    from inbedder import InBedder
    from inbedder.model_settings import write_settings

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    write_settings(folder, prompts={"query": "What is asked?"})
    assert InBedder(str(folder), max_length=64).prompts == {"query": "What is asked?"}
