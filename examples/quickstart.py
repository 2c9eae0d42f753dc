"""Embed the bundled reviews under two instructions and see what each one groups together.

For each instruction: what the model answers for a few reviews, and how often a review's nearest
neighbour (cosine, after centering on the corpus mean) shares its product domain or its sentiment.
An instruction-following embedder puts same-answer texts together, so the neighbour should share
what the instruction asks about.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from inbedder import InBedder

INSTRUCTIONS = {
    "domain": "What kind of product is being reviewed?",
    "sentiment": "Is the reviewer satisfied or dissatisfied?",
}


def neighbour_agreement(embeddings: np.ndarray, labels: pd.Series) -> float:
    centered = embeddings - embeddings.mean(0)
    unit = centered / np.linalg.norm(centered, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return float((labels.to_numpy()[similarity.argmax(1)] == labels.to_numpy()).mean())


def chance(labels: pd.Series) -> float:
    """How often a randomly chosen other text shares the label."""
    counts = labels.value_counts()
    return float(((counts - 1) * counts).sum() / (len(labels) * (len(labels) - 1)))


def main() -> None:
    reviews = pd.read_csv(Path(__file__).with_name("reviews.csv"))
    model = InBedder()
    print(f"{model}: {len(reviews)} reviews\n")
    for instruction in INSTRUCTIONS.values():
        embeddings, answers = model.encode(
            reviews["text"].tolist(), instruction, return_generations=True, max_new_tokens=6, show_progress_bar=True
        )
        print(f"instruction: {instruction!r}  ->  embeddings {embeddings.shape}")
        for text, answer in list(zip(reviews["text"], answers))[:4]:
            print(f"  {text[:60]!r:66} -> {answer!r}")
        for label in INSTRUCTIONS:
            share = neighbour_agreement(embeddings, reviews[label])
            print(f"  nearest neighbour shares the {label}: {share:.0%} (chance: {chance(reviews[label]):.0%})")
        print()


if __name__ == "__main__":
    main()
