import pytest
import torch

from inbedder.backends import AnswerStates
from inbedder.pooling import filter_mask
from inbedder.readout import KINDS, READOUTS, Readout, masked_mean, register_readout


def test_unknown_readout_names_the_choices():
    with pytest.raises(ValueError, match="unknown readout 'mean'.*fst_gen"):
        Readout("mean")


@pytest.mark.parametrize("layer, index", [(0, 0), (3, 3), (-1, 3), (-4, 0), (-2, 2)])
def test_layer_index(layer, index):
    assert Readout("fst_gen", layer).layer_index(num_layers=3) == index


@pytest.mark.parametrize("layer", [4, -5, 100])
def test_layer_that_does_not_exist(layer):
    with pytest.raises(ValueError, match=rf"layer {layer} does not exist: the model has 3 layers.*\[-4, 3\]"):
        Readout("fst_gen", layer).layer_index(num_layers=3)


def test_masked_mean_ignores_masked_positions():
    states = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    expected = torch.stack([states[0, 1:].mean(0), states[1, 0]])
    assert torch.allclose(masked_mean(states, mask), expected)


def pool(name, run, kept=None):
    return KINDS[name].pool(run, run.answer_mask if kept is None else kept)


def test_pooling_uses_only_answer_states():
    prompt = torch.randn(2, 3, 4)
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    answer = torch.randn(2, 4, 4)
    answer_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    run = AnswerStates(prompt, prompt_mask, answer, answer_mask, [[5], [5, 6, 7]])
    assert torch.allclose(pool("fst_gen", run), answer[:, 0])
    assert torch.allclose(pool("avg_gen", run)[0], answer[0, :2].mean(0))
    assert torch.allclose(pool("last_gen", run), torch.stack([answer[0, 1], answer[1, 3]]))
    assert torch.allclose(pool("avg_ppt", run)[0], prompt[0, 1:].mean(0))
    expected_all = [torch.cat([prompt[0, 1:], answer[0, 1:2]]).mean(0), torch.cat([prompt[1], answer[1, 1:]]).mean(0)]
    assert torch.allclose(pool("avg_all", run), torch.stack(expected_all), atol=1e-6)
    # a masked LM's slots (token_column 0) are all answer tokens
    slots = AnswerStates(prompt, prompt_mask, answer, answer_mask, [[5, 6], [5, 6, 7, 8]], token_column=0)
    assert torch.allclose(pool("avg_all", slots)[0], torch.cat([prompt[0, 1:], answer[0, :2]]).mean(0), atol=1e-6)


def test_registering_needs_exactly_one_way_to_embed():
    with pytest.raises(ValueError, match="give exactly one of pool, reencodes=True or head_of"):
        register_readout("odd", "nothing", None)
    with pytest.raises(ValueError, match="head_of must name a pooling readout, got 're_encode'"):
        register_readout("odd", "head of re-encoding", head_of="re_encode")
    with pytest.raises(ValueError, match="readout 'fst_gen' is already registered"):
        register_readout("fst_gen", "again", lambda run, kept: run.answer_states[:, 0])
    assert "odd" not in READOUTS


def test_filter_mask_drops_listed_words_but_never_fst_gen():
    vocab = {1: " The", 2: " cat", 3: "the"}
    mask = torch.ones(2, 3, dtype=torch.bool)
    kept = filter_mask(mask, [[1, 2], [3, 3]], frozenset({"the"}), lambda ids: vocab[ids[0]])
    assert kept.tolist() == [[True, False, True], [True, False, False]]
    assert filter_mask(mask, [[1, 2], [3, 3]], frozenset(), lambda ids: "") is mask


def test_a_projection_size_applies_to_head_readouts_in_multiples_of_8():
    from inbedder.readout import register_readout

    with pytest.raises(ValueError, match="head_dim applies to head readouts, as a multiple of 8"):
        register_readout("bad_projection", "x", head_of="fst_gen", head_dim=100)
    with pytest.raises(ValueError, match="head_dim applies to head readouts"):
        register_readout("bad_projection", "x", lambda run, kept: run.answer_states[:, 0], head_dim=64)


def test_a_head_top_applies_to_head_readouts_of_two_tokens_or_more():
    from inbedder.pooling import top_margins
    from inbedder.readout import register_readout

    for bad in (1, 0, True):
        with pytest.raises(ValueError, match=f"head_top applies to head readouts, as 2 or more tokens, got {bad}"):
            register_readout("bad_top", "x", head_of="fst_gen", head_top=bad)
    with pytest.raises(ValueError, match="head_top applies to head readouts"):
        register_readout("bad_top", "x", lambda run, kept: run.answer_states[:, 0], head_top=8)
    assert "bad_top" not in READOUTS
    with pytest.raises(ValueError, match="the head has 5 tokens, fewer than the 8 to keep"):
        top_margins(torch.zeros(1, 5), 8)


def test_top_margins_keep_the_largest_logits_less_the_last_kept_at_unit_length():
    from inbedder.pooling import top_margins

    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 5.0, 4.0, 0.0, 1.0]])
    expected = torch.tensor([[0.0, 2.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0, 0.0]])
    got = top_margins(logits, 3)
    torch.testing.assert_close(got, expected / expected.norm(dim=1, keepdim=True))
    # margins of log-probabilities: a constant added to a row's logits changes nothing
    torch.testing.assert_close(top_margins(logits + torch.tensor([[7.0], [-3.0]]), 3), got)


def test_each_readout_is_a_type_of_its_mode_and_keyed_by_what_it_computes():
    from dataclasses import replace

    from inbedder.readout import HeadReadout, PooledReadout, ReencodedReadout

    assert isinstance(KINDS["fst_gen"], PooledReadout) and KINDS["fst_gen"].stored == "fst_gen"
    assert isinstance(KINDS["re_encode"], ReencodedReadout) and KINDS["re_encode"].generating
    head, projected = KINDS["fst_head"], KINDS["fst_head_rp"]
    assert isinstance(projected, HeadReadout) and projected.stored == "fst_gen" and projected.prefix_dim == 1024
    assert head.prefix_dim is None and KINDS["fst_gen"].prefix_dim is None
    definition = KINDS["avg_gen"].definition
    assert replace(KINDS["avg_gen"], description="other words").definition == definition
    assert replace(KINDS["avg_gen"], pool=KINDS["fst_gen"].pool).definition != definition
    assert replace(projected, dim=512).definition != projected.definition
    assert replace(projected, top=64).definition != projected.definition
