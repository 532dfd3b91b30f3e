"""Plotly figures: pure functions from DataFrames to go.Figure (no Streamlit, testable headless).

Organised by section: shared style, the convex quadratic, the two-dimensional geometry.
Each figure function documents the columns it reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# --------------------------------------------------------------------------------------------
# Shared style
# --------------------------------------------------------------------------------------------

#: One colour per method or structure, shared by every figure.
COLORS: dict[str, str] = {
    "sgd-M": "#222222",
    "sgd": "#222222",
    "none": "#7f7f7f",
    "isotropic": "#1f77b4",
    "diag": "#ff7f0e",
    "full": "#2ca02c",
}

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


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# --------------------------------------------------------------------------------------------
# Convex quadratic
# --------------------------------------------------------------------------------------------


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
                    fillcolor=_rgba(color, 0.25),
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
    At equal trace the structures separate on the right; on the left their order follows ‖Σ‖_F.
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


# --------------------------------------------------------------------------------------------
# Two-dimensional geometry
# --------------------------------------------------------------------------------------------


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
    "θ", "E[θ⁺]".
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
        go.Scatter(
            x=cloud["x"],
            y=cloud["y"],
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


# --------------------------------------------------------------------------------------------
# Training runs (Live, Compare, Noise vs generalisation)
# --------------------------------------------------------------------------------------------


#: Colours given to runs or groups in order (structures keep COLORS where a figure colours
#: by structure).
RUN_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd",
)  # fmt: skip


def palette(labels: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A colour per distinct label, in order of first appearance (cycling the palette)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = RUN_PALETTE[len(out) % len(RUN_PALETTE)]
    return out


def _axis_type(log: bool) -> str:
    return "log" if log else "linear"


def run_lines_figure(
    curves: pd.DataFrame,
    labels: dict[str, str],
    x_label: str,
    y_label: str,
    log_y: bool = False,
) -> go.Figure:
    """One line per run: reads curves [run_id, x, value]; `labels` maps run_id → legend name.

    One trace per run, named by its label, in the order of `labels`.
    """
    fig = go.Figure()
    colors = palette(list(labels.values()))
    for rid, label in labels.items():
        df = curves[curves["run_id"] == rid]
        if df.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=df["x"].to_numpy(), y=df["value"].to_numpy(), mode="lines+markers", name=label,
                line={"color": colors[label], "width": 2}, marker={"size": 4},
            )
        )  # fmt: skip
    fig.update_layout(
        xaxis_title=x_label, yaxis_title=y_label, yaxis_type=_axis_type(log_y),
        margin={"l": 60, "r": 20, "t": 30, "b": 50}, legend={"font": {"size": 11}},
        hovermode="x unified",
    )  # fmt: skip
    return fig


def group_bands_figure(
    agg: pd.DataFrame,
    x_label: str,
    y_label: str,
    log_y: bool = False,
) -> go.Figure:
    """Mean line ± one sample std band per group: reads agg [group, x, mean, std, n].

    Traces per group: "<group> (n=k)" (the mean line), then, when n > 1, an unnamed upper
    band edge and "<group> ± std" (the filled lower edge). Under a log axis the band's lower
    edge is clipped to the smallest positive value.
    """
    fig = go.Figure()
    groups = list(dict.fromkeys(agg["group"]))
    colors = palette(groups)
    for group in groups:
        df = agg[agg["group"] == group]
        n = int(df["n"].iloc[0])
        color = colors[group]
        x = df["x"].to_numpy()
        fig.add_trace(
            go.Scatter(
                x=x, y=df["mean"].to_numpy(), mode="lines", name=f"{group} (n={n})",
                legendgroup=group, line={"color": color, "width": 2},
            )
        )  # fmt: skip
        if n > 1 and df["std"].notna().any():
            upper = df["mean"] + df["std"]
            lower = df["mean"] - df["std"]
            if log_y:
                positive = df["mean"][df["mean"] > 0]
                floor = float(positive.min()) / 10 if len(positive) else 1e-12
                lower = lower.clip(lower=floor)
            fig.add_trace(
                go.Scatter(
                    x=x, y=upper.to_numpy(), mode="lines", line={"width": 0}, showlegend=False,
                    legendgroup=group, hoverinfo="skip", name="",
                )
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=x, y=lower.to_numpy(), mode="lines", line={"width": 0}, fill="tonexty",
                    fillcolor=_rgba(color, 0.2), name=f"{group} ± std", legendgroup=group,
                    showlegend=False, hoverinfo="skip",
                )
            )  # fmt: skip
    fig.update_layout(
        xaxis_title=x_label, yaxis_title=y_label, yaxis_type=_axis_type(log_y),
        margin={"l": 60, "r": 20, "t": 30, "b": 50}, legend={"font": {"size": 11}},
    )  # fmt: skip
    return fig


#: Panels of the live figure: (title, [(metric, suffix, dash)]).
LIVE_PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("loss (solid train, dashed test)", (("train_loss", "train loss", "solid"),
                                         ("test_loss", "test loss", "dash"))),
    ("accuracy (solid train, dashed test)", (("train_acc", "train acc", "solid"),
                                             ("test_acc", "test acc", "dash"))),
    ("λ_max(H) and the 2/η stability line (dotted)", (("sharpness", "λ_max", "solid"),)),
    ("‖Σ‖_F", (("noise_fro", "‖Σ‖_F", "solid"),)),
    ("tr Σ", (("noise_trace", "tr Σ", "solid"),)),
    ("Tr(HΣ)", (("noise_trace_hsigma", "Tr(HΣ)", "solid"),)),
)  # fmt: skip


def live_figure(
    metrics: pd.DataFrame,
    labels: dict[str, str],
    x: str = "step",
    x_label: str = "steps",
    momentum: dict[str, float] | None = None,
    log_loss: bool = False,
    max_points: int | None = 400,
) -> go.Figure:
    """Six panels of running or finished runs: losses, accuracies, λ_max with its stability
    line, ‖Σ‖_F, tr Σ and Tr(HΣ).

    A trace with more than `max_points` points is thinned to that many, evenly spaced and
    keeping the first and last (a live view redraws every few seconds).

    Reads the long metrics [run_id, <x>, name, value]; `labels` maps run_id → name (and sets
    the order). Traces are named "<label> · <metric>"; the stability line of run r is
    "<label> · 2(1+β)/η", 2(1+β)/η from the logged learning rate η and the momentum β (the
    largest curvature gradient descent with heavy-ball momentum is stable on).
    """
    fig = make_subplots(
        rows=2, cols=3, subplot_titles=[p[0] for p in LIVE_PANELS],
        horizontal_spacing=0.07, vertical_spacing=0.14,
    )  # fmt: skip
    colors = palette(list(labels.values()))
    momentum = momentum or {}
    wanted = {name for _, series in LIVE_PANELS for name, _, _ in series} | {"lr"}
    sub = metrics[metrics["name"].isin(wanted) & metrics["run_id"].isin(list(labels))]
    groups = dict(tuple(sub.groupby(["run_id", "name"], sort=False)))

    def series_of(rid: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        g = groups.get((rid, name))
        if g is None or g.empty:
            return None
        g = _thin(g.sort_values(x, kind="stable"), max_points)
        return g[x].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)

    traces, rows, cols = [], [], []
    for rid, label in labels.items():
        color = colors[label]
        for i, (_, series) in enumerate(LIVE_PANELS):
            row, col = divmod(i, 3)
            for name, suffix, dash in series:
                xy = series_of(rid, name)
                if xy is None:
                    continue
                traces.append(go.Scatter(
                    x=xy[0], y=xy[1], mode="lines+markers", name=f"{label} · {suffix}",
                    legendgroup=rid, showlegend=(i == 0 and dash == "solid"),
                    line={"color": color, "dash": dash, "width": 2}, marker={"size": 4},
                ))  # fmt: skip
                rows.append(row + 1)
                cols.append(col + 1)
        lr = series_of(rid, "lr")
        if lr is not None and (rid, "sharpness") in groups:
            keep = lr[1] > 0
            beta = float(momentum.get(rid, 0.0))
            traces.append(go.Scatter(
                x=lr[0][keep], y=2.0 * (1.0 + beta) / lr[1][keep], mode="lines",
                name=f"{label} · 2(1+β)/η", legendgroup=rid, showlegend=False,
                line={"color": color, "dash": "dot", "width": 1.5},
            ))  # fmt: skip
            rows.append(1)
            cols.append(3)
    if traces:
        fig.add_traces(traces, rows=rows, cols=cols)
    fig.update_xaxes(title_text=x_label, row=2)
    if log_loss:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(
        height=620, margin={"l": 50, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.15, "font": {"size": 11}},
    )  # fmt: skip
    return fig


def _thin(df: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    """At most `max_points` rows, evenly spaced, first and last kept."""
    if max_points is None or len(df) <= max_points:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, max(2, max_points)).round().astype(int))
    return df.iloc[idx]


def _stat_color(noise: str, fallback: str) -> str:
    return COLORS.get(noise, fallback)


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

    Reads points [group, n, <x>, <x>_std, <y>, <y>_std, cfg_noise] (analysis.group_seeds).
    One trace per structure, named by it; with `fit`, a dashed least-squares line
    "least-squares fit" through the points (on the axis scale shown).
    """
    fig = go.Figure()
    noise = points["cfg_noise"] if "cfg_noise" in points else pd.Series("runs", index=points.index)
    for i, (structure, df) in enumerate(points.groupby(noise, sort=False)):
        color = _stat_color(str(structure), RUN_PALETTE[i % len(RUN_PALETTE)])
        fig.add_trace(
            go.Scatter(
                x=df[x], y=df[y], mode="markers", name=str(structure),
                marker={"color": color, "size": 10, "line": {"width": 1, "color": "white"}},
                error_x={"type": "data", "array": df.get(f"{x}_std"), "visible": True,
                         "thickness": 1},
                error_y={"type": "data", "array": df.get(f"{y}_std"), "visible": True,
                         "thickness": 1},
                text=[f"{g} (n={n})" for g, n in zip(df["group"], df["n"], strict=True)],
                hovertemplate="%{text}<br>x=%{x:.4g}<br>y=%{y:.4g}<extra></extra>",
            )
        )  # fmt: skip
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
                    x=10**grid if log_x else grid, y=slope * grid + intercept, mode="lines",
                    name="least-squares fit", line={"color": "#444444", "dash": "dash"},
                )
            )  # fmt: skip
    fig.update_layout(
        xaxis_title=x_label, yaxis_title=y_label, xaxis_type=_axis_type(log_x),
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
    )  # fmt: skip
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

    Reads points as noise_scatter_figure and `table` (analysis.correlation_table) for the
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
    fig = make_subplots(rows=1, cols=len(stats), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.06)  # fmt: skip
    noise = points["cfg_noise"] if "cfg_noise" in points else pd.Series("runs", index=points.index)
    for col, s in enumerate(stats, start=1):
        for i, (structure, df) in enumerate(points.groupby(noise, sort=False)):
            color = _stat_color(str(structure), RUN_PALETTE[i % len(RUN_PALETTE)])
            fig.add_trace(
                go.Scatter(
                    x=df[s], y=df[y], mode="markers", name=str(structure),
                    legendgroup=str(structure), showlegend=(col == 1),
                    marker={"color": color, "size": 9},
                    error_x={"type": "data", "array": df.get(f"{s}_std"), "visible": True,
                             "thickness": 1},
                    error_y={"type": "data", "array": df.get(f"{y}_std"), "visible": True,
                             "thickness": 1},
                ),
                row=1, col=col,
            )  # fmt: skip
        fig.update_xaxes(title_text=labels.get(s, s), row=1, col=col)
    fig.update_yaxes(title_text=y_label, row=1, col=1)
    fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


# --------------------------------------------------------------------------------------------
# Findings of the study (covnoise.results.findings)
# --------------------------------------------------------------------------------------------


def _arm_color(noise: str, batch_size: int, small_batch: int) -> str:
    return COLORS["sgd-M"] if noise == "none" and batch_size <= small_batch else COLORS[noise]


def arm_metric_figure(arms: pd.DataFrame, column: str, label: str, small_batch: int,
                      reference: str | None = None, missing: str | None = None) -> go.Figure:
    """One horizontal bar per arm: mean of `column` with ± one seed std as error bars.

    Reads arms (covnoise.results.findings.arm_table): arm, noise, batch_size, <column>,
    <column>_std. Bars are coloured by structure (SB in black); `reference` names an arm whose
    mean is drawn as a dashed vertical line; arms without a value are labelled `missing`.
    """
    df = arms.iloc[::-1]
    colors = [_arm_color(n, b, small_batch) for n, b in zip(df["noise"], df["batch_size"],
                                                            strict=True)]  # fmt: skip
    fig = go.Figure(go.Bar(
        x=df[column], y=df["arm"], orientation="h", marker={"color": colors},
        error_x={"type": "data", "array": df.get(f"{column}_std"), "visible": True},
        hovertemplate="%{y}: %{x:.4g}<extra></extra>",
    ))  # fmt: skip
    empty = df[df[column].isna()]
    if missing and len(empty):
        fig.add_trace(go.Scatter(x=[0] * len(empty), y=empty["arm"], mode="text",
                                 text=[missing] * len(empty), textposition="middle right",
                                 hoverinfo="skip"))  # fmt: skip
    if reference is not None and reference in set(arms["arm"]):
        value = float(arms.set_index("arm").loc[reference, column])
        fig.add_vline(x=value, line_dash="dash", line_color=COLORS["sgd-M"],
                      annotation_text=reference, annotation_position="top")  # fmt: skip
    finite = df[column].dropna()
    if column.endswith("acc") and len(finite):
        spread = df[f"{column}_std"].fillna(0)
        low = float((df[column] - spread).min())
        high = float((df[column] + spread).max())
        pad = max(0.01, 0.1 * (high - low))
        fig.update_xaxes(range=[low - pad, high + pad])
    fig.update_layout(height=max(300, 22 * len(df) + 80), xaxis_title=label,
                      margin={"l": 140, "r": 20, "t": 30, "b": 50}, showlegend=False)  # fmt: skip
    return fig
