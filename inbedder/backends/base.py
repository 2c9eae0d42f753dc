"""What every backend offers the embedder, what it hands to the readouts, and the decoding settings.

A backend wraps one model family. The embedder only pads token ids, asks for one pass
(``forward``) or one generation (``generate``), and pools the ``AnswerStates`` it gets back
with the shared readout grammar (``inbedder.readout``); nothing else about a family leaks out.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from inbedder.errors import InputError, check_positive_int


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding at temperature 0, sampling (with ``top_p``) above it; ``num_samples`` answers per prompt."""

    max_new_tokens: int = 8
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1

    def __post_init__(self) -> None:
        check_positive_int("max_new_tokens", self.max_new_tokens)
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        check_positive_int("num_samples", self.num_samples)
        if self.num_samples > 1 and not self.sampling:
            raise InputError(
                f"num_samples={self.num_samples} needs temperature > 0: at temperature 0 every sample is the "
                "same greedy answer"
            )

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def generation_config(self, pad_id: int, end_ids: torch.Tensor, **extra: Any) -> GenerationConfig:
        """The transformers decoding config: these settings, all hidden states, the answer's end ids."""
        sampling = {"temperature": self.temperature, "top_p": self.top_p} if self.sampling else {}
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.sampling,
            pad_token_id=pad_id,
            eos_token_id=end_ids.tolist(),
            output_hidden_states=True,
            return_dict_in_generate=True,
            **sampling,
            **extra,
        )


@dataclass
class AnswerStates:
    """Hidden states at one layer for a batch of prompts and their answers.

    ``prompt_states`` (B, P, H) with ``prompt_mask`` marking the prompt states the prompt
    readouts average over. ``answer_states`` (B, T, H): column 0 is the ``fst_gen`` state,
    and ``answer_mask`` marks the columns that belong to the answer (not to padding after
    its end). ``answer_tokens`` holds each answer's token ids; ``answer_tokens[b][j]``
    belongs to column ``j + token_column``:

    - generated answers (causal, seq2seq), ``token_column=1``: column 0 is the state that
      predicts the first answer token (the last prompt position, or the decoder's start
      token), column j the state at the j-th answer token;
    - answer slots (masked), ``token_column=0``: column j is the j-th mask, which predicts
      the j-th answer token.

    Columns before ``token_column`` hold no answer token, so ``avg_all`` leaves them out.
    After a single pass (no generation) ``answer_tokens`` are empty lists.
    """

    prompt_states: torch.Tensor
    prompt_mask: torch.Tensor
    answer_states: torch.Tensor
    answer_mask: torch.Tensor
    answer_tokens: list[list[int]]
    token_column: int = 1

    def rows(self, index: slice) -> AnswerStates:
        """The same generation for a subset of its rows."""
        picked = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in picked.items():
            if isinstance(value, (torch.Tensor, list)):
                picked[name] = value[index]
        return AnswerStates(**picked)


class Backend(Protocol):
    """The interface ``InBedder`` uses; one implementation per model family.

    ``layer`` arguments are indices into the model's ``num_layers + 1`` hidden states
    (0 = embeddings), already checked. ``answer_slots`` are token ids the prompt tokenizer
    places after every prompt (before the closing special tokens) and counts toward
    ``max_length``: a masked LM's masks, nothing for the others.
    """

    family: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    num_layers: int
    hidden_size: int
    max_positions: int | None
    lacks_readouts: frozenset[str]
    """Registered readouts this family cannot offer (``offered_readouts`` gives the others)."""
    default_readout: str
    shares_prefixes: bool
    answer_slots: tuple[int, ...]

    @property
    def device(self) -> torch.device: ...

    def pad(self, batch: list[list[int]], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Token id lists as (input_ids, attention_mask) on the model's device, as wide as the longest
        rounded up to a multiple of ``multiple`` (padding columns are masked out)."""
        ...

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> AnswerStates:
        """One pass: the states the single-pass readouts (``fst_gen``, ``avg_ppt``) read; no answer tokens."""
        ...

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int, settings: GenerationSettings
    ) -> AnswerStates:
        """Answers (decoded per ``settings``) with the states at ``layer`` along the way."""
        ...

    def vocabulary_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The LM head applied to last-layer states (..., H): one logit per vocabulary token."""
        ...


class SharedPrefixBackend(Backend, Protocol):
    """A backend with ``shares_prefixes``: prompts that share a prefix can share its key/value cache.

    ``encode_multi`` runs the prefix once per text with ``forward_states(..., past)``, repeats the
    key/value cache per instruction, and continues with ``forward_states`` or ``generate(..., past)``.
    """

    def new_past(self) -> Any: ...

    def forward_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        past: Any = None,
        *,
        to_end: bool = False,
    ) -> torch.Tensor: ...

    def single_pass(self, states: torch.Tensor, attention_mask: torch.Tensor) -> AnswerStates: ...

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        settings: GenerationSettings,
        past: Any = None,
    ) -> AnswerStates: ...


def end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids that end an answer: the generation config's EOS ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    return sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None})


def collect_answers(
    tokens: torch.Tensor,
    steps: tuple[tuple[torch.Tensor, ...], ...],
    layer: int,
    end_ids: torch.Tensor,
    prompt_states: torch.Tensor,
    prompt_mask: torch.Tensor,
) -> AnswerStates:
    """A ``AnswerStates`` from decoded ``tokens`` (B, T) and the per-step, per-layer states of ``generate``.

    Step j's last position holds the state that predicts token j, which is column j: the
    state at the (j-1)-th answer token, or for j = 0 the one before the answer.
    """
    answer_states = torch.stack([step[layer][:, -1] for step in steps], dim=1)
    in_answer = torch.isin(tokens, end_ids.to(tokens.device)).long().cumsum(1) == 0
    answer_mask = torch.cat([torch.ones_like(in_answer[:, :1]), in_answer[:, : len(steps) - 1]], dim=1)
    return AnswerStates(
        prompt_states=prompt_states,
        prompt_mask=prompt_mask,
        answer_states=answer_states,
        answer_mask=answer_mask,
        answer_tokens=[row[keep].tolist() for row, keep in zip(tokens, in_answer)],
    )


@torch.inference_mode()
def head_logits(model: PreTrainedModel, body: nn.Module, states: torch.Tensor, **dummy: torch.Tensor) -> torch.Tensor:
    """``model``'s logits with ``states`` (B, T, H) standing in for the output of its ``body``.

    Runs ``model`` on the ``dummy`` inputs (shaped so that ``body`` outputs (B, T, H)) and
    swaps the body's output for ``states``: whatever the model does after its body (a
    transform and layer norm, output scaling, a final bias) applies, without naming its head.
    """
    states = states.to(device=model.device, dtype=model.dtype)

    def swap(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple) and not hasattr(output, "last_hidden_state"):
            return (states, *output[1:])
        output.last_hidden_state = states
        return output

    handle = body.register_forward_hook(swap)
    try:
        return model(**dummy).logits.float()
    finally:
        handle.remove()


def padded_width(batch: list[list[int]], multiple: int = 1) -> int:
    """The width a batch pads to: its longest list, rounded up to a multiple of ``multiple``."""
    return -(-max(len(ids) for ids in batch) // multiple) * multiple


def right_pad(
    batch: list[list[int]], pad_id: int, device: torch.device, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (input_ids, attention_mask) on ``device`` (width: ``padded_width``)."""
    width = padded_width(batch, multiple)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device)


def sample_tokens(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """One token id per row of ``logits`` (..., V): the argmax at temperature 0, else a top-p sample."""
    if not settings.sampling:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= settings.top_p  # keeps at least the top token
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0))
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1).reshape(probs.shape[:-1])
