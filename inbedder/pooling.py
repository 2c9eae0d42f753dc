"""Pooling hidden states into one vector per text, as a readout names it (see ``inbedder.readout``)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``states`` (B, T, H) where ``mask`` (B, T) is true."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


def pool_generation(
    name: str,
    prompt_states: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_states: torch.Tensor,
    answer_mask: torch.Tensor,
    kept_mask: torch.Tensor,
    token_column: int = 1,
) -> torch.Tensor:
    """Readouts over prompt states (B, P, H) and answer states (B, T, H).

    ``answer_states[:, 0]`` is the fst_gen state; ``answer_mask`` marks real answer states
    and ``kept_mask`` those that survive ``filter_words``. Columns from ``token_column`` on
    are the answer tokens' states (see ``inbedder.backends.Generation``): 1 when column 0
    is the state before the answer, 0 for a masked LM's mask slots.
    """
    if name == "fst_gen":
        return answer_states[:, 0]
    if name == "avg_ppt":
        return masked_mean(prompt_states, prompt_mask)
    if name == "avg_gen":
        return masked_mean(answer_states, kept_mask)
    if name == "last_gen":
        last = answer_mask.long().cumsum(1).argmax(1)
        return answer_states[torch.arange(len(last)), last]
    if name == "avg_all":
        states = torch.cat([prompt_states, answer_states[:, token_column:]], dim=1)
        return masked_mean(states, torch.cat([prompt_mask, answer_mask[:, token_column:]], dim=1))
    raise ValueError(f"unknown readout {name!r}")


def filter_mask(
    answer_mask: torch.Tensor,
    answer_tokens: list[list[int]],
    filter_words: frozenset[str],
    decode: Callable[[list[int]], str],
    token_column: int = 1,
) -> torch.Tensor:
    """``answer_mask`` without the states of answer tokens that spell a filtered word.

    Token j's state is column ``j + token_column``. With ``token_column=1`` the fst_gen
    state (column 0) is always kept; a row that would lose every state keeps them all.
    """
    if not filter_words:
        return answer_mask
    kept = answer_mask.clone()
    for row, tokens in enumerate(answer_tokens):
        for column, token in enumerate(tokens[: kept.shape[1] - token_column], start=token_column):
            if decode([token]).strip().lower() in filter_words:
                kept[row, column] = False
        if not kept[row].any():
            kept[row] = answer_mask[row]
    return kept
