"""What a model answers: distinct greedy answers per aspect, and how often a non-English text is answered in English.

    python benchmarks/answers.py [--model NAME ...] [--data-dir ../shared/data] [--limit 64]
    python benchmarks/answers.py --dataset amazon-reviews --question "What does the reviewer complain about?"
    python benchmarks/answers.py --by language   # also each aspect's answers per label and language

For every aspect of a local dataset's card (syngoalex dev by default: topic, style, language), and
every ``--question``, it asks each model that question about the same stratified sample of texts
(``--limit``, seeded) and prints the number of distinct answers, the most common ones, their label
purity for an aspect's own question (the share of texts whose label is the commonest among the
texts given the same answer), and (where the dataset labels languages) the share of the sample's
non-English texts whose answer is in English.
An answer counts as English when every word of it is a known English word
(wordfreq: Zipf frequency >= 2) no more frequent in the text's own language than in English;
"science" and "anime" are English, "productividad" and "Sport" in a German text are not.
Needs the ``bench`` extra (wordfreq).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from inbedder import InBedder
from inbedder.eval import load_local

LANGUAGE_CODES = {"English": "en", "French": "fr", "Deutsch": "de", "Spanish": "es"}
"""syngoalex's language labels as wordfreq's language codes."""


def is_english(answer: str, language: str) -> bool:
    """Whether ``answer`` reads as English rather than as ``language`` (a wordfreq code)."""
    from wordfreq import zipf_frequency

    words = re.findall(r"[^\W\d_]+", answer.lower())
    if not words:
        return False
    for word in words:
        english = zipf_frequency(word, "en")
        if english < 2 or (language != "en" and zipf_frequency(word, language) > english):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="InBedder model(s); default: the default model")
    parser.add_argument("--dataset", default="syngoalex", help="a local dataset (its card's questions are asked)")
    parser.add_argument("--question", action="append", default=[], help="a further question to ask every text")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None, help="write the answers and figures as JSON")
    parser.add_argument("--by", default=None, help="an aspect to break each aspect's answers down by (e.g. language)")
    args = parser.parse_args()
    data = load_local(args.dataset, args.data_dir)
    if args.by is not None and args.by not in data.aspects:
        parser.error(f"--by {args.by!r} is not an aspect of {args.dataset}")
    data = data.subsample(args.limit, args.seed)
    questions = {aspect: card["instruction"] for aspect, card in data.aspects.items()}
    questions |= {question: question for question in args.question}
    languages = [LANGUAGE_CODES.get(label) for label in data.labels("language")] if "language" in data.aspects else []
    foreign = sum(code not in (None, "en") for code in languages)
    print(f"{args.dataset}, {len(data.texts)} texts ({foreign} not in English)")
    columns = ("distinct answers", "label purity", "non-English texts answered in English", "most common answers")
    print(f"| model | question | {' | '.join(columns)} |")
    print("|---" * (len(columns) + 2) + "|")
    report: dict[str, dict] = {}
    for name in args.model or [None]:
        model = InBedder(name)
        report[model.name] = {}
        for asked, question in questions.items():
            _, answers = model.encode(data.texts, question, max_new_tokens=args.max_new_tokens, return_generations=True)
            answers = [a.strip() for a in answers]
            report[model.name][asked] = figures(answers, languages)
            if asked in data.aspects:
                report[model.name][asked]["labels"] = data.labels(asked)
                report[model.name][asked]["purity"] = purity(answers, data.labels(asked))
            row = report[model.name][asked]
            english = "-" if row["english_share"] is None else f"{row['english_share']:.0%}"
            shown = ", ".join(f"{a} ({n})" for a, n in Counter(a.lower() for a in answers).most_common(5))
            label_purity = f"{row['purity']:.3f}" if "purity" in row else "-"
            print(f"| {model.name} | {asked} | {row['distinct']} | {label_purity} | {english} | {shown} |")
    if args.by:
        for name, asked_answers in report.items():
            for asked, row in asked_answers.items():
                if asked in data.aspects and asked != args.by:
                    print(breakdown(name, asked, row["answers"], data.labels(asked), args.by, data.labels(args.by)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))


def breakdown(model: str, aspect: str, answers: list[str], labels: list[str], by: str, by_labels: list[str]) -> str:
    """A markdown table of the most common answers to ``aspect``'s question per (its label, the ``by`` label)."""
    groups: defaultdict[tuple[str, str], Counter] = defaultdict(Counter)
    for answer, label, other in zip(answers, labels, by_labels):
        groups[label, other][answer.lower()] += 1
    lines = [f"\n{model}, {aspect} by {by}:", f"| {aspect} | {by} | texts | most common answers |", "|---|---|---|---|"]
    for (label, other), counts in sorted(groups.items()):
        shown = ", ".join(f"{a} ({n})" for a, n in counts.most_common(4))
        lines.append(f"| {label} | {other} | {counts.total()} | {shown} |")
    return "\n".join(lines)


def purity(answers: list[str], labels: list[str]) -> float:
    """The share of texts whose label is the commonest label among the texts given the same answer: 1.0
    when every answer stands for one label (for two labels and two answers, the answers' accuracy)."""
    by_answer: defaultdict[str, Counter] = defaultdict(Counter)
    for answer, label in zip(answers, labels):
        by_answer[answer.lower()][label] += 1
    return sum(max(counts.values()) for counts in by_answer.values()) / len(answers)


def figures(answers: list[str], languages: list[str | None]) -> dict:
    """Distinct answers, and the share of non-English texts answered in English (None without languages)."""
    foreign = [(a, c) for a, c in zip(answers, languages) if c not in (None, "en")]
    english = sum(is_english(a, c) for a, c in foreign) / len(foreign) if foreign else None
    return {"distinct": len({a.lower() for a in answers}), "english_share": english, "answers": answers}


if __name__ == "__main__":
    main()
