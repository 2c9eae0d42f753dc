"""What every backend hands to the readouts, and the decoding settings they accept."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding at temperature 0, sampling (with ``top_p``) above it."""

    max_new_tokens: int = 8
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


@dataclass
class Generation:
    """Hidden states at one layer for a batch of prompts and their generated answers.

    ``answer_states[:, 0]`` is the state at the last prompt position (it predicts the
    first answer token); ``answer_states[:, j]`` is the state at the j-th answer token.
    ``answer_mask`` marks the states that belong to the answer (not to padding after
    the end of an answer). ``answer_tokens`` holds each answer's token ids.
    """

    prompt_states: torch.Tensor
    prompt_mask: torch.Tensor
    answer_states: torch.Tensor
    answer_mask: torch.Tensor
    answer_tokens: list[list[int]]
