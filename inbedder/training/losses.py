"""The training loss: cross-entropy over the answer tokens, optionally held near the base by a KL term."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from inbedder.errors import InputError
from inbedder.training.encoding import IGNORE_INDEX


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor], kl_to_base: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens: the loss the model computes from ``labels``.

    A causal LM that takes ``logits_to_keep`` projects only the states that predict an answer
    token onto its vocabulary, not every prompt position: the same loss for a fraction of the
    LM head's cost, which on a small model is a large part of a step. ``kl_to_base`` adds that
    weight times the mean KL(base || model) over those tokens, the base being the same forward
    pass with the LoRA adapters off (causal LMs that take ``logits_to_keep`` only).
    """
    if not _keeps_logits(model):
        if kl_to_base:
            raise InputError(
                f"kl_to_base needs a causal LM whose forward takes logits_to_keep; {type(model).__name__}'s does not"
            )
        return model(**batch).loss
    labels = batch["labels"]
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    logits = _logits_at(model, batch, predicts)
    loss = nn.functional.cross_entropy(logits, labels[:, 1:][predicts[:, :-1]])
    if kl_to_base:
        with torch.no_grad(), model.disable_adapter():
            base = _logits_at(model, batch, predicts)
        log_model, log_base = logits.log_softmax(-1), base.log_softmax(-1)
        loss = loss + kl_to_base * nn.functional.kl_div(log_model, log_base, log_target=True, reduction="batchmean")
    return loss


def _logits_at(model: nn.Module, batch: dict[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """The float32 logits of the causal LM's states at ``positions`` (a boolean mask), one row each."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return model(**inputs, logits_to_keep=positions).logits.float()


def _keeps_logits(model: nn.Module) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do; its masked and
    encoder-decoder LMs do not), asked of its signature, not guessed from its class."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters
