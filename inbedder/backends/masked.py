"""Masked language models (BERT, RoBERTa and kin): the answer is a run of mask slots after the prompt.

Each prompt is ``[CLS] prompt [MASK] x mask_length [SEP]`` (the masks before the tokenizer's
closing special tokens; the prompt tokenizer cuts only the input so that the instruction and
the masks always fit), right-padded. One forward pass gives every readout:

- ``avg_gen`` (the default): the mean of the mask slots' states;
- ``fst_gen`` / ``last_gen``: the first / the last mask slot's state;
- ``avg_ppt``: the mean over the prompt's tokens, without special tokens and masks;
- ``avg_all``: the mean over the prompt's tokens (no special tokens) and the mask slots.

The "generated" answer is the token the LM head ranks highest at each mask (sampled at a
temperature above 0), decoded; ``max_new_tokens`` does not apply, ``mask_length`` does.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inbedder.backends.base import AnswerStates, GenerationSettings, head_logits, right_pad, sample_tokens
from inbedder.errors import InputError, check_positive_int
from inbedder.templates import special_tokens_around

DEFAULT_MASK_LENGTH = 3
MASKED_MODEL_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "camembert"}
    | {"mpnet", "modernbert", "megatron-bert", "xlm", "flaubert", "ernie", "nomic_bert"}
)
"""``model_type``s of masked LMs, for configs that do not name a ``...ForMaskedLM`` architecture."""


class MaskedBackend:
    """A masked LM read at ``mask_length`` mask slots after the prompt."""

    family = "masked"
    lacks_readouts: frozenset[str] = frozenset()
    default_readout = "avg_gen"
    shares_prefixes = False

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, mask_length: int = DEFAULT_MASK_LENGTH
    ) -> None:
        check_positive_int("mask_length", mask_length)
        if tokenizer.mask_token_id is None:
            raise InputError(f"the tokenizer of this {model.config.model_type} model has no mask token")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.base = model.base_model
        self.num_layers: int = model.config.num_hidden_layers
        self.hidden_size: int = model.config.hidden_size
        self.max_positions = _position_limit(model)
        self.mask_length = mask_length
        self.mask_id: int = tokenizer.mask_token_id
        self.answer_slots: tuple[int, ...] = (self.mask_id,) * mask_length
        self.closing = len(special_tokens_around(tokenizer)[1])  # the tokens after the masks, e.g. [SEP]
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pad(self, batch: list[list[int]], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad token id lists into (input_ids, attention_mask) on the model's device (``padded_width``)."""
        return right_pad(batch, self.pad_id, self.device, multiple)

    def slot_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, mask_length): where each right-padded row's mask slots are, just before its closing tokens."""
        start = attention_mask.sum(1) - self.closing - self.mask_length
        return start[:, None] + torch.arange(self.mask_length, device=attention_mask.device)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> AnswerStates:
        return self._read(input_ids, attention_mask, layer, None)

    @torch.inference_mode()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int, settings: GenerationSettings
    ) -> AnswerStates:
        """The same single pass, with the answer: one token per mask slot, picked per ``settings``."""
        return self._read(input_ids, attention_mask, layer, settings)

    def _read(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        settings: GenerationSettings | None,
    ) -> AnswerStates:
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = out.hidden_states[layer]
        slots = self.slot_positions(attention_mask)
        rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
        prompt_mask = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids.to(input_ids.device))
        prompt_mask[rows, slots] = False
        tokens: list[list[int]] = [[] for _ in range(len(input_ids))]
        if settings is not None:
            logits = self.vocabulary_logits(out.last_hidden_state[rows, slots])
            tokens = sample_tokens(logits, settings).tolist()
        return AnswerStates(
            prompt_states=states,
            prompt_mask=prompt_mask,
            answer_states=states[rows, slots],
            answer_mask=torch.ones(slots.shape, dtype=torch.bool, device=slots.device),
            answer_tokens=tokens,
            token_column=0,
        )

    @torch.inference_mode()
    def vocabulary_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The MLM head (transform, layer norm, decoder and bias) applied to last-layer states (..., H)."""
        flat = states.reshape(-1, 1, self.hidden_size)
        dummy = torch.full(flat.shape[:2], self.mask_id, dtype=torch.long, device=self.device)
        logits = head_logits(self.model, self.base, flat, input_ids=dummy)
        return logits.reshape(*states.shape[:-1], logits.shape[-1])


def _position_limit(model: PreTrainedModel) -> int | None:
    """Longest input the position embeddings allow; RoBERTa-style ones start after the padding index."""
    limit = getattr(model.config, "max_position_embeddings", None)
    embeddings = getattr(getattr(model.base_model, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if limit is not None and isinstance(embeddings, nn.Embedding) and padding_idx is not None:
        return limit - padding_idx - 1
    return limit
