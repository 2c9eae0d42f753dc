import pytest
import torch

from inbedder.pooling import filter_mask, masked_mean, pool_generation
from inbedder.readout import Readout


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


def test_pool_generation_uses_only_answer_states():
    prompt = torch.randn(2, 3, 4)
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    answer = torch.randn(2, 4, 4)
    answer_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    args = (prompt, prompt_mask, answer, answer_mask, answer_mask)
    assert torch.allclose(pool_generation("avg_gen", *args)[0], answer[0, :2].mean(0))
    assert torch.allclose(pool_generation("last_gen", *args), torch.stack([answer[0, 1], answer[1, 3]]))
    expected_all = torch.cat([prompt[0, 1:], answer[0, 1:2]]).mean(0)
    assert torch.allclose(pool_generation("avg_all", *args)[0], expected_all)


def test_filter_mask_drops_listed_words_but_never_fst_gen():
    vocab = {1: " The", 2: " cat", 3: "the"}
    mask = torch.ones(2, 3, dtype=torch.bool)
    kept = filter_mask(mask, [[1, 2], [3, 3]], frozenset({"the"}), lambda ids: vocab[ids[0]])
    assert kept.tolist() == [[True, False, True], [True, False, False]]
    assert filter_mask(mask, [[1, 2], [3, 3]], frozenset(), lambda ids: "") is mask
