"""Figures of training runs: one line per run, mean ± std bands per seed group, and the live
six-panel view of running or finished runs.

They read the frames covnoise.results makes from the store (curves [run_id, x, value],
seed aggregates [group, x, mean, std, n], long metrics) and colour runs or groups with the
shared palette.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covnoise.viz.style import axis_type, palette, rgba
from covnoise.viz.thinning import MAX_LINE_POINTS, extreme_indices


def run_lines_figure(
    curves: pd.DataFrame,
    labels: dict[str, str],
    x_label: str,
    y_label: str,
    log_y: bool = False,
    max_points: int | None = MAX_LINE_POINTS,
) -> go.Figure:
    """One line per run: reads curves [run_id, x, value]; `labels` maps run_id → legend name.

    One trace per run with a value, named by its label, in the order of `labels`, with a
    marker at each evaluation. A run with more than `max_points` evaluations is drawn from at
    most that many (viz.thinning.extreme_indices: the first and last, and the lowest and
    highest of each short stretch, so the line's envelope, spikes and gaps look the same at
    any screen width) as a line without markers, since its markers would no longer be its
    evaluations; None draws every point.
    """
    fig = go.Figure()
    colors = palette(list(labels))  # by run id: a run keeps its colour on every page
    for rid, label in labels.items():
        df = curves[curves["run_id"] == rid]
        if not df["value"].notna().any():
            continue  # nothing logged (validation of a run without a split)
        x, y = df["x"].to_numpy(), df["value"].to_numpy()
        keep = extreme_indices([y], max_points)
        thinned = len(keep) < len(y)
        fig.add_trace(
            go.Scatter(
                x=x[keep],
                y=y[keep],
                mode="lines" if thinned else "lines+markers",
                name=label,
                line={"color": colors[rid], "width": 2},
                marker={"size": 4},
            )
        )
    fig.update_layout(
        xaxis_title=x_label,
        yaxis_title=y_label,
        yaxis_type=axis_type(log_y),
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"font": {"size": 11}},
        hovermode="x unified",
    )
    return fig


def group_bands_figure(
    agg: pd.DataFrame,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    max_points: int | None = MAX_LINE_POINTS,
) -> go.Figure:
    """Mean line ± one sample std band per group: reads agg [group, x, mean, std, n].

    Traces per group: "<group> (n=k)" (the mean line), then, when n > 1, an unnamed upper
    band edge and "<group> ± std" (the filled lower edge). Under a log axis the band's lower
    edge is clipped to the smallest positive value. A group with more than `max_points` x
    values is drawn at most that many, the same ones for its three lines (the first and last,
    and in each short stretch those of the lowest and highest mean, band top and band bottom:
    viz.thinning.extreme_indices), so the lines and the band look the same; None: every x.
    """
    fig = go.Figure()
    groups = list(dict.fromkeys(agg["group"]))
    colors = palette(groups)
    for group in groups:
        df = agg[agg["group"] == group]
        n = int(df["n"].iloc[0])
        color = colors[group]
        band = n > 1 and df["std"].notna().any()
        upper, lower = df["mean"] + df["std"], df["mean"] - df["std"]
        if band and log_y:
            positive = df["mean"][df["mean"] > 0]
            floor = float(positive.min()) / 10 if len(positive) else 1e-12
            lower = lower.clip(lower=floor)
        mean, upper, lower = (c.to_numpy(dtype=float) for c in (df["mean"], upper, lower))
        keep = extreme_indices([mean, upper, lower] if band else [mean], max_points)
        x = df["x"].to_numpy()[keep]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean[keep],
                mode="lines",
                name=f"{group} (n={n})",
                legendgroup=group,
                line={"color": color, "width": 2},
            )
        )
        if band:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=upper[keep],
                    mode="lines",
                    line={"width": 0},
                    showlegend=False,
                    legendgroup=group,
                    hoverinfo="skip",
                    name="",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=lower[keep],
                    mode="lines",
                    line={"width": 0},
                    fill="tonexty",
                    fillcolor=rgba(color, 0.2),
                    name=f"{group} ± std",
                    legendgroup=group,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    fig.update_layout(
        xaxis_title=x_label,
        yaxis_title=y_label,
        yaxis_type=axis_type(log_y),
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"font": {"size": 11}},
    )
    return fig


#: Panels of the live figure: (title, [(metric, suffix, dash)]). Validation series (dotted)
#: are drawn only for runs that logged them, and the titles name them only then.
LIVE_PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "loss",
        (
            ("train_loss", "train loss", "solid"),
            ("test_loss", "test loss", "dash"),
            ("val_loss", "val loss", "dot"),
        ),
    ),
    (
        "accuracy",
        (
            ("train_acc", "train acc", "solid"),
            ("test_acc", "test acc", "dash"),
            ("val_acc", "val acc", "dot"),
        ),
    ),
    ("λ_max(H)", (("sharpness", "λ_max", "solid"),)),
    ("‖Σ‖_F", (("noise_fro", "‖Σ‖_F", "solid"),)),
    ("tr Σ", (("noise_trace", "tr Σ", "solid"),)),
    ("Tr(HΣ)", (("noise_trace_hsigma", "Tr(HΣ)", "solid"),)),
)
#: Metrics of the validation split (NaN in runs without one: such series are not drawn).
VALIDATION_METRICS = ("val_loss", "val_acc")


def _titles(validation: bool) -> list[str]:
    """Panel titles: short, so three panels side by side stay readable at a projector's
    1024 px (the line styles are said once, by live_key, under the figure)."""
    return [p[0] for p in LIVE_PANELS]


def live_key(validation: bool) -> str:
    """What the line styles of live_figure mean (shown under it; the validation series only
    when some run logged it)."""
    lines = "solid train, dashed test" + (", dotted validation" if validation else "")
    return (
        f"Loss and accuracy: {lines}. λ_max(H): the dotted line is the stability limit "
        "2(1+β)/η; open circles mark points where Lanczos did not converge."
    )


def live_figure(
    metrics: pd.DataFrame,
    labels: dict[str, str],
    x: str = "step",
    x_label: str = "steps",
    momentum: dict[str, float] | None = None,
    log_loss: bool = False,
    max_points: int | None = 400,
) -> go.Figure:
    """Six panels of running or finished runs: losses and accuracies (train, test, and
    validation for runs that logged it), λ_max with its stability line (open circles mark the
    points where Lanczos did not converge), ‖Σ‖_F, tr Σ and Tr(HΣ).
    A series without a finite value (validation of a run without a split) is not drawn.

    A trace with more than `max_points` points is drawn from at most that many real ones (a
    live view redraws every few seconds): the first and last, and the lowest and highest of
    each short stretch (viz.thinning.extreme_indices), so spikes, dips and gaps still show.

    Reads the long metrics [run_id, <x>, name, value]; `labels` maps run_id → name (and sets
    the order). Traces are named "<label> · <metric>"; the stability line of run r is
    "<label> · 2(1+β)/η", 2(1+β)/η from the logged learning rate η and the momentum β (the
    largest curvature gradient descent with heavy-ball momentum is stable on).
    """
    colors = palette(list(labels))  # by run id, as on Compare
    momentum = momentum or {}
    wanted = {name for _, series in LIVE_PANELS for name, _, _ in series}
    wanted |= {"lr", "sharpness_converged"}
    sub = metrics[metrics["name"].isin(wanted) & metrics["run_id"].isin(list(labels))]
    validation = sub["name"].isin(VALIDATION_METRICS)
    sub = sub[~validation | np.isfinite(sub["value"].to_numpy(dtype=float))]
    groups = dict(tuple(sub.groupby(["run_id", "name"], sort=False)))
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=_titles(bool(sub["name"].isin(VALIDATION_METRICS).any())),
        horizontal_spacing=0.07,
        vertical_spacing=0.14,
    )

    def series_of(rid: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        g = groups.get((rid, name))
        if g is None or g.empty:
            return None
        g = _thin(g.sort_values(x, kind="stable"), max_points)
        return g[x].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)

    placed: list[tuple[go.Scatter, int, int]] = []
    for rid, label in labels.items():
        color = colors[rid]
        placed += _panel_traces(series_of, rid, label, color)
        lr = series_of(rid, "lr") if (rid, "sharpness") in groups else None
        beta = float(momentum.get(rid, 0.0))
        for extra in (
            _stability_trace(lr, beta, rid, label, color),
            _unconverged_trace(groups, rid, x, label, color),
        ):
            if extra is not None:
                placed.append((extra, 1, 3))
    traces = [p[0] for p in placed]
    rows = [p[1] for p in placed]
    cols = [p[2] for p in placed]
    if traces:
        fig.add_traces(traces, rows=rows, cols=cols)
    fig.update_xaxes(title_text=x_label, row=2)
    if log_loss:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(
        height=620,
        margin={"l": 50, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.15, "font": {"size": 11}},
        # zoom, pan and hidden traces survive the refreshes while the axes stay the same
        uirevision=f"live:{x}:{log_loss}",
    )
    return fig


def _panel_traces(
    series_of: Callable[[str, str], tuple[np.ndarray, np.ndarray] | None],
    rid: str,
    label: str,
    color: str,
) -> list[tuple[go.Scatter, int, int]]:
    """One run's line in every panel it has data for, with its (row, col)."""
    out = []
    for i, (_, series) in enumerate(LIVE_PANELS):
        row, col = divmod(i, 3)
        for name, suffix, dash in series:
            xy = series_of(rid, name)
            if xy is None:
                continue
            trace = go.Scatter(
                x=xy[0],
                y=xy[1],
                mode="lines+markers",
                name=f"{label} · {suffix}",
                legendgroup=rid,
                showlegend=(i == 0 and dash == "solid"),
                line={"color": color, "dash": dash, "width": 2},
                marker={"size": 4},
            )
            out.append((trace, row + 1, col + 1))
    return out


def _stability_trace(
    lr: tuple[np.ndarray, np.ndarray] | None, beta: float, rid: str, label: str, color: str
) -> go.Scatter | None:
    """The stability line 2(1+β)/η of a run from its logged learning rate (None without)."""
    if lr is None:
        return None
    keep = lr[1] > 0
    return go.Scatter(
        x=lr[0][keep],
        y=2.0 * (1.0 + beta) / lr[1][keep],
        mode="lines",
        name=f"{label} · 2(1+β)/η",
        legendgroup=rid,
        showlegend=False,
        line={"color": color, "dash": "dot", "width": 1.5},
    )


def _unconverged_trace(groups: dict, rid: str, x: str, label: str, color: str) -> go.Scatter | None:
    """Open markers on the λ_max values whose Lanczos run stopped on its iteration budget
    rather than its tolerance (their residual bounds the distance to some eigenvalue, not
    necessarily to λ_max); None when every point converged or the flag was not logged."""
    sharp, flag = groups.get((rid, "sharpness")), groups.get((rid, "sharpness_converged"))
    if sharp is None or flag is None:
        return None
    both = sharp[[x, "value"]].merge(flag[[x, "value"]], on=x, suffixes=("", "_ok"))
    missed = both[both["value_ok"] == 0]
    if missed.empty:
        return None
    return go.Scatter(
        x=missed[x].to_numpy(dtype=float),
        y=missed["value"].to_numpy(dtype=float),
        mode="markers",
        name=f"{label} · λ_max not converged",
        legendgroup=rid,
        showlegend=False,
        marker={"color": color, "symbol": "circle-open", "size": 11, "line": {"width": 2}},
    )


def _thin(df: pd.DataFrame, max_points: int | None) -> pd.DataFrame:
    """At most `max_points` rows: the first, the last and each stretch's extremes of value."""
    return df.iloc[extreme_indices([df["value"].to_numpy(dtype=float)], max_points)]
