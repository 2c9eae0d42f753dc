"""Causal (decoder-only) language models: left-padded prompts, states at any layer.

The only family whose prompts can share a key/value cache (``encode_multi`` runs the prompt
part its instructions share once per text): ``new_past`` and ``forward_states`` serve that.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from inbedder.backends.base import AnswerStates, GenerationSettings, collect_answers, end_token_ids, padded_width
from inbedder.errors import InputError


class _StopForward(Exception):
    """Raised from a layer's pre-hook to end the forward pass once the wanted state is known."""

    def __init__(self, states: torch.Tensor) -> None:
        self.states = states


class CausalBackend:
    """A decoder-only LM: every readout; ``fst_gen`` is the last prompt position (the default)."""

    family = "causal"
    lacks_readouts: frozenset[str] = frozenset()
    default_readout = "fst_gen"
    shares_prefixes = True
    answer_slots: tuple[int, ...] = ()

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.base = model.base_model
        self.num_layers: int = model.config.num_hidden_layers
        self.hidden_size: int = model.config.hidden_size
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.layers = _decoder_layers(self.base, self.num_layers)
        eos_ids = end_token_ids(model, tokenizer)
        self.end_ids = torch.tensor(eos_ids, dtype=torch.long)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
        if model.dtype in (torch.bfloat16, torch.float16):
            keep_residual_float32(model, self.layers)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pad(self, batch: list[list[int]], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad token id lists into (input_ids, attention_mask) on the model's device (``padded_width``)."""
        width = padded_width(batch, multiple)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def new_past(self) -> DynamicCache:
        """An empty key/value cache, to run a shared prompt prefix once for several continuations."""
        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def forward_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        past: DynamicCache | None = None,
        *,
        to_end: bool = False,
    ) -> torch.Tensor:
        """States (B, T, H) at ``layer`` (0..num_layers) from one forward pass that stops there.

        With ``past``, ``input_ids`` continue the sequences already in it (``attention_mask``
        covers both), and ``past`` is extended by them, up to ``layer``, or through every layer
        with ``to_end`` (as generation from it needs).
        """
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            cache=past,
            use_cache=past is not None,
        )
        if layer == self.num_layers:
            return self.base(**inputs).last_hidden_state
        read: list[torch.Tensor] = []

        def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            read.append(args[0] if args else kwargs["hidden_states"])
            if not to_end:
                raise _StopForward(read[0])

        handle = self.layers[layer].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            self.base(**inputs)
        except _StopForward as stopped:
            return stopped.states
        finally:
            handle.remove()
        if read:
            return read[0]
        raise RuntimeError(f"layer {layer} of {type(self.model).__name__} was never reached")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> AnswerStates:
        """One pass up to ``layer`` over left-padded prompts (see ``single_pass``)."""
        return self.single_pass(self.forward_states(input_ids, attention_mask, layer), attention_mask)

    @staticmethod
    def single_pass(states: torch.Tensor, attention_mask: torch.Tensor) -> AnswerStates:
        """Prompt states (B, P, H) as a ``AnswerStates`` whose only answer column is the last prompt position."""
        rows = len(states)
        return AnswerStates(
            prompt_states=states,
            prompt_mask=attention_mask.bool(),
            answer_states=states[:, -1:],
            answer_mask=torch.ones((rows, 1), dtype=torch.bool, device=states.device),
            answer_tokens=[[] for _ in range(rows)],
        )

    @torch.inference_mode()
    def vocabulary_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The LM head applied to last-layer states (..., H): one logit per vocabulary token.

        Computed in float32 whatever the model's dtype: a head readout (``fst_head``) is a softmax
        over these logits, which bfloat16's 8-bit mantissa would coarsen.
        """
        weight, bias = self._float_head
        return nn.functional.linear(states.to(device=self.device, dtype=torch.float32), weight, bias)

    @functools.cached_property
    def _float_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        head = self.model.get_output_embeddings()
        bias = head.bias.float() if getattr(head, "bias", None) is not None else None
        return head.weight.float(), bias

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int,
        settings: GenerationSettings,
        past: DynamicCache | None = None,
    ) -> AnswerStates:
        """Decode answers and collect the states at ``layer`` along the way.

        With ``past`` holding the first tokens of every row (run through all layers), only the
        rest of the prompt runs, and ``prompt_states`` cover only those tokens.
        """
        config = settings.generation_config(self.pad_id, self.end_ids)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, cache=past, generation_config=config
        )
        tokens = out.sequences[:, input_ids.shape[1] :]
        steps = out.hidden_states  # one tuple of per-layer states per decoding step
        return collect_answers(tokens, steps, layer, self.end_ids, steps[0][layer], attention_mask.bool())


def keep_residual_float32(model: PreTrainedModel, layers: nn.ModuleList) -> bool:
    """Run a pre-norm decoder's residual stream in float32 and its matrix products in the model's dtype.

    In a bfloat16 model every layer adds its output to a bfloat16 residual stream, whose 8-bit
    mantissa rounds away what the layers add and turns the tiny differences between kernels
    (a text alone, or padded in a batch) into visible ones. Here the embeddings and the LM head
    are float32, so the stream (and each norm's arithmetic) stays float32; each block's norms hand
    its attention and MLP their input in the model's dtype, and the rotary tables follow. Applies
    to Llama-style blocks (``input_layernorm``, ``post_attention_layernorm``, a ``rotary_emb``);
    others are left as they are. Returns whether it applied.
    """
    norms = [getattr(layer, name, None) for layer in layers for name in ("input_layernorm", "post_attention_layernorm")]
    rotary = getattr(model.base_model, "rotary_emb", None)
    if not norms or any(norm is None for norm in norms) or rotary is None:
        return False
    compute = model.dtype

    def to_compute(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return tuple(t.to(compute) for t in output)
        return output.to(compute)

    model.get_input_embeddings().float()
    model.get_output_embeddings().float()  # tied to the embeddings in many models: already float32 then
    for module in (*norms, rotary):
        module.register_forward_hook(to_compute)
    return True


def _decoder_layers(base: nn.Module, num_layers: int) -> nn.ModuleList:
    """The model's stack of transformer blocks: the ModuleList with one entry per layer."""
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise InputError(f"cannot find the {num_layers} decoder layers of {type(base).__name__}")
