"""Plotly figures for the dashboard. They draw numbers and compute none."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.successor import HeadRank


def head_heatmap(grid: list[list[float]], *, title: str, units: str, chance: float | None) -> go.Figure:
    """Draw a layer x head grid of scores, layer 0 at the top.

    Share-of-items scores (``chance`` given) run from 0 to the larger of the
    best score and chance, so the few heads above chance stand out even when
    every score is far below 1. Logit scores use a diverging scale centred on
    zero, because a head can push the next item down as well as up.
    """
    n_heads = len(grid[0]) if grid else 0
    if chance is None:
        colour = dict(zmid=0.0, colorscale="RdBu")
    else:
        top = max([max(row) for row in grid] + [chance])
        colour = dict(zmin=0.0, zmax=top if top > 0 else 1.0, colorscale="Viridis")
    heatmap = go.Heatmap(
        z=grid,
        x=[f"H{head}" for head in range(n_heads)],
        y=[f"L{layer}" for layer in range(len(grid))],
        colorbar=dict(title=dict(text=units)),
        hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>",
        **colour,
    )
    figure = go.Figure(heatmap)
    figure.update_layout(
        title=dict(text=title),
        xaxis=dict(title=dict(text="head")),
        yaxis=dict(title=dict(text="layer"), autorange="reversed"),
        height=max(320, 26 * len(grid) + 160),
    )
    return figure


def top_heads_bar(ranks: list[HeadRank], *, title: str, units: str, chance: float | None) -> go.Figure:
    """Draw the ranked heads as bars, with a dashed line at the chance level when there is one.

    The title, not an annotation, names the chance level: an annotation lands on a bar.
    """
    labels = [rank.label for rank in ranks]
    values = [rank.mean_score for rank in ranks]
    figure = go.Figure(go.Bar(x=labels, y=values, hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    if chance is not None:
        figure.add_hline(y=chance, line_dash="dash")
        title = f"{title} (dashed line: chance = {chance:.3f})"
    figure.update_layout(
        title=dict(text=title),
        xaxis=dict(title=dict(text="head"), type="category"),
        yaxis=dict(title=dict(text=units)),
        height=360,
    )
    return figure
