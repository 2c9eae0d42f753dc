"""Guided embeddings against InBedder and the generic embedder: quality on the local suite, and speed at scale.

    python benchmarks/guided.py --limit 200 [--methods ridge contrastive gstransform concat]
        [--speed-texts 20000] [--full-texts N] [--data-dir ../shared/data]

Quality: every clustering task of the local suite (each dataset subsampled to --limit records),
scored as the suite scores it (k-means with k = classes, v-measure over 5 seeds), for the InBedder
model (--model, default: the default model), the generic embedder (all-MiniLM-L6-v2) and a guided
map per method and sample size (--sample, several to compare: a sample smaller than the set shows
how the map does on texts it was not fitted on). Per method: on how many
tasks it is within 0.05 of the better of InBedder and MiniLM, and on how many it beats both
(by more than 0.005).

Speed (--speed-texts N; 0 skips it): a corpus of N texts, the suite's texts repeated with seeded
edits (a word dropped, two words swapped). In one run: InBedder over every text (over the first
--full-texts of them when given, and scaled to N: texts/s is constant over a corpus), guided end
to end (generic embedding of all, InBedder on the sample, fit, apply) with an empty store, and a
second instruction over the same corpus (generic vectors from the store), for each --sample size. The
generic embedder is loaded as guided embeddings load it (bfloat16 where the CPU runs it natively, as
the InBedder model is).
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inbedder import InBedder
from inbedder.eval.suite import LOCAL_SUITE, local_tasks, results_table, run
from inbedder.generic import SentenceEmbedder
from inbedder.guided import METHODS, GuidedEmbedder
from inbedder.reencoder import MINILM, load_sentence_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="InBedder model (default: the default model)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sample", type=int, nargs="+", default=[2000], help="sample sizes to compare")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--speed-texts", type=int, default=20000)
    parser.add_argument("--full-texts", type=int, default=None, help="time InBedder on this many texts, scaled")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    print(f"command: python benchmarks/guided.py {shlex.join(sys.argv[1:])}")

    model = InBedder(args.model)
    generic = load_sentence_embedder(MINILM)
    datasets = [name for name in LOCAL_SUITE if name != "stsb-test"]
    tasks = local_tasks(datasets, ["clustering"], args.data_dir, args.limit, args.seed)
    if not args.skip_quality:
        quality(model, generic, tasks, args)
    if args.speed_texts:
        speed(model, tasks, args)


def quality(model: InBedder, generic: object, tasks: list, args: argparse.Namespace) -> None:
    encoders: dict[str, object] = {model.name: model, MINILM: SentenceEmbedder(generic, name=MINILM)}
    for method in args.methods:
        for size in args.sample:
            name = f"guided {method}" + (f" sample {size}" if len(args.sample) > 1 else "")
            encoders[name] = GuidedEmbedder(model, generic, method=method, sample=size, seed=args.seed)
    start = time.perf_counter()
    results = run(encoders, tasks)
    print(f"\nquality ({(time.perf_counter() - start) / 60:.1f} minutes):\n")
    print(results_table(results))
    score = {(r.task, r.model): r.main for r in results}
    names = list(dict.fromkeys(r.task for r in results))
    print("\n| method | within 0.05 of the better of InBedder and MiniLM | beats both | mean v-measure |")
    print("|---|---|---|---|")
    for name in encoders:
        best = [max(score[(t, model.name)], score[(t, MINILM)]) for t in names]
        ours = [score[(t, name)] for t in names]
        within = sum(o >= b - 0.05 for o, b in zip(ours, best))
        beats = sum(o > b + 0.005 for o, b in zip(ours, best))
        print(f"| {name} | {within} of {len(names)} | {beats} | {np.mean(ours):.3f} |")


def edited_corpus(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` texts: ``texts`` first, then copies each with a word dropped or two words swapped (seeded)."""
    rng = random.Random(seed)
    out = list(texts[:n])
    while len(out) < n:
        words = rng.choice(texts).split()
        if len(words) > 3:
            i, j = rng.sample(range(len(words)), 2)
            if rng.random() < 0.5:
                del words[i]
            else:
                words[i], words[j] = words[j], words[i]
        out.append(" ".join(words) + f" ({len(out)})")
    return out


def speed(model: InBedder, tasks: list, args: argparse.Namespace) -> None:
    pool = list(dict.fromkeys(text for task in tasks for text in task.texts))
    corpus = edited_corpus(pool, args.speed_texts, args.seed)
    first, second = "What is the topic of this text?", "What is the sentiment of this text?"
    full = corpus[: args.full_texts] if args.full_texts else corpus
    print(f"\nspeed: {len(corpus)} texts, {len(pool)} distinct before edits; InBedder timed on {len(full)}")
    start = time.perf_counter()
    model.encode(full, first, batch_size=16)
    inbedder_s = (time.perf_counter() - start) * len(corpus) / len(full)
    rows = []
    for size in args.sample:
        with tempfile.TemporaryDirectory() as folder:  # an empty store: the first instruction embeds every text
            guided = GuidedEmbedder(model, None, sample=size, seed=args.seed, cache=Path(folder))
            for label, question in (("first", first), ("second", second)):
                start = time.perf_counter()
                vectors = guided.encode(corpus, question, cache=False)
                rows.append((f"guided, sample {size}, {label} instruction", time.perf_counter() - start))
    print("\n| run | seconds | texts/s | vs InBedder on every text |")
    print("|---|---|---|---|")
    scaled = " (scaled from the timed texts)" if len(full) < len(corpus) else ""
    print(f"| InBedder on every text{scaled} | {inbedder_s:.0f} | {len(corpus) / inbedder_s:.1f} | 1.0x |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.0f} | {len(corpus) / seconds:.1f} | {inbedder_s / seconds:.1f}x |")
    print(f"\nguided vectors: {vectors.shape[1]} numbers; the generic embedder in {guided.generic.dtype}")


if __name__ == "__main__":
    main()
