"""Checkpoints that resume training at the exact step: weights, optimizer, schedule and random state.

``OUT/checkpoint-STEP/`` holds the model (a peft adapter or full weights, loadable like the
final output) and ``trainer_state.safetensors`` + ``trainer_state.json`` with the optimizer's
tensors, the schedule, the random generators and the progress so far. No pickles.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from inbedder.errors import InputError
from inbedder.training.modeling import save_model

logger = logging.getLogger(__name__)

PREFIX = "checkpoint-"
STEP_RECORDS = ("step_seconds", "step_tokens", "step_padded_tokens")
"""Lists kept for every step besides the loss (the trainer fills them)."""
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``out`` as (step, directory), oldest first."""
    found = []
    for path in out.glob(f"{PREFIX}*"):
        match = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
        if match and (path / STATE_JSON).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a file cut short or unreadable), or None when it can."""
    from safetensors import SafetensorError, safe_open

    try:
        saved_progress(checkpoint)
        for weights in sorted(checkpoint.glob("*.safetensors")):
            with safe_open(str(weights), framework="pt") as opened:
                for name in opened.keys():
                    opened.get_slice(name)  # the header's offsets must lie inside the file
    except (OSError, ValueError, SafetensorError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def newest_usable(out: Path) -> Path | None:
    """The newest checkpoint in ``out`` that can be resumed from; each damaged newer one is named in a
    warning and passed over. None when there is no checkpoint; an error when every one is damaged."""
    found = checkpoints(out)
    damaged = []
    for _, checkpoint in reversed(found):
        reason = damage(checkpoint)
        if reason is None:
            for broken, why in damaged:
                logger.warning("%s cannot be resumed from (%s); going on from %s instead", broken, why, checkpoint.name)
            return checkpoint
        damaged.append((checkpoint, reason))
    if damaged:
        names = ", ".join(f"{path.name} ({why})" for path, why in damaged)
        raise InputError(f"no checkpoint in {out} can be resumed from: {names}")
    return None


def save_checkpoint(
    out: Path,
    step: int,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``out/checkpoint-STEP`` (whole or not at all) and keep only the newest ``keep``."""
    target = out / f"{PREFIX}{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=out))
    try:
        save_model(model, tokenizer, tmp)
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, str(tmp / STATE_TENSORS))
        state = {**progress, "step": step, "param_groups": groups, "scheduler": scheduler.state_dict()}
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=2))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if keep is not None:
        for _, old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def restore_state(
    checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> dict[str, Any]:
    """Load the optimizer, schedule and random state saved in ``checkpoint``; return its progress record
    (``step``, ``train_losses``, ``seconds`` and the per-step records).
    """
    state = saved_progress(checkpoint)
    tensors = load_file(str(checkpoint / STATE_TENSORS))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["param_groups"]))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return {key: state[key] for key in ("step", "train_losses", "seconds", *STEP_RECORDS) if key in state}


def saved_progress(checkpoint: Path) -> dict[str, Any]:
    """The step, settings and progress record saved in ``checkpoint``."""
    return json.loads((checkpoint / STATE_JSON).read_text())


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {
        f"optimizer.{index}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
        for index, values in state_dict["state"].items()
        for key, value in values.items()
    }
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state[int(index)][key] = tensor
    return {"state": dict(state), "param_groups": groups}
