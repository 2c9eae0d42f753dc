"""Training throughput: records and tokens a second with and without length-grouped batches, in one run.

    python benchmarks/train_speed.py --data ../shared/data/qa-aspects.jsonl:0.7 \
        --data out/qa-named-answers.jsonl:0.3 --steps 15 --train-layers 12 --lora-rank 16

Both settings train the same base on the same mix for ``--steps`` steps (after one warm-up step
that is not timed) and report the mean seconds a step, records/s, real (unpadded) tokens/s and
the padded share; the ratio of the two is the figure to quote, since this machine is noisy.
``--loss-paths N`` also times, on N length-grouped batches of the same model, a forward and
backward pass with the model's own loss (logits at every position) against ``answer_loss``
(logits only where an answer token is predicted), alternating the two.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inbedder import models
from inbedder.training import train


def measure(base: str, data: list[str], group: bool, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(
            base,
            data,
            Path(out) / "run",
            max_steps=args.steps + 1,
            group_by_length=group,
            batch_size=args.batch_size,
            max_length=args.max_length if args.max_length == "auto" else int(args.max_length),
            train_layers=args.train_layers,
            lora_rank=args.lora_rank,
            lora_alpha=2 * args.lora_rank,
            eval_size=0,
            save_every=0,
            progress=False,
            seed=args.seed,
        )
        wall = time.perf_counter() - started
    step_seconds = result.details["step_seconds"][1:]  # the first step warms up
    seconds = sum(step_seconds)
    records = args.steps * args.batch_size
    tokens = sum(result.details["step_tokens"][1:])
    padded = sum(result.details["step_padded_tokens"][1:])
    return {
        "group_by_length": group,
        "seconds_per_step": seconds / args.steps,
        "records_per_second": records / seconds,
        "tokens_per_second": tokens / seconds,
        "padding_share": 1 - tokens / padded,
        "max_length_used": result.details["max_length_used"],
        "wall_seconds_with_loading": wall,
    }


def loss_paths(base: str, data: list[str], batches: int, args: argparse.Namespace) -> dict[str, float]:
    """Seconds for a forward + backward pass: the model's own loss against ``answer_loss``, same batches."""
    from inbedder.loading import load_tokenizer
    from inbedder.training.encoding import Collator, QAEncoder, pad_id
    from inbedder.training.losses import answer_loss
    from inbedder.training.mix import mix, parse_sources
    from inbedder.training.modeling import LoraSettings, add_lora, load_model, top_blocks

    source = models.resolve(base)
    tokenizer = load_tokenizer(source)
    records = mix(parse_sources(data), seed=args.seed, limit=batches * args.batch_size, eval_size=0).train
    examples = QAEncoder(tokenizer, "causal", max_length=512).encode_all(records)
    collate = Collator(pad_id(tokenizer))
    examples.sort(key=lambda e: len(e.input_ids))
    model = load_model(source, "causal")
    model = add_lora(model, "causal", top_blocks(model, args.train_layers), LoraSettings(args.lora_rank), base)
    paths = {"model loss": lambda batch: model(**batch).loss, "answer_loss": lambda batch: answer_loss(model, batch)}
    seconds = dict.fromkeys(paths, 0.0)
    for start in range(0, len(examples), args.batch_size):
        batch = collate(examples[start : start + args.batch_size])
        for name, loss_of in paths.items():
            started = time.perf_counter()
            loss_of(batch).backward()
            seconds[name] += time.perf_counter() - started
            model.zero_grad(set_to_none=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=models.BASE_MODEL)
    parser.add_argument("--data", action="append", required=True, help="PATH or PATH:WEIGHT (repeatable)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", default="auto")
    parser.add_argument("--train-layers", type=int, default=12)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--loss-paths", type=int, default=0, help="also time the two loss paths on N batches")
    parser.add_argument("--skip-grouping", action="store_true", help="only the loss paths")
    args = parser.parse_args()
    if args.loss_paths:
        seconds = loss_paths(args.base, args.data, args.loss_paths, args)
        print(json.dumps({k: round(v, 3) for k, v in seconds.items()}))
        print(f"answer_loss / model loss time: {seconds['answer_loss'] / seconds['model loss']:.2f}")
        if args.skip_grouping:
            return
    rows = [measure(args.base, args.data, group, args) for group in (False, True)]
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    plain, grouped = rows
    print(f"records/s ratio grouped/plain: {grouped['records_per_second'] / plain['records_per_second']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
