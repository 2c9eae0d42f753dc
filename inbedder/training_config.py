"""The options of a training run, declared once: ``train`` takes them as keywords, ``inbedder train`` as
flags (``inbedder.cli.declared``). Nothing heavy is imported here, so the command line reads them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inbedder.errors import InputError
from inbedder.options import cli

TRAINING_DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class TrainingConfig:
    """Every option of a training run (``train`` takes them as keywords).

    Data: ``context_column``/``question_column``/``answer_column``, ``split`` (hub datasets),
    ``limit`` (the size of the training mix), ``eval_size`` or ``eval_fraction`` (held out).
    Model: ``family`` (auto, causal, masked, seq2seq), ``lora`` (else full fine-tuning),
    ``lora_rank``/``lora_alpha``/``lora_dropout``/``target_modules`` (last names of linear
    layers; default all in the trained layers), ``train_layers`` (train only the top N layers:
    the backward pass stops there), ``merge`` (save the merged model rather than the adapter),
    ``kl_to_base`` (LoRA on a causal LM: add this weight times KL(base || model) of each answer
    token's distribution, the base being the model with its adapters off, so the model learns the
    answers while the rest of each distribution, which the head readouts embed, stays near the base's).
    Optimization: ``epochs`` or ``max_steps``, ``batch_size`` x ``grad_accum`` records a step,
    ``lr`` (default 2e-4 with LoRA, 2e-5 full), ``warmup_steps`` or ``warmup_ratio`` (default
    0.03), ``weight_decay``, ``max_grad_norm``, ``group_by_length`` (batch records of similar
    length together, so a step costs what its tokens cost), ``pad_multiple`` (pad each batch to a
    multiple of this many tokens: a few shapes bound oneDNN's kernel cache on a CPU). Prompts:
    ``template``, ``max_length`` (prompt + answer; ``"auto"``: the 98th percentile of the records'
    lengths), ``max_answer_tokens``, ``answer_prefix`` (put between the prompt and the answer).
    Checkpoints: ``save_every`` steps (0: never), ``keep_checkpoints`` newest, ``resume``.
    Precision: ``dtype`` of the forward pass: ``"auto"`` (bfloat16 autocast where the device runs
    it natively: a CPU with AMX or AVX-512 BF16, or a CUDA GPU with bf16; else float32),
    ``"bfloat16"`` or ``"float32"``. The weights, their gradients and the optimizer state stay
    float32 either way, and the held-out loss is computed in float32.
    """

    family: str = field(default="auto", metadata=cli("auto (from the model's config), causal, masked or seq2seq."))
    lora: bool = field(default=True, metadata=cli("Train LoRA adapters, or every weight.", "--lora/--full"))
    lora_rank: int = field(default=8, metadata=cli("LoRA's rank."))
    lora_alpha: int = field(default=16, metadata=cli("LoRA's alpha (its updates are scaled by alpha / rank)."))
    lora_dropout: float = field(default=0.05, metadata=cli("Dropout on LoRA's input."))
    target_modules: list[str] | None = field(
        default=None,
        metadata=cli(
            "LoRA on linear layers with this name (repeatable; default: all in the trained layers).", "--target-module"
        ),
    )
    train_layers: int | None = field(
        default=None, metadata=cli("Train only the top N layers (the backward pass stops there).")
    )
    merge: bool = field(default=False, metadata=cli("Save the base model with the adapter merged in."))
    kl_to_base: float = field(
        default=0.0,
        metadata=cli("Weight of KL(base || model) on the answer tokens' distributions (LoRA, causal LMs; 0: off)."),
    )
    epochs: float = field(default=1.0, metadata=cli("Passes over the training records."))
    max_steps: int | None = field(default=None, metadata=cli("Optimizer steps (overrides --epochs)."))
    batch_size: int = field(default=8, metadata=cli("Records per batch."))
    grad_accum: int = field(default=1, metadata=cli("Batches per optimizer step."))
    lr: float | None = field(default=None, metadata=cli("Peak learning rate (default 2e-4 with LoRA, 2e-5 full)."))
    warmup_steps: int | None = field(default=None, metadata=cli("Warm-up steps (or --warmup-ratio)."))
    warmup_ratio: float | None = field(default=None, metadata=cli("Warm-up share of the steps (default 0.03)."))
    weight_decay: float = field(default=0.0, metadata=cli("AdamW's weight decay."))
    max_grad_norm: float | None = field(default=1.0, metadata=cli("Clip gradients to this norm."))
    template: str = field(default="qa", metadata=cli("'qa' or 'chat': the prompt InBedder will use."))
    max_length: int | str = field(
        default=512,
        metadata=cli(
            "Longest prompt + answer in tokens; only the context is cut. 'auto': the 98th percentile of the data.",
            type=str,
            default="512",
        ),
    )
    group_by_length: bool = field(
        default=True, metadata=cli("Batch records of similar length together (less padding, faster steps).")
    )
    pad_multiple: int = field(
        default=1, metadata=cli("Pad each batch to a multiple of N tokens (few shapes: a small CPU kernel cache).")
    )
    max_answer_tokens: int = field(default=32, metadata=cli("Longest answer in tokens (longer ones are cut)."))
    answer_prefix: str = field(default=" ", metadata=cli("Put between the prompt and the answer."))
    context_column: str = field(default="context", metadata=cli("The records' column of texts."))
    question_column: str = field(default="question", metadata=cli("The records' column of questions."))
    answer_column: str = field(default="answer", metadata=cli("The records' column of answers."))
    split: str = field(default="train", metadata=cli("Split of a hub dataset."))
    limit: int | None = field(default=None, metadata=cli("Train on a seeded random subset of N records."))
    eval_size: int | None = field(default=None, metadata=cli("Held-out records (default: --eval-fraction)."))
    eval_fraction: float = field(default=0.02, metadata=cli("Share of the records held out."))
    save_every: int = field(default=200, metadata=cli("Checkpoint every N steps (0: never)."))
    keep_checkpoints: int | None = field(default=2, metadata=cli("Keep the newest N checkpoints.", type=int))
    resume: bool = field(default=False, metadata=cli("Continue from the latest checkpoint in --out."))
    overwrite: bool = field(
        default=False, metadata=cli("Write into an --out that holds other files (never into an earlier run).")
    )
    seed: int = field(default=0, metadata=cli("Seed of the shuffle, the split and the initialisation."))
    device: str = field(default="auto", metadata=cli("auto (CUDA when available), cpu or cuda."))
    dtype: str = field(
        default="auto",
        metadata=cli(
            "Forward-pass precision: auto (bfloat16 autocast on a CPU with AMX or AVX-512 BF16 and on a "
            "bf16 GPU, else float32), bfloat16 or float32; weights and optimizer state stay float32."
        ),
    )
    progress: bool = field(
        default=True,
        metadata=cli(
            "Progress bars (default: only when stderr is a terminal).",
            "--progress/--no-progress",
            type=bool | None,
            default=None,
        ),
    )
    trust_remote_code: bool = field(default=False, metadata=cli("Run model code from the hub (off unless asked)."))

    def __post_init__(self) -> None:
        from inbedder.backends import check_family

        check_family(self.family)
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "lora_rank": self.lora_rank}
        positive |= {"max_steps": self.max_steps or 1, "train_layers": self.train_layers or 1}
        positive |= {"keep_checkpoints": self.keep_checkpoints or 1, "epochs": self.epochs}
        positive |= {"pad_multiple": self.pad_multiple}
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise InputError("give warmup_steps or warmup_ratio, not both")
        if self.save_every < 0:
            raise InputError(f"save_every must be 0 (never) or a number of steps, got {self.save_every}")
        if not (isinstance(self.kl_to_base, (int, float)) and self.kl_to_base >= 0):
            raise InputError(f"kl_to_base must be 0 (off) or a positive weight, got {self.kl_to_base!r}")
        if self.kl_to_base and not self.lora:
            raise InputError("kl_to_base needs LoRA training: the base is the model with its adapters off")
        if self.merge and not self.lora:
            raise InputError("merge applies to LoRA training; full fine-tuning already saves the whole model")
        if self.max_length != "auto" and not (isinstance(self.max_length, int) and self.max_length > 0):
            raise InputError(f"max_length must be a positive number of tokens or 'auto', got {self.max_length!r}")
        if self.target_modules is not None:
            self.target_modules = list(self.target_modules)
        if self.dtype not in TRAINING_DTYPES:
            raise InputError(f"dtype must be one of {', '.join(TRAINING_DTYPES)}, got {self.dtype!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 2e-5)

    def warmup(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round((0.03 if self.warmup_ratio is None else self.warmup_ratio) * total_steps)
