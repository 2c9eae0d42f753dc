"""Loading a model to fine-tune, choosing what trains (LoRA or full, all or the top layers), saving it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from inbedder import models
from inbedder.backends import LORA_TASK_TYPES
from inbedder.errors import InputError
from inbedder.loading import load_language_model

logger = logging.getLogger(__name__)

PEFT_DEPRECATION = "`is_gradient_checkpointing` is deprecated"
"""What transformers says of peft's own use of a renamed property: the cause is in peft, not in inbedder."""

STACK_NAMES = ("layers", "layer", "h", "block", "blocks")
"""Attribute names under which transformers keep a model's stack of transformer blocks."""
LINEAR_TYPES = (nn.Linear, Conv1D)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA's rank, scaling and dropout, and which linear layers (by last name) it adapts (None: all)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None


def load_model(source: str, family: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """The model at ``source`` with the head its family trains, in float32 (an adapter comes merged in)."""
    return load_language_model(source, family, dtype=torch.float32, trust_remote_code=trust_remote_code)[1]


def top_blocks(model: nn.Module, train_layers: int | None) -> list[str]:
    """Module names of the top ``train_layers`` transformer blocks of each stack (all with None).

    A decoder-only model has one stack; an encoder-decoder has two (encoder and decoder).
    """
    stacks = layer_stacks(model)
    if not stacks:
        raise InputError(f"cannot find the transformer layers of {type(model).__name__} to train")
    if train_layers is not None:
        deepest = min(len(stack) for _, stack in stacks)
        if not 1 <= train_layers <= deepest:
            raise InputError(f"train_layers must be between 1 and the model's {deepest} layers, got {train_layers}")
    keep = train_layers or max(len(stack) for _, stack in stacks)
    return [f"{name}.{i}" for name, stack in stacks for i in range(max(len(stack) - keep, 0), len(stack))]


def layer_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The outermost ``ModuleList``s of identical blocks named like a layer stack."""
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and name.rsplit(".", 1)[-1] in STACK_NAMES
            and len(module) > 0
            and len({type(block) for block in module}) == 1
            and not any(name.startswith(outer + ".") for outer, _ in stacks)
        ):
            stacks.append((name, module))
    return stacks


def lora_targets(model: nn.Module, blocks: list[str], names: tuple[str, ...] | None) -> list[str]:
    """Full names of the linear layers inside ``blocks`` (only those whose last name is in ``names``)."""
    prefixes = tuple(block + "." for block in blocks)
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, LINEAR_TYPES)
        and name.startswith(prefixes)
        and (names is None or name.rsplit(".", 1)[-1] in names)
    ]
    if not targets:
        found = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES)})
        raise InputError(f"no linear layer named {list(names or [])} in the layers to train; the model has {found}")
    return targets


def add_lora(model: PreTrainedModel, family: str, blocks: list[str], lora: LoraSettings, base: str) -> nn.Module:
    """``model`` wrapped with fresh LoRA adapters on the linear layers of ``blocks``."""
    from peft import LoraConfig, TaskType, get_peft_model

    task = LORA_TASK_TYPES[family] and TaskType[LORA_TASK_TYPES[family]]
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(model, blocks, lora.target_modules),
        task_type=task,
    )
    with peft_deprecations_logged():
        wrapped = get_peft_model(model, config)
    # recorded in adapter_config.json: InBedder(adapter_dir) loads the base by this name
    wrapped.peft_config["default"].base_model_name_or_path = models.canonical_name(base)
    return wrapped


def load_lora(model: PreTrainedModel, adapter_dir: Path) -> nn.Module:
    """``model`` with the (trainable) adapters saved in ``adapter_dir``."""
    from peft import PeftModel

    with peft_deprecations_logged():
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


@contextmanager
def peft_deprecations_logged() -> Iterator[None]:
    """peft's use of transformers' deprecated ``is_gradient_checkpointing`` logged at debug level, not printed:
    nothing a user can change causes it. Any other warning is shown as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if issubclass(warning.category, FutureWarning) and PEFT_DEPRECATION in str(warning.message):
            logger.debug("peft: %s", warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def freeze_below(model: nn.Module, blocks: list[str]) -> None:
    """Train only the parameters inside ``blocks``; everything else (embeddings, head, norms) stays fixed."""
    prefixes = tuple(block + "." for block in blocks)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))


def save_model(model: nn.Module, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """A model directory (full weights) or a peft adapter directory, as safetensors, with the tokenizer."""
    from peft import PeftModel

    # adapters never cover the embeddings; "auto" would look the base model up on the hub to check
    extra = {"save_embedding_layers": False} if isinstance(model, PeftModel) else {}
    model.save_pretrained(str(directory), safe_serialization=True, **extra)
    tokenizer.save_pretrained(str(directory))
