"""Encoder-decoder language models (T5, Flan-T5, BART): the prompt goes to the encoder, the decoder answers.

Prompts are right-padded encoder inputs (T5's tokenizer closes them with ``</s>``); the
decoder starts from the model's ``decoder_start_token_id``. Readouts:

- ``fst_gen`` (the default): the decoder's state at its start token, the one that predicts the
  first answer token (one encoder pass and one decoder step; nothing is generated);
- ``avg_gen`` / ``last_gen``: over the decoder's states while it generates the answer, as for a
  causal LM (the start token's state, then one state per answer token);
- ``avg_ppt``: the mean of the encoder's states over the prompt;
- ``re_encode``: the answer text embedded by a sentence embedder.

``avg_all`` is not offered: encoder and decoder states are not one sequence.

``layer`` indexes the decoder's hidden states (0 = its embeddings, ``num_layers`` = its last
layer); the encoder's are read at the same index. Where the two stacks differ in depth the
encoder is read at the same relative depth, rounded down (``layer * encoder_layers // num_layers``), so
the last layer is always the last layer of each.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inbedder.backends.base import (
    AnswerStates,
    GenerationSettings,
    collect_answers,
    end_token_ids,
    head_logits,
    right_pad,
)
from inbedder.errors import InputError


class Seq2SeqBackend:
    """An encoder-decoder LM: prompt states from the encoder, answer states from the decoder."""

    family = "seq2seq"
    lacks_readouts = frozenset({"avg_all"})  # the encoder's prompt states and the decoder's answer states differ
    default_readout = "fst_gen"
    shares_prefixes = False
    answer_slots: tuple[int, ...] = ()

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        config = model.config
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder_layers: int = (
            getattr(config, "encoder_layers", None) or getattr(config, "num_layers", None) or config.num_hidden_layers
        )
        decoder_layers = getattr(config, "decoder_layers", None) or getattr(config, "num_decoder_layers", None)
        self.num_layers: int = decoder_layers or self.encoder_layers
        self.hidden_size: int = config.hidden_size
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)  # None: relative positions
        eos_ids = end_token_ids(model, tokenizer)
        self.end_ids = torch.tensor(eos_ids, dtype=torch.long)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
        self.pad_id: int = pad if pad is not None else min(eos_ids, default=0)
        start = model.generation_config.decoder_start_token_id
        start = config.decoder_start_token_id if start is None else start
        if start is None:
            raise InputError(f"this {config.model_type} model names no decoder_start_token_id to start its decoder")
        self.start_id: int = start
        self.forced_bos_id = getattr(model.generation_config, "forced_bos_token_id", None)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pad(self, batch: list[list[int]], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad token id lists into (input_ids, attention_mask) on the model's device (``padded_width``)."""
        return right_pad(batch, self.pad_id, self.device, multiple)

    def encoder_layer(self, layer: int) -> int:
        """The encoder's hidden-state index read with the decoder's ``layer``."""
        return layer * self.encoder_layers // self.num_layers

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> AnswerStates:
        """The encoder over the prompts and one decoder step from the start token."""
        start = torch.full((len(input_ids), 1), self.start_id, dtype=torch.long, device=input_ids.device)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=start, output_hidden_states=True
        )
        rows = len(input_ids)
        return AnswerStates(
            prompt_states=out.encoder_hidden_states[self.encoder_layer(layer)],
            prompt_mask=attention_mask.bool(),
            answer_states=out.decoder_hidden_states[layer][:, :1],
            answer_mask=torch.ones((rows, 1), dtype=torch.bool, device=input_ids.device),
            answer_tokens=[[] for _ in range(rows)],
        )

    @torch.inference_mode()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int, settings: GenerationSettings
    ) -> AnswerStates:
        """Decode answers; the decoder's states at ``layer`` along the way, the encoder's over the prompt."""
        config = settings.generation_config(
            self.pad_id, self.end_ids, decoder_start_token_id=self.start_id, forced_bos_token_id=self.forced_bos_id
        )
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        tokens = out.sequences[:, 1:]  # after the start token
        prompt_states = out.encoder_hidden_states[self.encoder_layer(layer)]
        steps = out.decoder_hidden_states  # one tuple of per-layer states per decoding step
        return collect_answers(tokens, steps, layer, self.end_ids, prompt_states, attention_mask.bool())

    @torch.inference_mode()
    def vocabulary_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The LM head (with any output scaling and final bias) applied to last-layer decoder states (..., H)."""
        flat = states.reshape(-1, 1, self.hidden_size)
        dummy = torch.full(flat.shape[:2], self.start_id, dtype=torch.long, device=self.device)
        logits = head_logits(self.model, self.model.get_decoder(), flat, input_ids=dummy, decoder_input_ids=dummy)
        return logits.reshape(*states.shape[:-1], logits.shape[-1])
