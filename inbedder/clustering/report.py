"""A clustering result as one self-contained HTML page: per instruction a 2-D map and an explained card per cluster.

The page loads nothing: styles and the optional hover script are inline, the maps are inline SVG, and every
piece of text from the corpus or the model is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Protocol

import numpy as np

from inbedder.clustering.summary import NOISE, ClusterSummary, InstructionClustering


class Reportable(Protocol):
    """What the page shows of a clustering result (``inbedder.clustering.ClusteringResult`` has it)."""

    texts: list[str]
    model: str
    map_method: str
    labels: Mapping[str, Sequence[str]]
    clusterings: list[InstructionClustering]


PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#2f4b7c")
NOISE_COLOUR = "#b4b4b4"
MAP_W, MAP_H, MAP_MARGIN = 400.0, 300.0, 14.0

CSS = """
:root { --ink: #222; --muted: #666; --line: #e3e3e3; --bg: #f6f6f4; }
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header h1 { margin: 0 0 .25rem; font-size: 1.5rem; font-weight: 600; }
.meta { margin: 0 0 1.25rem; color: var(--muted); }
.meta b { color: var(--ink); font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 440px), 1fr)); gap: 1.25rem;
  align-items: start; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 1rem; min-width: 0; }
section h2 { margin: 0 0 .35rem; font-size: 1.05rem; font-weight: 600; overflow-wrap: anywhere; }
.facts { margin: 0 0 .5rem; color: var(--muted); font-size: .9em; }
.note { margin: 0 0 .5rem; padding: .35rem .5rem; background: #fbf7e9; border-radius: 4px; font-size: .85em; }
svg.map { display: block; width: 100%; height: auto; background: #fcfcfb; border: 1px solid var(--line);
  border-radius: 6px; }
svg.map circle { stroke: #fff; stroke-width: .8; transition: opacity .12s; }
svg.map.dim circle { opacity: .12; }
svg.map.dim circle.hl { opacity: 1; stroke: #222; }
.legend { display: flex; flex-wrap: wrap; gap: .25rem .9rem; margin: .5rem 0 .9rem; padding: 0; list-style: none;
  font-size: .85em; color: var(--muted); }
.legend li { cursor: default; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .3em;
  vertical-align: -.05em; }
.card { border: 1px solid var(--line); border-left: 4px solid var(--c); border-radius: 6px; padding: .6rem .75rem;
  margin-top: .65rem; }
.card h3 { margin: 0 0 .35rem; font-size: .95rem; font-weight: 600; }
.card h3 small { color: var(--muted); font-weight: 400; }
.card p { margin: .25rem 0; }
.k { color: var(--muted); font-size: .85em; margin-right: .25em; }
.chip { display: inline-block; margin: 0 .2em .2em 0; padding: 0 .4em; border-radius: 3px; background: #eef1f5;
  font-size: .88em; }
code.chip { font: .85em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre;
  background: #f1efe9; }
.muted { color: var(--muted); font-style: italic; }
.card ol { margin: .25rem 0; padding-left: 1.3rem; font-size: .9em; }
.card li { margin-bottom: .2rem; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .4rem 0 .2rem; font-size: .85em; }
.comp { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0 1.5rem; }
caption { text-align: left; color: var(--muted); padding-bottom: .15rem; white-space: nowrap; }
th, td { padding: .1rem .6rem .1rem 0; text-align: left; border-bottom: 1px solid var(--line); }
.n { text-align: right; font-variant-numeric: tabular-nums; }
"""

SCRIPT = """
document.querySelectorAll("section").forEach(function (sec) {
  var svg = sec.querySelector("svg.map");
  sec.querySelectorAll(".card, .legend li").forEach(function (el) {
    var pts = svg.querySelectorAll('circle[data-cluster="' + el.dataset.cluster + '"]');
    el.addEventListener("mouseenter", function () {
      svg.classList.add("dim"); pts.forEach(function (p) { p.classList.add("hl"); });
    });
    el.addEventListener("mouseleave", function () {
      svg.classList.remove("dim"); pts.forEach(function (p) { p.classList.remove("hl"); });
    });
  });
});
"""


def _palette(cluster: int) -> str:
    """The colour of a cluster id: a qualitative palette cycling, grey for noise."""
    return NOISE_COLOUR if cluster == NOISE else PALETTE[cluster % len(PALETTE)]


def _cut(text: str, limit: int) -> str:
    """``text`` with runs of whitespace collapsed, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _name(cluster: int) -> str:
    return "noise" if cluster == NOISE else f"cluster {cluster}"


def _ordered(clustering: InstructionClustering, texts: list[str]) -> list[ClusterSummary]:
    """The clusters by size, largest first, noise last; a bare noise card when noise has no summary."""
    clusters = sorted((c for c in clustering.clusters if c.cluster != NOISE), key=lambda c: (-c.size, c.cluster))
    noise = [c for c in clustering.clusters if c.cluster == NOISE]
    n_noise = int((clustering.assignments == NOISE).sum())
    if not noise and n_noise:
        examples = [t for t, a in zip(texts, clustering.assignments) if a == NOISE][:3]
        noise = [ClusterSummary(NOISE, n_noise, [], None, examples)]
    return clusters + noise


def _map(clustering: InstructionClustering, texts: list[str]) -> str:
    """An inline SVG scatter of the 2-D map, one circle per text with its hover text, noise drawn underneath."""
    xy = np.nan_to_num(np.asarray(clustering.coords, dtype=float).reshape(len(texts), 2))
    lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.zeros(2), np.zeros(2))
    span = hi - lo
    scale = min((MAP_W - 2 * MAP_MARGIN) / max(span[0], 1e-12), (MAP_H - 2 * MAP_MARGIN) / max(span[1], 1e-12))
    offset = (np.array([MAP_W, MAP_H]) - span * scale) / 2  # centre the cloud, same scale on both axes
    points = (xy - lo) * scale + offset
    order = sorted(range(len(texts)), key=lambda i: clustering.assignments[i] != NOISE)
    circles = []
    for i in order:
        cluster = int(clustering.assignments[i])
        x, y = points[i][0], MAP_H - points[i][1]  # y grows upward on the map
        hover = f"{_name(cluster)}\nanswer: {_cut(clustering.answers[i], 120)}\n{_cut(texts[i], 200)}"
        circles.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2.6 if cluster == NOISE else 4.2}" fill="{_palette(cluster)}"'
            f' data-cluster="{cluster}"><title>{escape(hover)}</title></circle>'
        )
    label = escape(f"2-D map of {len(texts)} texts for: {clustering.instruction}")
    return (
        f'<svg class="map" viewBox="0 0 {MAP_W:g} {MAP_H:g}" role="img" aria-label="{label}">'
        + "".join(circles)
        + "</svg>"
    )


def _chips(items: list[str], tag: str = "span") -> str:
    return "".join(f'<{tag} class="chip">{escape(item)}</{tag}>' for item in items)


def _composition(summary: ClusterSummary) -> str:
    """One small table per label column: label, count, share, captioned with purity and entropy."""
    tables = []
    for column, counts in summary.composition.items():
        total = sum(counts.values()) or 1
        rows = "".join(
            f'<tr><td>{escape(str(label))}</td><td class="n">{count}</td><td class="n">{count / total:.0%}</td></tr>'
            for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        )
        facts = []
        if column in summary.purity:
            facts.append(f"purity {summary.purity[column]:.2f}")
        if column in summary.entropy:
            facts.append(f"entropy {abs(summary.entropy[column]):.2f} bits")
        caption = escape(column) + (" · " + " · ".join(facts) if facts else "")
        tables.append(
            f"<table><caption>{caption}</caption>"
            f'<tr><th>label</th><th class="n">count</th><th class="n">share</th></tr>{rows}</table>'
        )
    return f'<div class="comp">{"".join(tables)}</div>' if tables else ""


def _card(summary: ClusterSummary, has_note: bool) -> str:
    cluster = summary.cluster
    keywords = _chips(summary.keywords) or '<span class="muted">none</span>'
    if summary.lm_head_tokens is not None:
        visible = [repr(token)[1:-1] for token in summary.lm_head_tokens]  # a newline token shows as \n
        tokens = _chips(visible, "code") or '<span class="muted">none</span>'
    else:
        tokens = f'<span class="muted">unavailable{" (see the note above)" if has_note else ""}</span>'
    examples = "".join(f"<li>{escape(_cut(text, 300))}</li>" for text in summary.examples)
    return (
        f'<div class="card" data-cluster="{cluster}" style="--c: {_palette(cluster)}">'
        f'<h3><span class="swatch" style="background: {_palette(cluster)}"></span>{_name(cluster)}'
        f" <small>· {summary.size} text{'s' if summary.size != 1 else ''}</small></h3>"
        f'<p><span class="k">keywords</span>{keywords}</p>'
        f'<p><span class="k">LM head</span>{tokens}</p>'
        + (f'<p class="k">examples</p><ol>{examples}</ol>' if examples else "")
        + _composition(summary)
        + "</div>"
    )


def _section(clustering: InstructionClustering, texts: list[str]) -> str:
    summaries = _ordered(clustering, texts)
    n_noise = int((clustering.assignments == NOISE).sum())
    facts = [escape(clustering.method), f"k = {clustering.k}"]
    if n_noise:
        facts.append(f"{n_noise} noise")
    facts += [f"V-measure ({escape(column)}) {value:.3f}" for column, value in clustering.v_measure.items()]
    note = f'<p class="note">{escape(clustering.lm_head_note)}</p>' if clustering.lm_head_note else ""
    legend = "".join(
        f'<li data-cluster="{s.cluster}"><span class="swatch" style="background: {_palette(s.cluster)}"></span>'
        f"{_name(s.cluster)} ({s.size})</li>"
        for s in summaries
    )
    return (
        f"<section><h2>{escape(clustering.instruction)}</h2>"
        f'<p class="facts">{" · ".join(facts)}</p>{note}'
        f'{_map(clustering, texts)}<ul class="legend">{legend}</ul>'
        + "".join(_card(s, bool(clustering.lm_head_note)) for s in summaries)
        + "</section>"
    )


def render_report(result: Reportable, title: str | None = None) -> str:
    """The whole result as one self-contained HTML document (no network: inline CSS, SVG and script)."""
    title = title or "inbedder clustering"
    meta = [
        f"model <b>{escape(result.model)}</b>",
        f"<b>{len(result.texts)}</b> texts",
        f"map <b>{escape(result.map_method)}</b>",
    ]
    if result.labels:
        meta.append("labels <b>" + escape(", ".join(result.labels)) + "</b>")
    sections = "".join(_section(c, result.texts) for c in result.clusterings)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f'<body><header><h1>{escape(title)}</h1><p class="meta">{" · ".join(meta)}</p></header>'
        f'<main class="grid">{sections}</main><script>{SCRIPT}</script></body></html>\n'
    )
