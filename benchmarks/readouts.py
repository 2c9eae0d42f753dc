"""Which readout works best for a trained model: clustering and triplets of the local suite, one run.

    python benchmarks/readouts.py --model /root/inbedder-train/run3 --limit 200 --out out/readouts.json

For each corpus and question of the suite this computes, once, what every readout is made from:
the fst_gen state (one forward pass), a greedy answer of at most ``--max-new-tokens`` tokens with
its avg_gen state, and ``--samples`` sampled answers (temperature ``--temperature``, seeded). The
readouts compared:

- ``fst_gen``, ``avg_gen``: the hidden states;
- ``head prob``, ``head sqrt``, ``head top-k``, ``head mean embedding``: the LM head over the
  fst_gen state: the distribution of the first answer token, its square root, the top ``--top-k``
  logits (minus the k-th, zero elsewhere), or the distribution's mean of the output embeddings;
- ``head sqrt RP-1024``: the square root under the library's fixed 1,024-number projection
  (``fst_head_rp``); ``head top-64 margins RP-1024``: the 64 largest logits less the 64th, at unit
  length, under the same projection (``fst_head_top_rp``);
- ``head sqrt, answer mean``: the mean of the square-rooted head distributions that predict each
  token of the greedy answer (column 0, the fst_gen state, and each answer token's state but the
  last, which predicts what follows the answer);
- ``re_encode``: all-MiniLM-L6-v2 over the greedy answer (``re_encode mpnet``: all-mpnet-base-v2,
  with ``--mpnet``); ``re_encode K=3`` / ``K=5``: the mean over the first 3 or 5 sampled answers
  (``--samples 0`` skips them);
- ``fst_gen + re_encode``, ``head sqrt + re_encode`` (and ``+ re_encode mpnet``): the parts
  L2-normalised and side by side;
- with ``--layers L ...``: ``fst_gen layer L`` (the same position's state at an inner layer, one
  more forward pass per layer) and ``layer L + head top-64 RP``, both parts L2-normalised and side
  by side (a middle layer's general features beside the answer's distribution).

``--max-new-tokens 0`` generates nothing: only ``fst_gen`` and the head readouts, at the cost of one
forward pass per text and question (a larger model's choice in a fraction of the time).

Each readout is timed by what it needs (``--speed-texts`` texts of the first corpus, one
question, nothing cached): texts/s and the ratio to fst_gen, measured in this run.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inbedder import EncodeOptions, InBedder
from inbedder.backends import GenerationSettings
from inbedder.eval import baselines
from inbedder.eval.suite import LOCAL_SUITE, local_tasks, results_table, run
from inbedder.eval.tasks import ClusteringTask, per_text_instructions
from inbedder.generic import SentenceEmbedder
from inbedder.interface import EncodesOneAtATime

Key = tuple[str, str]


def sampling(args: argparse.Namespace, samples: int) -> dict[str, Any]:
    """``encode`` keywords for ``samples`` seeded answers re-encoded, with their texts."""
    return {
        "readout": "re_encode",
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": 0,
        "num_samples": samples,
        "return_generations": True,
    }


def _keys(texts: list[str], instruction: Any) -> list[Key]:
    asked = instruction if isinstance(instruction, list) else [instruction] * len(texts)
    return [(t, repr(i)) for t, i in zip(texts, asked)]


class Readouts:
    """Everything the readouts are made from, per (text, instruction): each corpus runs once per kind of pass."""

    def __init__(self, model: InBedder, minilm: Any, args: argparse.Namespace, mpnet: Any = None) -> None:
        self.model, self.minilm, self.mpnet, self.args = model, minilm, mpnet, args
        self.fst: dict[Key, np.ndarray] = {}
        self.at_layer: dict[int, dict[Key, np.ndarray]] = {layer: {} for layer in args.layers}
        self.avg: dict[Key, np.ndarray] = {}
        self.head_mean: dict[Key, np.ndarray] = {}
        self.greedy: dict[Key, str] = {}
        self.sampled: dict[Key, list[str]] = {}

    def add(self, texts: list[str], instructions: list[Any]) -> None:
        """Compute what is missing for ``texts`` under each of ``instructions`` (one ``encode_multi`` per kind)."""
        missing = [i for i in instructions if not all(k in self.fst for k in _keys(texts, i))]
        if not missing:
            return
        a, multi = self.args, self.model.encode_multi
        fst = multi(texts, missing, readout="fst_gen", batch_size=a.batch_size)
        for instruction, f in zip(missing, fst):
            for row, key in enumerate(_keys(texts, instruction)):
                self.fst[key] = f[row]
        for layer, table in self.at_layer.items():
            for instruction, f in zip(missing, multi(texts, missing, readout="fst_gen", layer=layer)):
                table.update(zip(_keys(texts, instruction), f))
        if not a.max_new_tokens:  # the readouts of the first answer token only
            return
        greedy = multi(texts, missing, readout="avg_gen", max_new_tokens=a.max_new_tokens, return_generations=True)
        sampled = multi(texts, missing, **sampling(a, a.samples)) if a.samples else [(None, None)] * len(missing)
        for instruction, (avg, answers), (_, samples) in zip(missing, greedy, sampled):
            means = answer_head_means(self.model, texts, instruction, a.max_new_tokens, a.batch_size)
            for row, key in enumerate(_keys(texts, instruction)):
                self.avg[key], self.greedy[key], self.head_mean[key] = avg[row], answers[row], means[row]
                if samples is not None:
                    self.sampled[key] = samples[row]

    def head(self, states: np.ndarray, kind: str) -> np.ndarray:
        logits = self.model.backend.vocabulary_logits(torch.as_tensor(states))
        if kind == "prob":
            return logits.softmax(-1).numpy()
        if kind == "sqrt":
            return logits.softmax(-1).sqrt().numpy()
        if kind == "mean embedding":
            weight = self.model.backend.model.get_output_embeddings().weight.detach().float()
            return (logits.softmax(-1) @ weight).numpy()
        top = logits.topk(self.args.top_k, dim=-1)
        out = torch.zeros_like(logits)
        out.scatter_(-1, top.indices, top.values - top.values[:, -1:])
        return out.numpy()

    def reencode(self, answers: list[list[str]], embedder: Any = None) -> np.ndarray:
        flat = [answer for per_text in answers for answer in per_text]
        vectors = np.asarray((embedder or self.minilm).encode(flat, batch_size=64), dtype=np.float32)
        return vectors.reshape(len(answers), len(answers[0]), -1).mean(1)

    def readouts(self) -> dict[str, Callable[[list[Key]], np.ndarray]]:
        def stack(table: dict[Key, Any]) -> Callable[[list[Key]], np.ndarray]:
            return lambda keys: np.stack([table[k] for k in keys])

        def normalised(x: np.ndarray) -> np.ndarray:
            return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)

        fst, avg = stack(self.fst), stack(self.avg)
        greedy = lambda keys: self.reencode([[self.greedy[k]] for k in keys])  # noqa: E731
        sqrt = lambda keys: self.head(fst(keys), "sqrt")  # noqa: E731
        top_rp = lambda keys: self.model.head(torch.as_tensor(fst(keys)), 1024, 64).numpy()  # noqa: E731
        made = {
            "fst_gen": fst,
            "head prob": lambda keys: self.head(fst(keys), "prob"),
            "head sqrt": sqrt,
            "head sqrt RP-1024": lambda keys: self.model.head(torch.as_tensor(fst(keys)), 1024).numpy(),
            "head top-64 margins RP-1024": top_rp,
            f"head top-{self.args.top_k}": lambda keys: self.head(fst(keys), "top"),
            "head mean embedding": lambda keys: self.head(fst(keys), "mean embedding"),
        }
        for layer, table in self.at_layer.items():
            inner = stack(table)
            made[f"fst_gen layer {layer}"] = inner
            made[f"layer {layer} + head top-64 RP"] = lambda keys, inner=inner: np.hstack(
                [normalised(inner(keys)), normalised(top_rp(keys))]
            )
        if not self.args.max_new_tokens:
            return made
        made |= {
            "avg_gen": avg,
            "head sqrt, answer mean": stack(self.head_mean),
            "re_encode": greedy,
            "fst_gen + re_encode": lambda keys: np.hstack([normalised(fst(keys)), normalised(greedy(keys))]),
            "head sqrt + re_encode": lambda keys: np.hstack([normalised(sqrt(keys)), normalised(greedy(keys))]),
        }
        if self.args.samples:
            made["re_encode K=3"] = lambda keys: self.reencode([self.sampled[k][:3] for k in keys])
            made[f"re_encode K={self.args.samples}"] = lambda keys: self.reencode([self.sampled[k] for k in keys])
        if self.mpnet is not None:
            by_mpnet = lambda keys: self.reencode([[self.greedy[k]] for k in keys], self.mpnet)  # noqa: E731
            made["re_encode mpnet"] = by_mpnet
            made["head sqrt + re_encode mpnet"] = lambda keys: np.hstack(
                [normalised(sqrt(keys)), normalised(by_mpnet(keys))]
            )
        return made


def answer_head_means(model: InBedder, texts: list[str], instruction: Any, max_new_tokens: int, batch_size: int):
    """(n, vocabulary): per text, the mean of the square-rooted head distributions that predict each
    token of its greedy answer (the runner's generation at the last layer, read by the LM head)."""
    prompts = model._prompts(texts, [instruction], EncodeOptions())
    plan = model.runner.plan(prompts, list(range(len(texts))), batch_size)
    settings = GenerationSettings(max_new_tokens, 0.0, 1.0, 1)
    out = np.zeros((len(texts), model.head.dimension), dtype=np.float32)
    with torch.inference_mode():
        for batch in plan.batches:
            (run,) = model.runner.run(plan, batch, model.num_layers, settings)
            predicting = run.answer_mask.clone().bool()
            counts = predicting.sum(1)
            last = predicting.long().cumsum(1).argmax(1)
            rows = torch.arange(len(batch))[counts > 1]
            predicting[rows, last[counts > 1]] = False  # the state after the last answer token predicts its end
            states = run.answer_states.float()
            logits = model.backend.vocabulary_logits(states.reshape(-1, states.shape[-1]))
            roots = logits.softmax(-1).sqrt().reshape(*states.shape[:2], -1)
            weights = predicting.float().unsqueeze(-1)
            out[batch] = ((roots * weights).sum(1) / weights.sum(1).clamp(min=1)).numpy()
    return out


class Readout(EncodesOneAtATime):
    """One readout as a model the suite can evaluate: ``encode`` looks its vectors up."""

    def __init__(self, make: Callable[[list[Key]], np.ndarray], store: Readouts) -> None:
        self.make, self.store = make, store

    def encode(self, sentences: list[str], instruction: Any = None, options: Any = None) -> np.ndarray:
        if not sentences:
            return np.zeros((0, 1), dtype=np.float32)
        self.store.add(list(sentences), [instruction])
        return self.make(_keys(list(sentences), instruction))


def speed(
    model: InBedder, minilm: Any, texts: list[str], instruction: str, args: argparse.Namespace, mpnet: Any = None
) -> dict[str, float]:
    """Texts a second for what each readout needs, on the same texts, nothing cached."""
    a = args

    def timed(work: Callable[[], Any]) -> float:
        started = time.perf_counter()
        work()
        return len(texts) / (time.perf_counter() - started)

    def sampled_answers(k: int) -> Any:
        return model.encode(texts, instruction, **sampling(a, k))

    def greedy_reencode(embedder: Any) -> Any:
        _, answers = model.encode(
            texts, instruction, readout="avg_gen", max_new_tokens=a.max_new_tokens, return_generations=True
        )
        return embedder.encode(answers)

    def head() -> Any:
        states = model.encode(texts, instruction, readout="fst_gen", batch_size=a.batch_size)
        return model.backend.vocabulary_logits(torch.as_tensor(states)).softmax(-1).sqrt()

    rates = {
        "fst_gen": timed(lambda: model.encode(texts, instruction, readout="fst_gen", batch_size=a.batch_size)),
        "head sqrt": timed(head),
        "head sqrt RP-1024": timed(lambda: model.encode(texts, instruction, readout="fst_head_rp")),
    }
    if a.max_new_tokens:
        rates["head sqrt, answer mean"] = timed(
            lambda: answer_head_means(model, texts, instruction, a.max_new_tokens, a.batch_size)
        )
        rates["avg_gen"] = timed(
            lambda: model.encode(texts, instruction, readout="avg_gen", max_new_tokens=a.max_new_tokens)
        )
        rates["re_encode"] = timed(lambda: greedy_reencode(minilm))
        if mpnet is not None:
            rates["re_encode mpnet"] = timed(lambda: greedy_reencode(mpnet))
        if a.samples:
            rates["re_encode K=3"] = timed(lambda: sampled_answers(3))
            rates[f"re_encode K={a.samples}"] = timed(lambda: sampled_answers(a.samples))
    rates["fst_gen (again)"] = timed(
        lambda: model.encode(texts, instruction, readout="fst_gen", batch_size=a.batch_size)
    )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="an InBedder model (default: the default model)")
    parser.add_argument("--datasets", nargs="+", default=list(LOCAL_SUITE[:5]))
    parser.add_argument("--kinds", nargs="+", default=["clustering", "triplets"])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens", type=int, default=3, help="0: only the first answer token's readouts, no generation"
    )
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--speed-texts", type=int, default=64, help="0: skip the speed measurement")
    parser.add_argument("--out", type=Path, default=Path("out/readouts.json"))
    parser.add_argument("--mpnet", action="store_true", help="also re-encode with all-mpnet-base-v2")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--layers", type=int, nargs="*", default=[], help="inner layers to read fst_gen at too")
    args = parser.parse_args()

    started = time.perf_counter()
    model = InBedder(args.model)
    minilm = baselines.load_sentence_embedder()
    tasks = local_tasks(args.datasets, args.kinds, args.data_dir, args.limit, args.seed)
    mpnet = baselines.load_sentence_embedder(baselines.MPNET) if args.mpnet else None
    store = Readouts(model, minilm, args, mpnet)
    corpora: dict[tuple[str, ...], list[Any]] = {}
    for task in tasks:  # every question of a corpus at once, in corpus order
        if isinstance(task, ClusteringTask):
            corpora.setdefault(tuple(task.texts), []).append(per_text_instructions(task.instruction, task.fields))
    for texts, questions in corpora.items():
        store.add(list(texts), questions)
    computed = time.perf_counter() - started
    encoders = {name: Readout(make, store) for name, make in store.readouts().items()}
    encoders["all-MiniLM-L6-v2"] = SentenceEmbedder(minilm, name="all-MiniLM-L6-v2")
    encoders["all-MiniLM-L6-v2 + instruction"] = SentenceEmbedder(
        minilm, "{instruction} {text}", name="MiniLM + instruction"
    )
    results = run(encoders, tasks)
    table = results_table(results)
    print(table)
    rates = {}
    if args.speed_texts:
        first = next(t for t in tasks if isinstance(t, ClusteringTask) and t.fields is None)
        rates = speed(model, minilm, first.texts[: args.speed_texts], first.instruction, args, mpnet)
        base = rates["fst_gen"]
        print("\n| readout | texts/s | ratio to fst_gen |\n|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.2f} | {rate / base:.2f} |")
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{minutes:.1f} minutes ({computed / 60:.1f} computing the states and answers)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    answers = {f"{t[:60]} | {q}": a for (t, q), a in list(store.greedy.items())[:40]}
    payload = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "table": table}
    payload |= {"speed": rates, "sample_answers": answers}
    args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
