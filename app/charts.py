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


# -- activation explorer ----------------------------------------------------------


def _token_axis(labels: list[str], title: str) -> dict:
    """Return an axis at integer positions labelled with the tokens.

    Positions, not token strings, are the coordinates: plotly merges equal
    category labels, and a prompt often repeats a token.
    """
    return dict(
        title=dict(text=title),
        tickmode="array",
        tickvals=list(range(len(labels))),
        ticktext=labels,
        tickangle=-45,
    )


def attention_heatmap(pattern: list[list[float]], labels: list[str], *, title: str) -> go.Figure:
    """Draw one head's attention pattern, query positions down and key positions across."""
    heatmap = go.Heatmap(
        z=pattern,
        x=list(range(len(labels))),
        y=list(range(len(labels))),
        customdata=[[(query, key) for key in labels] for query in labels],
        zmin=0.0,
        zmax=1.0,
        colorscale="Blues",
        colorbar=dict(title=dict(text="attention")),
        hovertemplate="query %{customdata[0]} → key %{customdata[1]}: %{z:.3f}<extra></extra>",
    )
    figure = go.Figure(heatmap)
    size = max(360, 28 * len(labels) + 200)
    figure.update_layout(
        title=dict(text=title),
        xaxis=_token_axis(labels, "key"),
        yaxis=dict(_token_axis(labels, "query"), autorange="reversed", tickangle=0),
        height=size,
        width=size + 120,
    )
    return figure


def attention_grid(patterns: list[list[list[float]]], labels: list[str], *, title: str,
                   columns: int = 4) -> go.Figure:
    """Draw every head's pattern of one layer as small multiples on one colour scale (0 to 1)."""
    from plotly.subplots import make_subplots

    n_heads = len(patterns)
    n_columns = max(1, min(columns, n_heads))
    n_rows = -(-n_heads // n_columns)  # ceiling division
    figure = make_subplots(rows=n_rows, cols=n_columns, subplot_titles=[f"H{head}" for head in range(n_heads)],
                           horizontal_spacing=0.04, vertical_spacing=0.08)
    positions = list(range(len(labels)))
    customdata = [[(query, key) for key in labels] for query in labels]
    for head, pattern in enumerate(patterns):
        figure.add_trace(
            go.Heatmap(
                z=pattern, x=positions, y=positions, customdata=customdata,
                zmin=0.0, zmax=1.0, colorscale="Blues", showscale=head == 0,
                colorbar=dict(title=dict(text="attention")),
                hovertemplate=f"H{head} " + "query %{customdata[0]} → key %{customdata[1]}: %{z:.3f}<extra></extra>",
            ),
            row=head // n_columns + 1,
            col=head % n_columns + 1,
        )
    # Small multiples are read by shape; tick labels would overlap, so the hover names the tokens.
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False, autorange="reversed")
    figure.update_layout(title=dict(text=title), height=260 * n_rows + 100)
    return figure


def logit_lens_heatmap(lens: list, labels: list[str], *, title: str) -> go.Figure:
    """Draw the logit lens as a layer x position grid: colour is the top-1 probability, text the top-1 token.

    ``lens`` is ``analysis.explorer.logit_lens`` output, ``[layer][position][rank]``
    of ``LensCell``. The hover lists every rank that ``lens`` holds.
    """
    probabilities = [[cells[0].probability for cells in row] for row in lens]
    top_tokens = [[repr(cells[0].token) for cells in row] for row in lens]
    hover = [
        ["<br>".join(f"{rank}. {cell.token!r} {cell.probability:.3f}" for rank, cell in enumerate(cells, start=1))
         for cells in row]
        for row in lens
    ]
    heatmap = go.Heatmap(
        z=probabilities,
        x=list(range(len(labels))),
        y=[f"L{layer}" for layer in range(len(lens))],
        text=top_tokens,
        texttemplate="%{text}",
        textfont=dict(size=10),
        customdata=hover,
        zmin=0.0,
        zmax=1.0,
        colorscale="Viridis",
        colorbar=dict(title=dict(text="top-1 probability")),
        hovertemplate="%{y}, position %{x}<br>%{customdata}<extra></extra>",
    )
    figure = go.Figure(heatmap)
    figure.update_layout(
        title=dict(text=title),
        xaxis=_token_axis(labels, "position (input token)"),
        yaxis=dict(title=dict(text="layer"), autorange="reversed"),
        height=max(360, 28 * len(lens) + 200),
    )
    return figure


# -- steering -----------------------------------------------------------------------


def metric_versus_strength(results: list, metric: str, *, title: str) -> go.Figure:
    """Draw one measure of the steered condition against strength, with the unsteered and in-context levels.

    ``results`` is ``analysis.steering.evaluate.evaluate_sweep`` output: one
    ``ConditionResult`` for "none", one for "icl" and one per strength for "vector".
    """
    steered = sorted((result for result in results if result.condition == "vector"), key=lambda r: r.strength)
    figure = go.Figure(go.Scatter(
        x=[result.strength for result in steered],
        y=[getattr(result, metric) for result in steered],
        mode="lines+markers",
        name="steered",
        hovertemplate="strength %{x:g}: %{y:.3f}<extra></extra>",
    ))
    baselines = {"none": ("unsteered", "dash"), "icl": ("in-context", "dot")}
    for result in results:
        if result.condition in baselines:
            name, dash = baselines[result.condition]
            figure.add_hline(y=getattr(result, metric), line_dash=dash,
                             annotation_text=f"{name}: {getattr(result, metric):.3f}",
                             annotation_position="top left")
    figure.update_layout(
        title=dict(text=title),
        xaxis=dict(title=dict(text="strength")),
        yaxis=dict(title=dict(text=metric)),
        height=380,
    )
    return figure


def cosine_heatmap(matrix: list[list[float]], labels: list[str], *, title: str) -> go.Figure:
    """Draw a square matrix of cosine similarities on a diverging scale from -1 to 1."""
    heatmap = go.Heatmap(
        z=matrix,
        x=labels,
        y=labels,
        zmin=-1.0,
        zmax=1.0,
        colorscale="RdBu",
        text=[[f"{value:+.2f}" for value in row] for row in matrix],
        texttemplate="%{text}",
        hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
    )
    figure = go.Figure(heatmap)
    figure.update_layout(title=dict(text=title), yaxis=dict(autorange="reversed"),
                         height=max(300, 40 * len(labels) + 200))
    return figure
