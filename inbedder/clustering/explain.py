"""Explaining clusters: keywords of their answers, tokens the LM head reads from their states,
representative texts, and how the clusters split any known labels."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

WORD = r"(?u)\b[^\W\d_][\w'-]+\b"  # a word starts with a letter and has at least two characters


def ctfidf_keywords(
    answers: Sequence[str],
    assignments: np.ndarray,
    clusters: Sequence[int],
    top: int = 8,
    exclude: str = "",
) -> dict[int, list[str]]:
    """c-TF-IDF keywords per cluster: its answers joined into one document, weighed against the others.

    Weight of term t in cluster c: tf(t, c) / words(c) * log(1 + A / f(t)), where A is the mean
    number of words per cluster and f(t) the term's count over all clusters (as in BERTopic).
    English stop words and the words of ``exclude`` (the question, which answers echo) are left
    out. A cluster whose answers have no content words gets none.
    """
    documents = [" ".join(a for a, c in zip(answers, assignments) if c == cluster) for cluster in clusters]
    stop_words = sorted(ENGLISH_STOP_WORDS | set(re.findall(WORD, exclude.lower())))
    try:
        vectorizer = CountVectorizer(stop_words=stop_words, token_pattern=WORD)
        counts = vectorizer.fit_transform(documents).toarray().astype(float)
    except ValueError:  # no content words in any answer
        return {cluster: [] for cluster in clusters}
    terms = vectorizer.get_feature_names_out()
    words = counts.sum(1, keepdims=True)
    tf = counts / np.maximum(words, 1)
    idf = np.log(1 + words.mean() / np.maximum(counts.sum(0), 1))
    scores = tf * idf
    return {
        cluster: [str(terms[j]) for j in np.argsort(-row, kind="stable")[:top] if row[j] > 0]
        for cluster, row in zip(clusters, scores)
    }


def representatives(distances: np.ndarray, assignments: np.ndarray, cluster: int, top: int = 3) -> list[int]:
    """Indices of the cluster's texts closest to its centroid, closest first."""
    members = np.flatnonzero(assignments == cluster)
    return [int(i) for i in members[np.argsort(distances[members], kind="stable")[:top]]]


def composition(labels: Sequence[str]) -> tuple[dict[str, int], float, float]:
    """Count of each label (largest first), purity (largest share) and entropy in bits."""
    counts = Counter(labels)
    total = sum(counts.values())
    shares = [n / total for n in counts.values()]
    entropy = -sum(p * math.log2(p) for p in shares)
    return dict(counts.most_common()), max(shares), entropy + 0.0
