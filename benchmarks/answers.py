"""What a model answers: distinct greedy answers per aspect, and how often a non-English text is answered in English.

    python benchmarks/answers.py [--model NAME ...] [--data-dir ../shared/data] [--limit 64]

For every aspect of syngoalex dev (topic, style, language) it asks each model the aspect's main
question about the same stratified sample of texts (``--limit``, seeded) and prints the number of
distinct answers, the most common ones, and the share of the sample's non-English texts whose
answer is in English. An answer counts as English when every word of it is a known English word
(wordfreq: Zipf frequency >= 2) no more frequent in the text's own language than in English;
"science" and "anime" are English, "productividad" and "Sport" in a German text are not.
Needs the ``bench`` extra (wordfreq).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
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
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None, help="write the answers and figures as JSON")
    args = parser.parse_args()

    data = load_local("syngoalex", args.data_dir).subsample(args.limit, args.seed)
    languages = [LANGUAGE_CODES[label] for label in data.labels("language")]
    report: dict[str, dict] = {}
    print(f"syngoalex dev, {len(data.texts)} texts ({sum(c != 'en' for c in languages)} not in English)")
    print("| model | aspect | distinct answers | non-English texts answered in English | most common answers |")
    print("|---|---|---|---|---|")
    for name in args.model or [None]:
        model = InBedder(name)
        report[model.name] = {}
        for aspect, card in data.aspects.items():
            _, answers = model.encode(
                data.texts, card["instruction"], max_new_tokens=args.max_new_tokens, return_generations=True
            )
            answers = [a.strip() for a in answers]
            foreign = [(a, c) for a, c in zip(answers, languages) if c != "en"]
            english = sum(is_english(a, c) for a, c in foreign) / len(foreign)
            common = Counter(a.lower() for a in answers).most_common(5)
            distinct = len({a.lower() for a in answers})
            shown = ", ".join(f"{a} ({n})" for a, n in common)
            print(f"| {model.name} | {aspect} | {distinct} | {english:.0%} | {shown} |")
            report[model.name][aspect] = {
                "distinct": distinct,
                "english_share": english,
                "answers": answers,
                "labels": data.labels(aspect),
            }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
