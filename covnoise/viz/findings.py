"""Figures of a study's findings: one bar per arm with its seed spread, coloured by structure.

They read the arm table of covnoise.results (arm_table).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from covnoise.viz.style import COLORS


def _arm_color(noise: str, batch_size: int, small_batch: int) -> str:
    return COLORS["sgd-M"] if noise == "none" and batch_size <= small_batch else COLORS[noise]


def arm_metric_figure(
    arms: pd.DataFrame,
    column: str,
    label: str,
    small_batch: int,
    reference: str | None = None,
    missing: str | None = None,
) -> go.Figure:
    """One horizontal bar per arm: mean of `column` with ± one seed std as error bars.

    Reads arms (covnoise.results.arm_table): arm, noise, batch_size, <column>,
    <column>_std. Bars are coloured by structure (SB in black); `reference` names an arm whose
    mean is drawn as a dashed vertical line; arms without a value are labelled `missing`.
    """
    df = arms.iloc[::-1]
    colors = [
        _arm_color(n, b, small_batch) for n, b in zip(df["noise"], df["batch_size"], strict=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=df[column],
            y=df["arm"],
            orientation="h",
            marker={"color": colors},
            error_x={"type": "data", "array": df.get(f"{column}_std"), "visible": True},
            hovertemplate="%{y}: %{x:.4g}<extra></extra>",
        )
    )
    empty = df[df[column].isna()]
    if missing and len(empty):
        fig.add_trace(
            go.Scatter(
                x=[0] * len(empty),
                y=empty["arm"],
                mode="text",
                text=[missing] * len(empty),
                textposition="middle right",
                hoverinfo="skip",
            )
        )
    if reference is not None and reference in set(arms["arm"]):
        value = float(arms.set_index("arm").loc[reference, column])
        fig.add_vline(
            x=value,
            line_dash="dash",
            line_color=COLORS["sgd-M"],
            annotation_text=reference,
            annotation_position="top",
        )
    finite = df[column].dropna()
    if column.endswith("acc") and len(finite):
        spread = df[f"{column}_std"].fillna(0)
        low = float((df[column] - spread).min())
        high = float((df[column] + spread).max())
        pad = max(0.01, 0.1 * (high - low))
        fig.update_xaxes(range=[low - pad, high + pad])
    fig.update_layout(
        height=max(300, 22 * len(df) + 80),
        xaxis_title=label,
        margin={"l": 140, "r": 20, "t": 30, "b": 50},
        showlegend=False,
    )
    return fig


def design_figure(designs: pd.DataFrame) -> go.Figure:
    """Claim 4's test at a glance: one panel per design (equal trace, equal Frobenius), in each
    the three arms' mean test accuracy (± one seed std) at each matched multiplier, coloured
    by structure. If ‖Σ‖_F characterises generalisation, the right panel's points bunch
    together while the left panel's spread; if tr Σ does, the reverse.

    Reads covnoise.results.design_table: matched_scale, design, arm, noise, test_acc,
    test_acc_std.
    """
    from plotly.subplots import make_subplots

    order = ["equal trace", "equal Frobenius"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=order)
    offsets = {"isotropic": -0.12, "diag": 0.0, "full": 0.12}
    scales = sorted(designs["matched_scale"].unique()) if len(designs) else []
    for col, design in enumerate(order, start=1):
        part = designs[designs["design"] == design]
        for noise, g in part.groupby("noise", sort=False):
            x = [scales.index(s) + offsets.get(noise, 0.0) for s in g["matched_scale"]]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=g["test_acc"],
                    mode="markers",
                    name=noise,
                    legendgroup=noise,
                    showlegend=col == 1,
                    marker={"color": COLORS[noise], "size": 11},
                    error_y={"type": "data", "array": g["test_acc_std"], "visible": True},
                    text=g["arm"],
                    hovertemplate="%{text}: %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(
            tickvals=list(range(len(scales))),
            ticktext=[f"full noise's s = {s:g}" for s in scales],
            range=[-0.5, len(scales) - 0.5],
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="final test accuracy", row=1, col=1)
    fig.update_layout(height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50})
    return fig
