"""Figures of noise against generalisation: seed-grouped runs as points with error bars,
coloured by noise structure, with a least-squares line or the correlation in each title.

They read seed-grouped points (covnoise.results.group_seeds) and a correlation table
(covnoise.results.correlation_table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covnoise.viz.style import RUN_PALETTE, axis_type, structure_color


def _by_structure(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """(structure, its rows, its colour) in order of appearance; without a cfg_noise column
    every point is in one group, "runs"."""
    noise = points["cfg_noise"] if "cfg_noise" in points else pd.Series("runs", index=points.index)
    return [
        (str(structure), df, structure_color(str(structure), RUN_PALETTE[i % len(RUN_PALETTE)]))
        for i, (structure, df) in enumerate(points.groupby(noise, sort=False))
    ]


def noise_scatter_figure(
    points: pd.DataFrame,
    x: str,
    y: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    fit: bool = True,
) -> go.Figure:
    """Seed-grouped runs as points with ±1 std error bars, coloured by noise structure.

    Reads points [group, n, <x>, <x>_std, <y>, <y>_std, cfg_noise] (covnoise.results.group_seeds).
    One trace per structure, named by it; with `fit`, a dashed least-squares line
    "least-squares fit" through the points (on the axis scale shown).
    """
    fig = go.Figure()
    for structure, df, color in _by_structure(points):
        fig.add_trace(
            go.Scatter(
                x=df[x],
                y=df[y],
                mode="markers",
                name=structure,
                marker={"color": color, "size": 10, "line": {"width": 1, "color": "white"}},
                error_x={
                    "type": "data",
                    "array": df.get(f"{x}_std"),
                    "visible": True,
                    "thickness": 1,
                },
                error_y={
                    "type": "data",
                    "array": df.get(f"{y}_std"),
                    "visible": True,
                    "thickness": 1,
                },
                text=[f"{g} (n={n})" for g, n in zip(df["group"], df["n"], strict=True)],
                hovertemplate="%{text}<br>x=%{x:.4g}<br>y=%{y:.4g}<extra></extra>",
            )
        )
    if fit:
        xs, ys = points[x].to_numpy(float), points[y].to_numpy(float)
        keep = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if log_x else True)
        xs, ys = xs[keep], ys[keep]
        if xs.size >= 2 and np.ptp(xs) > 0:
            u = np.log10(xs) if log_x else xs
            slope, intercept = np.polyfit(u, ys, 1)
            grid = np.linspace(u.min(), u.max(), 50)
            fig.add_trace(
                go.Scatter(
                    x=10**grid if log_x else grid,
                    y=slope * grid + intercept,
                    mode="lines",
                    name="least-squares fit",
                    line={"color": "#444444", "dash": "dash"},
                )
            )
    fig.update_layout(
        xaxis_title=x_label,
        yaxis_title=y_label,
        xaxis_type=axis_type(log_x),
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )
    return fig


def noise_pair_figure(
    points: pd.DataFrame,
    y: str,
    y_label: str,
    table: pd.DataFrame,
    stats: list[str] | tuple[str, ...] = ("noise_fro", "noise_trace"),
    labels: dict[str, str] | None = None,
) -> go.Figure:
    """‖Σ‖_F and tr Σ side by side against one measure, Pearson r and CI in each title.

    Reads points as noise_scatter_figure and `table` (covnoise.results.correlation_table) for the
    titles. Traces: per panel one per structure, named "<structure>" (legend shown once).
    """
    labels = labels or {}
    rows = table.set_index("statistic")
    titles = []
    for s in stats:
        name = labels.get(s, s)
        if s in rows.index and np.isfinite(rows.loc[s, "pearson"]):
            r = rows.loc[s]
            titles.append(
                f"{name}: r = {r['pearson']:.2f} [{r['pearson_lo']:.2f}, {r['pearson_hi']:.2f}]"
                f", R² = {r['r2']:.2f}"
            )
        else:
            titles.append(f"{name}: r undefined")
    fig = make_subplots(
        rows=1, cols=len(stats), subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.06
    )
    groups = _by_structure(points)
    for col, s in enumerate(stats, start=1):
        for structure, df, color in groups:
            fig.add_trace(
                go.Scatter(
                    x=df[s],
                    y=df[y],
                    mode="markers",
                    name=structure,
                    legendgroup=structure,
                    showlegend=(col == 1),
                    marker={"color": color, "size": 9},
                    error_x={
                        "type": "data",
                        "array": df.get(f"{s}_std"),
                        "visible": True,
                        "thickness": 1,
                    },
                    error_y={
                        "type": "data",
                        "array": df.get(f"{y}_std"),
                        "visible": True,
                        "thickness": 1,
                    },
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=labels.get(s, s), row=1, col=col)
    fig.update_yaxes(title_text=y_label, row=1, col=1)
    fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig
