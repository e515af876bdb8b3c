"""One self-contained HTML page of a clustered corpus: the 2-D map with hover texts, and a table
per cluster (size, top terms, the texts nearest its centre).

Plotly draws the map, with its JavaScript written inline, so the page opens from disk with no
server and no network.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llm_embed.analysis.clusters import NOISE

HOVER_CHARS = 300  # a hover box shows the start of a long text


def _name(cid: int) -> str:
    return "noise" if cid == NOISE else f"cluster {cid}"


def _hover(text: str) -> str:
    """A text as a hover label: cut, HTML-escaped (plotly renders tags), wrapped at 80 columns."""
    short = text if len(text) <= HOVER_CHARS else text[:HOVER_CHARS].rstrip() + "…"
    return "<br>".join(html.escape(line) for line in textwrap.wrap(short, 80) or [""])


def map_figure(
    points: np.ndarray,
    labels: np.ndarray,
    texts: Sequence[str],
    terms: Mapping[int, Sequence[str]],
) -> Any:
    """A plotly figure: one WebGL scatter trace per cluster (the legend toggles it), hover texts."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cid in sorted({int(c) for c in labels}, key=lambda c: (c == NOISE, c)):
        idx = np.flatnonzero(labels == cid)
        words = ", ".join(terms.get(cid, [])[:3])
        fig.add_trace(
            go.Scattergl(
                x=points[idx, 0].tolist(),
                y=points[idx, 1].tolist(),
                mode="markers",
                name=f"{_name(cid)} ({len(idx)}){': ' + words if words else ''}",
                hovertext=[f"<b>{_name(cid)}</b><br>{_hover(texts[i])}" for i in idx],
                hoverinfo="text",
                marker={"size": 6, "opacity": 0.75},
            )
        )
    fig.update_layout(
        height=640,
        margin={"l": 20, "r": 20, "t": 30, "b": 20},
        xaxis={"visible": False},
        yaxis={"visible": False},
        legend={"itemsizing": "constant"},
    )
    return fig


def curve_figure(curve: Mapping[int, float]) -> Any:
    """The silhouette at each k tried, as a line."""
    import plotly.graph_objects as go

    ks = sorted(curve)
    fig = go.Figure(go.Scatter(x=ks, y=[curve[k] for k in ks], mode="lines+markers"))
    fig.update_layout(
        height=280,
        margin={"l": 50, "r": 20, "t": 30, "b": 40},
        xaxis_title="k",
        yaxis_title="silhouette",
    )
    return fig


def render_page(
    *,
    title: str,
    summary: Mapping[str, Any],
    clusters: Sequence[Mapping[str, Any]],
    map_fig: Any,
    curve: Mapping[int, float] | None = None,
) -> str:
    """The HTML page: a summary line, the map, the silhouette curve if k was searched, and a table
    per cluster. ``clusters`` holds dicts with ``cluster``, ``size``, ``terms`` and
    ``representatives`` (texts)."""
    parts = [map_fig.to_html(full_html=False, include_plotlyjs=True, div_id="map")]
    if curve:
        parts.append("<h2>Choosing k</h2>")
        parts.append(curve_figure(curve).to_html(full_html=False, include_plotlyjs=False))
    parts.append("<h2>Clusters</h2>")
    for c in clusters:
        items = "".join(f"<li>{html.escape(t)}</li>" for t in c["representatives"])
        terms = html.escape(", ".join(c["terms"])) or "<i>no words</i>"
        parts.append(
            f'<table class="cluster"><tr><th>{_name(c["cluster"])}</th><td>{c["size"]} texts'
            f"</td></tr><tr><th>top terms</th><td>{terms}</td></tr><tr><th>nearest the centre"
            f"</th><td><ol>{items}</ol></td></tr></table>"
        )
    facts = " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in summary.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }}
table.cluster {{ border-collapse: collapse; margin: 0.8em 0; width: 100%; }}
table.cluster th {{ text-align: left; vertical-align: top; width: 11em; padding: 0.3em;
  background: #f3f3f3; }}
table.cluster td {{ padding: 0.3em; border-bottom: 1px solid #ddd; }}
.facts {{ color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="facts">{facts}</p>
{"".join(parts)}
</body></html>
"""
