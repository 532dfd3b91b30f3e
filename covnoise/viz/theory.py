"""Figures of the theory pages: the convex quadratic's loss curves and stationary losses, and
the two-dimensional geometry of one-step updates.

They read the frames covnoise.theory builds (one row per method and step, per structure and
multiplier, per sample) and name each method as the pages do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covnoise.viz.style import COLORS, rgba
from covnoise.viz.thinning import scatter_trace

#: Display names of the quadratic's methods (keys of covnoise.theory.quadratic.METHODS).
QUADRATIC_LABELS: dict[str, str] = {
    "sgd-M": "SGD, batch M",
    "none": "LB",
    "isotropic": "LB + isotropic",
    "diag": "LB + diag",
    "full": "LB + full",
}

#: Display names of the geometry's clouds (keys of covnoise.theory.geometry.METHODS).
GEOMETRY_LABELS: dict[str, str] = {
    "sgd": "SGD, batch M",
    "isotropic": "LB + isotropic",
    "full": "LB + full Fisher",
    "diag": "LB + diagonal Fisher",
}


def loss_curves_figure(curves: pd.DataFrame, log_y: bool = True) -> go.Figure:
    """Expected loss per step: the exact curve (line) and the Monte-Carlo mean ± 2 s.e. (band).

    Reads columns method, step, exact, mc_mean, mc_se (one row per method and step). A method
    whose mc_mean is all NaN gets only its exact line. Traces per method: "<label> · exact",
    then an unnamed upper band edge and "<label> · MC ±2 s.e." (the filled lower edge).
    """
    fig = go.Figure()
    for method, df in curves.groupby("method", sort=False):
        label = QUADRATIC_LABELS.get(str(method), str(method))
        color = COLORS.get(str(method), "#9467bd")
        dash = "dash" if method == "sgd-M" else "solid"
        fig.add_trace(
            go.Scatter(
                x=df["step"],
                y=df["exact"],
                mode="lines",
                name=f"{label} · exact",
                legendgroup=str(method),
                line={"color": color, "dash": dash, "width": 2},
            )
        )
        if df["mc_mean"].notna().any():
            upper = df["mc_mean"] + 2.0 * df["mc_se"]
            lower = df["mc_mean"] - 2.0 * df["mc_se"]
            if log_y:  # a band edge at or below zero cannot be drawn on a log axis
                lower = lower.where(lower > 0, df["mc_mean"] / 2.0)
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=upper,
                    mode="lines",
                    line={"width": 0, "color": color},
                    legendgroup=str(method),
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{label} · MC upper",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=lower,
                    mode="lines",
                    line={"width": 0, "color": color},
                    fill="tonexty",
                    fillcolor=rgba(color, 0.25),
                    legendgroup=str(method),
                    name=f"{label} · MC ±2 s.e.",
                    hoverinfo="skip",
                )
            )
    fig.update_layout(
        xaxis_title="step k",
        yaxis_title="E[L_k]",
        yaxis_type="log" if log_y else "linear",
        legend={"groupclick": "togglegroup"},
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        height=420,
    )
    return fig


def stationary_figure(sweep: pd.DataFrame) -> go.Figure:
    """Stationary loss against ‖Σ‖_F (left) and against tr Σ (right), one line per structure.

    Reads columns structure, s, trace, fro, stationary_loss (rows for several multipliers s).
    At equal trace the structures separate on the right; on the left their order follows ‖Σ‖_F
    to second order in α (theory/ordering.py says when diag and isotropic swap).
    Traces: per structure "<label>" in the left panel and "<label> (tr Σ)" in the right one.
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=("E[L∞] vs ‖Σ‖_F", "E[L∞] vs tr Σ"),
        horizontal_spacing=0.06,
    )
    for structure, df in sweep.groupby("structure", sort=False):
        df = df.sort_values("s")
        label = QUADRATIC_LABELS.get(str(structure), str(structure))
        color = COLORS.get(str(structure), "#9467bd")
        hover = [f"s = {s:g}" for s in df["s"]]
        common = {"mode": "lines+markers", "line": {"color": color}, "text": hover}
        fig.add_trace(
            go.Scatter(
                x=df["fro"],
                y=df["stationary_loss"],
                name=label,
                legendgroup=str(structure),
                **common,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=df["trace"],
                y=df["stationary_loss"],
                name=f"{label} (tr Σ)",
                legendgroup=str(structure),
                showlegend=False,
                **common,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="‖Σ‖_F", row=1, col=1)
    fig.update_xaxes(title_text="tr Σ", row=1, col=2)
    fig.update_yaxes(title_text="stationary loss E[L∞]", row=1, col=1)
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=380)
    return fig


def geometry_panel_figure(
    method: str,
    samples: pd.DataFrame,
    ellipses: pd.DataFrame,
    points: pd.DataFrame,
    contours: pd.DataFrame,
) -> go.Figure:
    """One method's cloud of one-step updates over the loss contours, with its ellipse.

    Reads samples/ellipses (method, x, y), points (method, kind ∈ {start, mean}, x, y) and
    contours (x, y, loss) on a rectangular lattice. The axes span the lattice with equal
    scales, so shapes are not distorted. Traces: "loss", "updates", "target ellipse",
    "θ", "E[θ⁺]". Every sample is drawn; a cloud of more than WEBGL_MIN_POINTS samples is a
    WebGL trace (go.Scattergl), which the browser draws in a fraction of the time of an SVG
    marker per sample.
    """
    grid = contours.pivot(index="y", columns="x", values="loss")
    xs, ys = grid.columns.to_numpy(), grid.index.to_numpy()
    z = grid.to_numpy()
    lo, hi = np.quantile(z, [0.02, 0.98])
    n_levels = 16
    color = COLORS.get(method, "#9467bd")
    cloud = samples[samples["method"] == method]
    ell = ellipses[ellipses["method"] == method]
    pts = points[points["method"] == method].set_index("kind")
    fig = go.Figure()
    fig.add_trace(
        go.Contour(
            x=xs,
            y=ys,
            z=z,
            name="loss",
            showscale=False,
            autocontour=False,
            contours={
                "coloring": "lines",
                "start": lo,
                "end": hi,
                "size": max((hi - lo) / (n_levels - 1), 1e-12),
            },
            line={"width": 1},
            colorscale="Greys",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        scatter_trace(
            len(cloud),
            x=cloud["x"].to_numpy(),
            y=cloud["y"].to_numpy(),
            mode="markers",
            name="updates",
            marker={"size": 3, "color": color, "opacity": 0.35},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ell["x"], y=ell["y"], mode="lines", name="target ellipse", line={"color": color}
        )
    )
    for kind, name, symbol in (("start", "θ", "x"), ("mean", "E[θ⁺]", "circle-open")):
        fig.add_trace(
            go.Scatter(
                x=[pts.loc[kind, "x"]],
                y=[pts.loc[kind, "y"]],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 10, "color": "black"},
            )
        )
    fig.update_xaxes(range=[xs.min(), xs.max()], title_text="w₁", constrain="domain")
    fig.update_yaxes(range=[ys.min(), ys.max()], title_text="w₂", scaleanchor="x", scaleratio=1)
    fig.update_layout(
        title={"text": GEOMETRY_LABELS.get(method, method), "x": 0.5},
        showlegend=False,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=360,
    )
    return fig
