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


def design_svg(designs: pd.DataFrame, title: str = "") -> str:
    """design_figure as a small static SVG (for FINDINGS.md, which cannot hold a Plotly
    chart): the same two panels, points and ± one seed std bars, coloured by structure.

    Reads covnoise.results.design_table; returns the SVG text (deterministic, so a check can
    compare it with the file on disk).
    """
    width, height, left, top, bottom, gap = 680, 320, 60, 40, 50, 30
    panel = (width - left - 20 - gap) / 2
    order = ["equal trace", "equal Frobenius"]
    offsets = {"isotropic": -0.15, "diag": 0.0, "full": 0.15}
    scales = sorted(designs["matched_scale"].unique()) if len(designs) else [0.0]
    sd = designs["test_acc_std"].fillna(0.0) if len(designs) else pd.Series([0.0])
    lo = float((designs["test_acc"] - sd).min()) if len(designs) else 0.0
    hi = float((designs["test_acc"] + sd).max()) if len(designs) else 1.0
    pad = max(0.005, 0.08 * (hi - lo))
    lo, hi = lo - pad, hi + pad

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * (height - top - bottom)

    def x(col: int, pos: float) -> float:
        x0 = left + col * (panel + gap)
        return x0 + (pos + 0.5) / len(scales) * panel

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13">{title}</text>',
    ]
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    for col, design in enumerate(order):
        x0 = left + col * (panel + gap)
        out.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{panel:.1f}" '
            f'height="{height - top - bottom}" fill="none" stroke="#888"/>'
        )
        out.append(
            f'<text x="{x0 + panel / 2:.1f}" y="{top - 6}" text-anchor="middle">{design}</text>'
        )
        for t in ticks:
            out.append(
                f'<line x1="{x0:.1f}" x2="{x0 + panel:.1f}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                'stroke="#eee"/>'
            )
        for i, s in enumerate(scales):
            out.append(
                f'<text x="{x(col, i):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                f"full s = {s:g}</text>"
            )
        part = designs[designs["design"] == design] if len(designs) else designs
        for r in part.itertuples():
            cx = x(col, scales.index(r.matched_scale) + offsets.get(r.noise, 0.0))
            color = COLORS.get(r.noise, "#333")
            e = 0.0 if pd.isna(r.test_acc_std) else float(r.test_acc_std)
            out.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(r.test_acc - e):.1f}" '
                f'y2="{y(r.test_acc + e):.1f}" stroke="{color}" stroke-width="2"/>'
            )
            out.append(
                f'<circle cx="{cx:.1f}" cy="{y(r.test_acc):.1f}" r="5" fill="{color}">'
                f"<title>{r.arm}: {r.test_acc:.4f}</title></circle>"
            )
    for t in ticks:
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.3f}</text>')
    out.append(
        f'<text x="14" y="{(top + height - bottom) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + height - bottom) / 2:.1f})">test accuracy</text>'
    )
    for i, noise in enumerate(("isotropic", "diag", "full")):
        lx = left + 10 + i * 110
        out.append(f'<circle cx="{lx}" cy="{height - 12}" r="5" fill="{COLORS[noise]}"/>')
        out.append(f'<text x="{lx + 10}" y="{height - 8}">{noise}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
