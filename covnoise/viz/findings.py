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
