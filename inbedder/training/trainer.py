"""Fine-tune a language model to answer questions about texts tersely: a plain, resumable torch loop.

``train(base, data, out)`` reads QA records, encodes them for the model's family, trains
LoRA adapters (or the full model, or only its top layers) with AdamW and a linear schedule,
checkpoints every ``save_every`` steps, reports the held-out loss, and writes to ``out``
a directory that ``InBedder(out)`` loads, plus ``training.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from inbedder import models, tables
from inbedder.errors import InputError, Interrupted, option
from inbedder.loading import cpu_runs_bfloat16, load_tokenizer, read_family, resolve_device, warn_if_emulated
from inbedder.model_settings import read_settings, write_settings
from inbedder.training import checkpoint as ckpt
from inbedder.training.checkpoint import STEP_RECORDS
from inbedder.training.data import Columns
from inbedder.training.encoding import IGNORE_INDEX, Collator, Example, QAEncoder, choose_max_length, pad_id
from inbedder.training.losses import answer_loss
from inbedder.training.mix import DataSpec, mix, parse_sources
from inbedder.training.modeling import (
    LoraSettings,
    add_lora,
    freeze_below,
    load_lora,
    load_model,
    save_model,
    top_blocks,
)
from inbedder.training.stopping import stop_between_steps
from inbedder.training_config import TrainingConfig

logger = logging.getLogger(__name__)

TRAINING_JSON = "training.json"
# settings that may change between a run and its resumption
GROUP_BATCHES = 64
"""With ``group_by_length``, records are sorted by length within runs of this many batches."""
AUTO_LENGTH_CAP = 1024
"""``max_length="auto"`` looks at each record's length up to this many tokens."""
LOG_EVERY = 25
"""Without a progress bar (a log file), a line on the logger every this many steps."""
RESUMABLE_CHANGES = frozenset({"resume", "overwrite", "progress", "save_every", "keep_checkpoints", "device", "merge"})


@dataclass
class TrainingResult:
    """What a run did: where the model is, the loss after every step, and the held-out loss."""

    out: Path
    family: str
    steps: int
    train_losses: list[float]
    eval_loss: float | None
    seconds: float
    train_records: int
    eval_records: int
    details: dict[str, Any] = field(default_factory=dict, repr=False)


def train(base: str, data: DataSpec | list[DataSpec], out: str | Path, **options: Any) -> TrainingResult:
    """Fine-tune ``base`` on the QA records in ``data`` and save the result in ``out``.

    Args:
        base: a registered model name, a local model directory, a ``.gguf`` file or a hub id.
        data: a CSV/TSV/JSONL/Parquet file or a hub dataset id, with context, question and answer
            columns; or a weighted mix of several, each ``"path:weight"`` or ``(path, weight)``.
        out: the output directory: a peft adapter (with LoRA) or a model directory (full or
            ``merge=True``), loadable with ``InBedder(out)``; checkpoints go in ``out/checkpoint-STEP``.
        options: the fields of ``TrainingConfig``.
    """
    config = TrainingConfig(**options)
    out = Path(out)
    sources = parse_sources(data)
    settings = {"base": base, "data": [asdict(s) for s in sources], **asdict(config)}
    resume_from = _prepare_output(out, config, settings)
    source = models.resolve(base)
    data_set = _examples(config, sources, source, out)
    tokenizer, family, train_set, eval_set = data_set.tokenizer, data_set.family, data_set.train, data_set.held_out
    if config.kl_to_base and family != "causal":
        raise InputError(f"kl_to_base applies to causal LMs; {base} is a {family} model")

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model = _trainable_model(base, source, family, config, resume_from).to(device)
    collate = Collator(pad_id(tokenizer), config.pad_multiple)
    compute_dtype = training_dtype(config.dtype, device)
    logger.info("training on %s with the forward pass in %s", device, compute_dtype)
    loop = _Loop(model, train_set, collate, config, device, compute_dtype)
    progress: dict[str, Any] = {"settings": settings, "step": 0, "train_losses": [], "seconds": 0.0}
    if resume_from is not None:
        progress |= ckpt.restore_state(resume_from, loop.optimizer, loop.scheduler)
        logger.info("resuming from %s at step %d", resume_from, progress["step"])
    resumed_at = progress["step"] if resume_from is not None else None

    def save(step: int) -> None:
        ckpt.save_checkpoint(
            out, step, model, tokenizer, loop.optimizer, loop.scheduler, progress, config.keep_checkpoints
        )

    loop.run(progress, save)
    eval_loss = evaluate(model, eval_set, collate, config.batch_size, device) if eval_set else None
    save_model(model.merge_and_unload() if config.lora and config.merge else model, tokenizer, out)
    losses, seconds = progress["train_losses"], progress["seconds"]
    details = _record(settings, family, compute_dtype, resumed_at, loop, data_set, progress, eval_loss)
    (out / TRAINING_JSON).write_text(json.dumps(details, indent=2))
    # InBedder(out) prompts the way the model was trained, and reads it out as its base was meant to be
    inherited = {k: v for k, v in read_settings(source).items() if k in ("readout", "layer", "postprocess")}
    write_settings(out, **inherited, template=config.template)
    return TrainingResult(
        out, family, loop.total_steps, losses, eval_loss, seconds, len(train_set), len(eval_set), details
    )


@dataclass
class _Examples:
    """A run's records, mixed and encoded: what the loop trains on and what it holds out."""

    mixed: Any
    train: list[Example]
    held_out: list[Example]
    tokenizer: Any
    family: str
    max_length: int


def _examples(config: TrainingConfig, sources: list[Any], source: str, out: Path) -> _Examples:
    """The records of ``sources`` mixed, split and encoded for ``source``'s family (``max_length`` resolved);
    ``out`` is made only once the data is known good, so a refusal leaves nothing."""
    columns = Columns(config.context_column, config.question_column, config.answer_column)
    limits = {"limit": config.limit, "eval_size": config.eval_size, "eval_fraction": config.eval_fraction}
    mixed = mix(sources, columns, split=config.split, seed=config.seed, **limits)
    out.mkdir(parents=True, exist_ok=True)
    family = read_family(source, config.family, config.trust_remote_code)
    tokenizer = load_tokenizer(source, config.trust_remote_code)
    prompts = {"template": config.template, "max_answer_tokens": config.max_answer_tokens}
    encode = partial(QAEncoder, tokenizer, family, answer_prefix=config.answer_prefix, **prompts)
    max_length = config.max_length
    if max_length == "auto":
        max_length = choose_max_length(encode(max_length=AUTO_LENGTH_CAP).lengths(mixed.train))
        logger.info("max_length auto: %d tokens", max_length)
    encoder = encode(max_length=max_length)
    held_out = encoder.encode_all(mixed.held_out) if mixed.held_out else []
    return _Examples(mixed, encoder.encode_all(mixed.train), held_out, tokenizer, family, max_length)


def _record(
    settings: dict[str, Any],
    family: str,
    compute_dtype: torch.dtype,
    resumed_at: int | None,
    loop: _Loop,
    data: _Examples,
    progress: dict[str, Any],
    eval_loss: float | None,
) -> dict[str, Any]:
    """What ``training.json`` says of a finished run."""
    seconds, encoded = progress["seconds"], len(data.train) + len(data.held_out)
    return {
        **settings,
        "family": family,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "resumed_from_step": resumed_at,
        "steps": loop.total_steps,
        "train_records": len(data.train),
        "eval_records": len(data.held_out),
        "skipped_records": len(data.mixed.train) + len(data.mixed.held_out) - encoded,
        "data_mix": data.mixed.sources,
        "max_length_used": data.max_length,
        "train_tokens": sum(len(e.input_ids) for e in data.train),
        "trainable_parameters": sum(p.numel() for p in loop.trainable),
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / max(loop.total_steps, 1), 4),
        "train_losses": progress["train_losses"],
        **{key: progress[key] for key in STEP_RECORDS},
        "eval_loss": eval_loss,
        "versions": {name: version(name) for name in ("inbedder", "torch", "transformers", "peft")},
        "settings": settings,  # as given, for a later --resume to compare against
    }


class _Loop:
    """AdamW with a linear warm-up/decay schedule over a seeded, epoch-by-epoch shuffled stream of batches.

    Step ``s`` uses micro-batches ``s * grad_accum`` to ``(s + 1) * grad_accum - 1`` of the
    stream, so any step can be resumed knowing only its number.
    """

    def __init__(
        self,
        model: nn.Module,
        examples: list[Example],
        collate: Collator,
        config: TrainingConfig,
        device: torch.device,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model, self.examples, self.collate, self.config, self.device = model, examples, collate, config, device
        self.compute_dtype = compute_dtype
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.per_epoch = math.ceil(len(examples) / config.batch_size)
        self.total_steps = config.max_steps or math.ceil(config.epochs * self.per_epoch / config.grad_accum)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, config.warmup(self.total_steps), self.total_steps
        )
        self._order: tuple[int, list[int]] = (-1, [])

    def run(self, progress: dict[str, Any], save: Callable[[int], None]) -> None:
        """Steps from ``progress["step"]`` to the end, recording losses and time in ``progress``;
        ``save(step)`` every ``save_every`` steps (not after the last: the output follows). SIGINT or
        SIGTERM stops it after the step in hand, which is saved first (``Interrupted`` says so).
        """
        losses, every = progress["train_losses"], self.config.save_every
        for key in STEP_RECORDS:
            progress.setdefault(key, [])
        show = self.config.progress
        bar = tqdm(total=self.total_steps, initial=progress["step"], desc="train", unit="step", disable=not show)
        with stop_between_steps() as stop_requested:
            for step in range(progress["step"], self.total_steps):
                started = time.perf_counter()
                loss, tokens, padded = self.step(step)
                seconds = time.perf_counter() - started
                losses.append(loss)
                for key, value in zip(STEP_RECORDS, (round(seconds, 4), tokens, padded)):
                    progress[key].append(value)
                progress["step"], progress["seconds"] = step + 1, progress["seconds"] + seconds
                recent = sum(losses[-20:]) / len(losses[-20:])
                bar.update()
                bar.set_postfix(loss=f"{recent:.4f}")
                if not show and ((step + 1) % LOG_EVERY == 0 or step + 1 == self.total_steps):
                    self._log_step(step + 1, recent, progress["step_seconds"][-LOG_EVERY:])
                stopping = stop_requested() and step + 1 < self.total_steps  # the last step: the output follows
                if stopping or (every and (step + 1) % every == 0 and step + 1 < self.total_steps):
                    save(step + 1)
                if stopping:
                    bar.close()
                    raise Interrupted(
                        f"training stopped after step {step + 1} of {self.total_steps}, saved as "
                        f"checkpoint-{step + 1}; run the same command with --resume to go on"
                    )
        bar.close()

    def _log_step(self, done: int, loss: float, recent_seconds: list[float]) -> None:
        pace = sum(recent_seconds) / len(recent_seconds)
        left = round(pace * (self.total_steps - done))
        logger.info(
            "step %d/%d: loss %.4f (last 20), %.2f s a step, %d:%02d:%02d left",
            done,
            self.total_steps,
            loss,
            pace,
            left // 3600,
            left // 60 % 60,
            left % 60,
        )

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(index, self.per_epoch)
        if self._order[0] != epoch:
            self._order = (epoch, self.epoch_batches(epoch))
        chosen = self._order[1][position]
        return {k: v.to(self.device) for k, v in self.collate([self.examples[i] for i in chosen]).items()}

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The example indices of every batch of ``epoch``, in training order (a function of seed and epoch).

        With ``group_by_length``, each run of ``GROUP_BATCHES`` batches of the shuffled order is
        sorted by length before it is cut into batches, and the batches are shuffled again: a
        batch pads to lengths close to its own, and which records meet in a batch stays random.
        """
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(self.examples), generator=generator).tolist()
        size = self.config.batch_size
        if not self.config.group_by_length:
            return [order[start : start + size] for start in range(0, len(order), size)]
        group, batches = size * GROUP_BATCHES, []
        for start in range(0, len(order), group):
            chunk = sorted(order[start : start + group], key=lambda i: len(self.examples[i].input_ids))
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def step(self, step: int) -> tuple[float, int, int]:
        """Run optimizer step ``step``; return its mean training loss, its tokens and its padded tokens."""
        self.model.train()
        accum = self.config.grad_accum
        total, tokens, padded = 0.0, 0, 0
        for index in range(step * accum, (step + 1) * accum):
            batch = self.batch(index)
            with compute_precision(self.device, self.compute_dtype):
                loss = answer_loss(self.model, batch, self.config.kl_to_base)
            (loss / accum).backward()
            total += loss.item()
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / accum, tokens, padded


@torch.no_grad()
def evaluate(
    model: nn.Module, examples: list[Example], collate: Collator, batch_size: int, device: torch.device
) -> float:
    """Mean loss per answer token over ``examples``."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        count = int((batch["labels"] != IGNORE_INDEX).sum())
        total += answer_loss(model, batch).item() * count
        tokens += count
    return total / tokens


def training_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The forward pass's dtype: ``"auto"`` is bfloat16 where ``device`` runs it natively, else float32
    (never float16, which would need loss scaling)."""
    if dtype != "auto":
        warn_if_emulated(getattr(torch, dtype), device)
        return getattr(torch, dtype)
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else device.type == "cpu" and cpu_runs_bfloat16()
    return torch.bfloat16 if native else torch.float32


def compute_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` (matmuls in it, norms and losses in float32) unless it is float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _trainable_model(base: str, source: str, family: str, config: TrainingConfig, checkpoint: Path | None) -> nn.Module:
    """The model with only what should train left trainable, from ``checkpoint`` when resuming."""
    if not config.lora:
        model = load_model(str(checkpoint or source), family, config.trust_remote_code)
        if config.train_layers is not None:
            freeze_below(model, top_blocks(model, config.train_layers))
        return model
    model = load_model(source, family, config.trust_remote_code)
    if checkpoint is not None:
        return load_lora(model, checkpoint)
    lora = LoraSettings(config.lora_rank, config.lora_alpha, config.lora_dropout, _tuple(config.target_modules))
    return add_lora(model, family, top_blocks(model, config.train_layers), lora, base)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def _recorded_settings(record: Path) -> dict[str, Any]:
    """The settings a finished run was given, from its training.json (older ones: the record itself)."""
    details = json.loads(record.read_text())
    return details.get("settings", details)


def _prepare_output(out: Path, config: TrainingConfig, settings: dict[str, Any]) -> Path | None:
    """Check ``out`` (made later, once the data is known good); the checkpoint to resume from (None: start afresh).

    Refuses to write into a folder of other files (unless ``overwrite``), to overwrite an earlier
    run, or to resume one whose settings differ, from a checkpoint or from a finished run's record.
    """
    tables.check_directory(out, create=False)
    found = ckpt.checkpoints(out) if out.is_dir() else []
    record = out / TRAINING_JSON
    if found or record.is_file():
        if not config.resume:
            raise InputError(
                f"{out} already holds a training run; pass {option('resume')} or choose another {option('out', None)}"
            )
        checkpoint = ckpt.newest_usable(out) if found else None
        saved = ckpt.saved_progress(checkpoint)["settings"] if checkpoint else _recorded_settings(record)
        # a setting added since the run began had its default then
        saved = asdict(TrainingConfig()) | saved
        changed = [k for k in settings if k not in RESUMABLE_CHANGES and saved.get(k) != settings[k]]
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {settings[k]!r}" for k in changed)
            raise tables.InputError(f"cannot resume {checkpoint or record}: settings differ ({diffs})")
        if checkpoint is None:
            raise tables.InputError(
                f"{out} holds a finished run and no checkpoint to go on from; choose another {option('out', None)} "
                "to train again"
            )
        return checkpoint
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise tables.InputError(
            f"{out} holds other files and no training run; the model's files would overwrite any of the same "
            f"name there: pass {option('overwrite')}, or choose another {option('out', None)}"
        )
    if config.resume:
        logger.warning("no checkpoint in %s: training from the start", out)
    return None
