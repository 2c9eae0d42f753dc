"""The HTML report of a clustering, parsed with html.parser: maps, cards, escaping, no network."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

from inbedder.clustering.report import render_report
from inbedder.clustering.result import NOISE, ClusteringResult, ClusterSummary, InstructionClustering

EVIL = "<script>alert(1)</script> & \"quotes\" 'too'"
LONG = "word " * 200
TEXTS = ["I adore my cat.", "Dogs are the best.", EVIL, "Rain all week, so sad.", "Sunny and warm!", LONG, "Meh."]
TOPIC = ["pets", "pets", "other", "weather", "weather", "other", "other"]


class Page(HTMLParser):
    """Per <section>: how many svg.map, how many circles, and each card with its text and table rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict] = []
        self.scripts: list[dict[str, str | None]] = []
        self.titles: list[str] = []  # the hover texts of the circles
        self.card: dict | None = None
        self.depth = 0
        self.cell = False
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "script":
            self.scripts.append(a)
        elif tag == "section":
            self.sections.append({"maps": 0, "circles": 0, "cards": []})
        elif tag == "svg" and "map" in classes:
            self.sections[-1]["maps"] += 1
        elif tag == "circle":
            self.sections[-1]["circles"] += 1
            self.titles.append("")
        elif tag == "title" and self.titles:
            self.in_title = True
        elif tag == "div" and "card" in classes:
            self.card = {"cluster": int(a["data-cluster"]), "text": "", "rows": []}
            self.sections[-1]["cards"].append(self.card)
            self.depth = 1
        elif tag == "div" and self.card:
            self.depth += 1
        elif tag == "tr" and self.card:
            self.card["rows"].append([])
        elif tag in ("td", "th") and self.card:
            self.card["rows"][-1].append("")
            self.cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.card:
            self.depth -= 1
            if not self.depth:
                self.card = None
        elif tag in ("td", "th"):
            self.cell = False
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.titles[-1] += data
        if self.card:
            self.card["text"] += data
            if self.cell:
                self.card["rows"][-1][-1] += data


def summary(cluster: int, size: int, keywords: list[str], examples: list[str], **extra) -> ClusterSummary:
    return ClusterSummary(cluster, size, keywords, extra.pop("lm_head_tokens", None), examples, **extra)


@pytest.fixture
def result() -> ClusteringResult:
    rng = np.random.default_rng(0)
    n = len(TEXTS)
    sentiment = InstructionClustering(
        instruction="How does the writer feel?",
        assignments=np.array([0, 0, 1, 1, 1, 1, NOISE]),
        distances=rng.random(n),
        coords=rng.normal(size=(n, 2)),
        answers=["happy", "happy", "odd", "sad", "happy", "bored", "meh"],
        clusters=[
            summary(
                0,
                2,
                ["happy", "love"],
                ["I adore my cat."],
                lm_head_tokens=[" joy", " love"],
                composition={"topic": {"pets": 2}},
                purity={"topic": 1.0},
                entropy={"topic": 0.0},
            ),
            summary(
                1,
                4,
                ["sad", "odd"],
                [EVIL, LONG],
                lm_head_tokens=[" gloom", "\n"],
                composition={"topic": {"other": 2, "weather": 2}},
                purity={"topic": 0.5},
                entropy={"topic": 1.0},
            ),
            summary(NOISE, 1, [], ["Meh."], lm_head_tokens=[], composition={"topic": {"other": 1}}),
        ],
        method="hdbscan",
        k=2,
        v_measure={"topic": 0.4321},
    )
    subject = InstructionClustering(
        instruction="What is the text about?",
        assignments=np.array([2, 2, 0, 1, 1, 0, 0]),
        distances=rng.random(n),
        coords=rng.normal(size=(n, 2)),
        answers=["a cat", "dogs", "a script", "rain", "sun", "words", "nothing"],
        clusters=[
            summary(0, 3, ["script", "nothing"], ["Meh."]),
            summary(1, 2, ["rain", "sun"], ["Sunny and warm!"]),
            summary(2, 2, ["cat", "dogs"], ["Dogs are the best."]),
        ],
        method="kmeans",
        k=3,
        lm_head_note="LM-head tokens need the last layer; this readout is at layer 20.",
    )
    ids = [f"t{i}" for i in range(n)]
    return ClusteringResult(TEXTS, ids, "tiny/llama", "PCA", [sentiment, subject], labels={"topic": TOPIC})


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def test_one_map_per_instruction_with_a_circle_per_text(result):
    page = parse(render_report(result))
    assert len(page.sections) == 2
    for section in page.sections:
        assert section["maps"] == 1
        assert section["circles"] == len(TEXTS)
    assert len(page.titles) == 2 * len(TEXTS)
    assert any(t.startswith("noise\nanswer: meh\nMeh.") for t in page.titles)


def test_one_card_per_cluster_by_size_with_noise_last(result):
    page = parse(render_report(result))
    assert [c["cluster"] for c in page.sections[0]["cards"]] == [1, 0, NOISE]
    assert [c["cluster"] for c in page.sections[1]["cards"]] == [0, 1, 2]  # ties keep the cluster id order
    assert page.sections[0]["cards"][-1]["text"].startswith("noise")


def test_a_noise_card_is_made_when_noise_has_no_summary(result):
    result.clusterings[0].clusters.pop()  # drop the noise summary; the noise point is still assigned
    cards = parse(render_report(result)).sections[0]["cards"]
    assert [c["cluster"] for c in cards] == [1, 0, NOISE]
    assert "Meh." in cards[-1]["text"]


def test_cards_show_keywords_tokens_examples_and_notes(result):
    page = parse(render_report(result))
    big, small, _ = page.sections[0]["cards"]
    assert "sad" in big["text"] and "odd" in big["text"] and " gloom" in big["text"] and "\\n" in big["text"]
    assert "happy" in small["text"] and "I adore my cat." in small["text"]
    assert EVIL in big["text"]  # the example, decoded back to the original text
    long_example = re.search(r"(word )+word…", big["text"])
    assert long_example and len(long_example.group(0)) <= 300
    assert " joy" in small["text"] and "none" in page.sections[0]["cards"][2]["text"]  # noise: no tokens
    for card in page.sections[1]["cards"]:  # no tokens: the clustering's note, once above the map, explains
        assert "unavailable (see the note above)" in card["text"]


def test_header_and_facts(result):
    html = render_report(result, title="Moods & topics")
    assert "<title>Moods &amp; topics</title>" in html and "<h1>Moods &amp; topics</h1>" in html
    assert "tiny/llama" in html and "<b>7</b> texts" in html and "<b>PCA</b>" in html
    assert "hdbscan" in html and "k = 3" in html and "V-measure (topic) 0.432" in html
    assert html.count("this readout is at layer 20") == 1
    assert "<title>inbedder clustering</title>" in render_report(result)


def test_texts_are_escaped(result):
    html = render_report(result)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot; &#x27;too&#x27;" in html
    page = parse(html)
    assert len(page.scripts) == 1 and "src" not in page.scripts[0]  # only the page's own inline script
    assert any(EVIL in t for t in page.titles)


def test_nothing_is_loaded_from_the_network(result):
    html = render_report(result)
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)


def test_composition_tables(result):
    big = parse(render_report(result)).sections[0]["cards"][0]
    assert big["rows"] == [["label", "count", "share"], ["other", "2", "50%"], ["weather", "2", "50%"]]
    assert "purity 0.50" in big["text"] and "entropy 1.00 bits" in big["text"]
    assert all(not card["rows"] for card in parse(render_report(result)).sections[1]["cards"])
