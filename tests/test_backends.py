"""Masked and encoder-decoder backends on tiny random BERT, RoBERTa, T5 and BART, checked against
direct computations from the models' hidden states; family detection and per-family readouts."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from inbedder.backends import FAMILY_TABLE, CausalBackend, MaskedBackend, Seq2SeqBackend, detect_family

TEXTS = [
    "I love my cat",
    "The quick brown fox jumps over the lazy dog, and the dog does not mind.",
    "dog",
    "Reviews, tweets, stories and poems about my cat and my dog.",
    "I hate my cat",
]
LONG = "The quick brown fox jumps over the lazy dog. " * 20
INSTRUCTION = "What animal is mentioned?"
ALL_READOUTS = ["fst_gen", "avg_gen", "last_gen", "avg_ppt", "avg_all"]
SEQ2SEQ_READOUTS = ["fst_gen", "avg_gen", "last_gen", "avg_ppt"]


def load(directory, **kwargs):
    from inbedder import InBedder

    return InBedder(str(directory), max_length=kwargs.pop("max_length", 64), **kwargs)


@pytest.fixture(scope="module", params=["bert", "roberta"])
def masked(request):
    return load(request.getfixturevalue(f"{request.param}_dir"))


@pytest.fixture(scope="module", params=["t5", "bart"])
def seq2seq(request):
    return load(request.getfixturevalue(f"{request.param}_dir"))


# family detection and per-family readouts


def test_family_is_read_from_the_config(tiny_model_dir, bert_dir, roberta_dir, t5_dir, bart_dir):
    directories = [tiny_model_dir, bert_dir, roberta_dir, t5_dir, bart_dir]
    families = ["causal", "masked", "masked", "seq2seq", "seq2seq"]
    assert [detect_family(AutoConfig.from_pretrained(d)) for d in directories] == families
    for directory, family in zip(directories, families):  # the table's families never overlap
        config = AutoConfig.from_pretrained(directory)
        assert [f.name for f in FAMILY_TABLE.values() if f.recognises(config)] == [family]
    backends = [CausalBackend, MaskedBackend, MaskedBackend, Seq2SeqBackend, Seq2SeqBackend]
    for directory, family, backend in zip(directories, families, backends):
        model = load(directory)
        assert model.family == family and isinstance(model.backend, backend)
        assert model.readout.name == ("avg_gen" if family == "masked" else "fst_gen")


def test_family_argument_overrides_detection(bert_dir, tiny_model_dir):
    as_causal = load(bert_dir, family="causal")  # BERT has a causal LM head class too
    assert as_causal.family == "causal" and isinstance(as_causal.backend, CausalBackend)
    assert load(bert_dir, family="masked").family == "masked"
    with pytest.raises(ValueError, match="could not load .* as a masked language model"):
        load(tiny_model_dir, family="masked")
    with pytest.raises(ValueError, match="unknown model family 'encoder'; use 'auto' or one of causal, masked"):
        load(bert_dir, family="encoder")


def test_a_readout_the_family_lacks_is_refused_by_name(t5_dir, tiny_model_dir):
    with pytest.raises(ValueError, match="readout 'avg_all' is not available for seq2seq models; choose one of"):
        load(t5_dir, readout="avg_all")
    model = load(t5_dir)
    with pytest.raises(ValueError, match="readout 'avg_all' is not available for seq2seq models"):
        model.encode(TEXTS, INSTRUCTION, readout="avg_all")
    with pytest.raises(ValueError, match="mask_length applies to masked LMs; this is a causal model"):
        load(tiny_model_dir, mask_length=4)


# masked LMs


def slots_and_prompt(model, ids):
    """Positions of the mask slots (just before the closing special token) and of the prompt proper."""
    m = model.backend.mask_length
    slots = list(range(len(ids) - 1 - m, len(ids) - 1))
    special = set(model.tokenizer.all_special_ids)
    prompt = [j for j, t in enumerate(ids) if t not in special and j not in slots]
    return slots, prompt


@pytest.mark.parametrize("mask_length", [3, 5])
@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_masks_follow_the_prompt_and_long_inputs_are_cut(name, mask_length, request):
    model = load(request.getfixturevalue(f"{name}_dir"), mask_length=mask_length, max_length=64)
    tok = model.tokenizer
    ids = model.prompt_tokenizer(LONG, INSTRUCTION, model.template)
    opening, closing = model.prompt_tokenizer.prefix, model.prompt_tokenizer.suffix  # [CLS] and [SEP], or <s> and </s>
    assert len(opening) == 1 and len(closing) == 1
    assert len(ids) == 64  # max_length counts the masks
    assert ids[0] == opening[0] and ids[-1] == closing[0]
    assert ids[-1 - mask_length : -1] == [tok.mask_token_id] * mask_length
    cue = tok("\n\n### Response:", add_special_tokens=False)["input_ids"]
    question = tok(INSTRUCTION, add_special_tokens=False)["input_ids"]
    before_masks = ids[: -1 - mask_length]
    assert before_masks[-len(cue) :] == cue  # the prompt ends right before the masks, its question whole
    assert any(before_masks[j : j + len(question)] == question for j in range(len(before_masks)))
    full_input = tok(LONG, add_special_tokens=False)["input_ids"]
    head = tok("### Input:\n", add_special_tokens=False)["input_ids"]
    kept = before_masks[1 + len(head) :][:5]
    assert kept == full_input[:5] and before_masks.count(tok.mask_token_id) == 0
    raw = model.prompt_tokenizer("dog", None, None)  # no instruction: the text, then the masks
    assert raw[-1 - mask_length :] == [tok.mask_token_id] * mask_length + [closing[0]]


@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_masked_readouts_match_hidden_states(masked, layer):
    for text in [TEXTS[0], TEXTS[1], LONG]:
        ids = masked.prompt_tokenizer(text, INSTRUCTION, masked.template)
        with torch.no_grad():
            out = masked.backend.model(torch.tensor([ids]), output_hidden_states=True)
        states = out.hidden_states[layer][0]
        slots, prompt = slots_and_prompt(masked, ids)
        expected = {
            "fst_gen": states[slots[0]],
            "last_gen": states[slots[-1]],
            "avg_gen": states[slots].mean(0),
            "avg_ppt": states[prompt].mean(0),
            "avg_all": states[prompt + slots].mean(0),
        }
        answer = masked.tokenizer.decode(out.logits[0, slots].argmax(-1), skip_special_tokens=True).strip()
        for readout, vector in expected.items():
            got, generated = masked.encode(text, INSTRUCTION, readout=readout, layer=layer, return_generations=True)
            np.testing.assert_allclose(got, vector.numpy(), atol=1e-5, err_msg=readout)
            assert generated == answer


def test_masked_raw_text_reads_the_masks_after_the_text(masked):
    ids = masked.prompt_tokenizer(TEXTS[1], None, None)
    with torch.no_grad():
        states = masked.backend.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    slots, _ = slots_and_prompt(masked, ids)
    np.testing.assert_allclose(masked.encode(TEXTS[1]), states[slots].mean(0).numpy(), atol=1e-5)


def test_masked_filter_words_skip_the_masks_that_predict_them(bert_dir):
    model = load(bert_dir)
    ids = model.prompt_tokenizer(TEXTS[0], INSTRUCTION, model.template)
    with torch.no_grad():
        out = model.backend.model(torch.tensor([ids]), output_hidden_states=True)
    slots, _ = slots_and_prompt(model, ids)
    predicted = out.logits[0, slots].argmax(-1).tolist()
    word = model.tokenizer.decode([predicted[0]]).strip()
    keep = [s for s, t in zip(slots, predicted) if model.tokenizer.decode([t]).strip().lower() != word.lower()]
    expected = out.hidden_states[-1][0][keep or slots].mean(0)
    np.testing.assert_allclose(model.encode(TEXTS[0], INSTRUCTION, filter_words=[word]), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("readout", ALL_READOUTS)
def test_masked_result_does_not_depend_on_the_batch(masked, readout):
    texts = [*TEXTS, LONG]
    one, answers_one = masked.encode(texts, INSTRUCTION, readout=readout, batch_size=1, return_generations=True)
    four, answers_four = masked.encode(texts, INSTRUCTION, readout=readout, batch_size=4, return_generations=True)
    assert four.shape == (len(texts), masked.embedding_dim)
    np.testing.assert_allclose(four, one, atol=1e-4)
    assert answers_four == answers_one


def test_roberta_positions_start_after_the_padding_index(roberta_dir):
    model = load(roberta_dir, max_length=None)
    assert model.backend.max_positions == 128 and model.max_seq_length == 128
    ids = model.prompt_tokenizer(LONG * 3, INSTRUCTION, model.template)
    assert len(ids) == 128
    assert model.encode(LONG * 3, INSTRUCTION).shape == (32,)  # the longest prompt fits the positions


# encoder-decoder LMs


def direct_seq2seq(model, ids, decoder_ids):
    with torch.no_grad():
        return model.backend.model(
            input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder_ids]), output_hidden_states=True
        )


def reference_answer(model, ids, max_new_tokens):
    """Greedy answer tokens (up to the end token) from a plain generate."""
    backend = model.backend
    end = backend.end_ids.tolist()
    with torch.no_grad():
        seq = backend.model.generate(
            torch.tensor([ids]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=end,
            decoder_start_token_id=backend.start_id,
            pad_token_id=backend.pad_id,
        )[0].tolist()
    answer = seq[1:]
    kept = next((i for i, t in enumerate(answer) if t in end), len(answer))
    return answer, kept


@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_seq2seq_single_pass_readouts(seq2seq, layer):
    backend = seq2seq.backend
    for text in [TEXTS[0], TEXTS[1], LONG]:
        ids = seq2seq.prompt_tokenizer(text, INSTRUCTION, seq2seq.template)
        out = direct_seq2seq(seq2seq, ids, [backend.start_id])
        fst = seq2seq.encode(text, INSTRUCTION, layer=layer)
        np.testing.assert_allclose(fst, out.decoder_hidden_states[layer][0, 0].numpy(), atol=1e-5)
        encoder_states = out.encoder_hidden_states[backend.encoder_layer(layer % (backend.num_layers + 1))][0]
        avg = seq2seq.encode(text, INSTRUCTION, layer=layer, readout="avg_ppt")
        np.testing.assert_allclose(avg, encoder_states.mean(0).numpy(), atol=1e-5)


def test_seq2seq_encoder_layer_at_the_same_relative_depth(t5_dir, bart_dir):
    t5, bart = load(t5_dir).backend, load(bart_dir).backend
    assert [t5.encoder_layer(k) for k in range(3)] == [0, 1, 2]  # equal depths: the same index
    assert (bart.encoder_layers, bart.num_layers) == (3, 2)
    assert [bart.encoder_layer(k) for k in range(3)] == [0, 1, 3]  # the last layer is each stack's last


@pytest.mark.parametrize("layer", [-1, 1])
def test_seq2seq_generation_readouts_match_direct_computation(seq2seq, layer):
    for text in TEXTS[:3]:
        ids = seq2seq.prompt_tokenizer(text, INSTRUCTION, seq2seq.template)
        answer, kept = reference_answer(seq2seq, ids, max_new_tokens=5)
        n_states = min(kept + 1, len(answer))  # the start token's state plus one per answer token that has one
        out = direct_seq2seq(seq2seq, ids, [seq2seq.backend.start_id, *answer[: n_states - 1]])
        states = out.decoder_hidden_states[layer][0]
        got = {
            name: seq2seq.encode(
                text, INSTRUCTION, readout=name, layer=layer, max_new_tokens=5, return_generations=True
            )
            for name in ("avg_gen", "last_gen")
        }
        np.testing.assert_allclose(got["avg_gen"][0], states.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(got["last_gen"][0], states[-1].numpy(), atol=1e-5)
        assert got["avg_gen"][1] == seq2seq.tokenizer.decode(answer[:kept], skip_special_tokens=True).strip()


def test_seq2seq_answer_ends_at_the_end_token(bart_dir, monkeypatch):
    model = load(bart_dir)
    ids = model.prompt_tokenizer(TEXTS[0], INSTRUCTION, model.template)
    answer, _ = reference_answer(model, ids, max_new_tokens=6)
    stop = answer[2]
    monkeypatch.setattr(model.backend, "end_ids", torch.tensor([stop]))
    emb, generated = model.encode(TEXTS[0], INSTRUCTION, readout="avg_gen", max_new_tokens=6, return_generations=True)
    kept = answer.index(stop)
    assert generated == model.tokenizer.decode(answer[:kept], skip_special_tokens=True).strip()
    states = direct_seq2seq(model, ids, [model.backend.start_id, *answer[:kept]]).decoder_hidden_states[-1][0]
    np.testing.assert_allclose(emb, states.mean(0).numpy(), atol=1e-5)


@pytest.mark.parametrize("readout", SEQ2SEQ_READOUTS)
def test_seq2seq_result_does_not_depend_on_the_batch(seq2seq, readout):
    texts = [*TEXTS, LONG]
    options = dict(readout=readout, max_new_tokens=4, return_generations=True)
    one, answers_one = seq2seq.encode(texts, INSTRUCTION, batch_size=1, **options)
    four, answers_four = seq2seq.encode(texts, INSTRUCTION, batch_size=4, **options)
    assert four.shape == (len(texts), seq2seq.embedding_dim)
    np.testing.assert_allclose(four, one, atol=1e-4)
    assert answers_four == answers_one


# shared by every family


@pytest.mark.parametrize("name", ["bert", "roberta", "t5", "bart"])
def test_vocabulary_logits_are_the_lm_heads(name, request):
    model = load(request.getfixturevalue(f"{name}_dir"))
    ids = model.prompt_tokenizer(TEXTS[0], INSTRUCTION, model.template)
    with torch.no_grad():
        if model.family == "masked":
            out = model.backend.model(torch.tensor([ids]), output_hidden_states=True)
            states, logits = out.hidden_states[-1][0], out.logits[0]
        else:
            out = direct_seq2seq(model, ids, [model.backend.start_id, *ids[:4]])
            states, logits = out.decoder_hidden_states[-1][0], out.logits[0]
    np.testing.assert_allclose(model.backend.vocabulary_logits(states), logits, atol=1e-4)
    assert len(model.top_tokens(states[:2].numpy(), top=3)) == 2


@pytest.mark.parametrize("name", ["bert", "t5"])
def test_encode_multi_runs_each_instruction_through_the_same_loop(name, request):
    model = load(request.getfixturevalue(f"{name}_dir"))
    instructions = [INSTRUCTION, "How does the writer feel?"]
    multi = model.encode_multi(TEXTS, instructions, batch_size=2, return_generations=True, max_new_tokens=3)
    for instruction, (emb, answers) in zip(instructions, multi):
        expected, expected_answers = model.encode(TEXTS, instruction, return_generations=True, max_new_tokens=3)
        np.testing.assert_allclose(emb, expected, atol=1e-4)
        assert answers == expected_answers


@pytest.mark.parametrize("name", ["tiny_model", "bert", "t5"])
def test_fst_head_is_the_square_root_of_the_first_answer_tokens_distribution(name, request):
    model = load(request.getfixturevalue(f"{name}_dir"))
    got = model.encode(TEXTS, INSTRUCTION, readout="fst_head")
    states = torch.as_tensor(model.encode(TEXTS, INSTRUCTION, readout="fst_gen"))
    with torch.no_grad():  # the head on its own: the model's output layer, then a softmax
        if model.family == "causal":
            logits = model.backend.model.get_output_embeddings()(states)
        else:
            logits = model.backend.vocabulary_logits(states)
    expected = logits.softmax(-1).sqrt().numpy()
    assert got.shape == (len(TEXTS), logits.shape[-1])
    assert load(request.getfixturevalue(f"{name}_dir"), readout="fst_head").embedding_dim == logits.shape[-1]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)  # a distribution's square roots
    # its top tokens are the head's top tokens of the state it reads
    assert model.top_tokens(got[:2], top=3) == model.top_tokens(states[:2].numpy(), top=3)


def test_fst_head_reads_the_last_layer_only(tiny_model_dir):
    model = load(tiny_model_dir)
    with pytest.raises(ValueError, match=r"readout 'fst_head' reads the LM head.*layer must be -1 \(or 3\), got 1"):
        model.encode(TEXTS, INSTRUCTION, readout="fst_head", layer=1)
    assert model.encode(TEXTS[:1], INSTRUCTION, readout="fst_head", layer=model.num_layers).shape[0] == 1


def plus_minus_one(rows: int, columns: int) -> np.ndarray:
    """The fixed projection's signs, from NumPy's PCG64 raw stream (seed 0), computed here on their own."""
    words = np.random.PCG64(0).random_raw(rows * 1024 // 64).astype("<u8")
    bits = np.unpackbits(words.view(np.uint8).reshape(rows, 128), axis=1)[:, :columns]
    return bits.astype(np.float32) * 2 - 1


@pytest.mark.parametrize("name", ["tiny_model", "bert"])
def test_fst_head_rp_is_a_fixed_random_projection_of_fst_head(name, request):
    model = load(request.getfixturevalue(f"{name}_dir"))
    full = model.encode(TEXTS, INSTRUCTION, readout="fst_head")
    got = model.encode(TEXTS, INSTRUCTION, readout="fst_head_rp")
    signs = plus_minus_one(full.shape[1], 1024)
    assert got.shape == (len(TEXTS), 1024) and model.dimension("fst_head_rp") == 1024
    np.testing.assert_allclose(got, full @ signs / 32, atol=1e-4)
    # a prefix is the smaller projection (up to its scale), and cosines stay near the distributions'
    np.testing.assert_allclose(model.head.project(torch.as_tensor(full), 256).numpy(), got[:, :256] * 2, atol=1e-4)
    unit = got / np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(unit @ unit.T, full @ full.T, atol=0.1)


@pytest.mark.parametrize("name", ["tiny_model", "bert"])
def test_fst_head_top_rp_projects_the_64_largest_log_probability_margins(name, request):
    model = load(request.getfixturevalue(f"{name}_dir"))
    log_probabilities = 2 * np.log(model.encode(TEXTS, INSTRUCTION, readout="fst_head").astype(np.float64))
    margins = np.zeros_like(log_probabilities)
    for row, values in enumerate(log_probabilities):
        best = np.argsort(values)[::-1][:64]
        margins[row, best] = values[best] - values[best[-1]]
    margins /= np.linalg.norm(margins, axis=1, keepdims=True)
    got = model.encode(TEXTS, INSTRUCTION, readout="fst_head_top_rp")
    assert got.shape == (len(TEXTS), 1024) and model.dimension("fst_head_top_rp") == 1024
    np.testing.assert_allclose(got, margins @ plus_minus_one(margins.shape[1], 1024) / 32, atol=2e-4)


def test_a_projected_readout_still_names_its_top_tokens(tiny_model_dir):
    model = load(tiny_model_dir, readout="fst_head_rp")
    vocabulary = model.dimension("fst_head")
    words = [t for t in range(vocabulary) if model.tokenizer.decode([t]).strip().isalpha()][-3:]
    peaked = torch.full((3, vocabulary), 0.01)
    peaked[[0, 1, 2], words] = 1.0  # three distributions, each with one strong token
    projected = model.head.project(peaked / peaked.norm(dim=1, keepdim=True), 1024)
    assert model.head.back_project(projected).argmax(1).tolist() == words
    # top_tokens reads vectors of the model's projected readout through that back-projection
    named = [found[0] for found in model.top_tokens(projected.numpy(), top=1)]
    assert named == [model.tokenizer.decode([t]).strip() for t in words]


@pytest.mark.parametrize(
    ("name", "readouts"), [("tiny_model_dir", ALL_READOUTS), ("bert_dir", ALL_READOUTS), ("t5_dir", SEQ2SEQ_READOUTS)]
)
def test_padding_batches_to_a_multiple_changes_no_vector_and_no_answer(name, readouts, request):
    """Every family, every readout, one instruction and several (a causal LM's shared prefix): the same
    vectors and answers with batches padded to a multiple of 32 tokens, and every pass that wide."""
    from inbedder import InBedder

    source = str(request.getfixturevalue(name))
    plain = InBedder(source, dtype="float32", max_length=96)
    padded = InBedder(source, dtype="float32", max_length=96, pad_multiple=32)
    widths, pad = [], padded.backend.pad

    def recorded(batch, multiple=1):
        input_ids, mask = pad(batch, multiple)
        widths.append(input_ids.shape[-1])
        return input_ids, mask

    padded.backend.pad = recorded
    texts, questions = [*TEXTS, LONG], [INSTRUCTION, "Which colour is it?"]
    for readout in readouts:
        options = {"readout": readout, "batch_size": 2, "return_generations": True, "max_new_tokens": 3}
        plain_results = plain.encode_multi(texts, questions, **options)
        for a, b in zip(plain_results, padded.encode_multi(texts, questions, **options)):
            np.testing.assert_allclose(b[0], a[0], atol=1e-4)
            assert b[1] == a[1]
    assert widths and all(w % 32 == 0 for w in widths)
