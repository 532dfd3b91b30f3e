"""The figures' shared style: one colour per method or structure, the run palette, axis types.

Every figure colours a noise structure the same way (COLORS) and gives runs or groups
colours in order of first appearance (palette), so a structure or a run keeps its colour
from page to page.
"""

from __future__ import annotations

#: One colour per method or structure, shared by every figure.
COLORS: dict[str, str] = {
    "sgd-M": "#222222",
    "sgd": "#222222",
    "none": "#7f7f7f",
    "isotropic": "#1f77b4",
    "diag": "#ff7f0e",
    "full": "#2ca02c",
}

#: Colours given to runs or groups in order (structures keep COLORS where a figure colours
#: by structure).
RUN_PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
    "#637939",
    "#8c6d31",
    "#7b4173",
    "#3182bd",
)


def palette(labels: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A colour per distinct label, in order of first appearance (cycling the palette)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = RUN_PALETTE[len(out) % len(RUN_PALETTE)]
    return out


def rgba(hex_color: str, alpha: float) -> str:
    """A '#rrggbb' colour as a plotly 'rgba(r,g,b,alpha)' string (for translucent bands)."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def axis_type(log: bool) -> str:
    """The plotly axis type: "log" or "linear"."""
    return "log" if log else "linear"


def structure_color(noise: str, fallback: str) -> str:
    """The colour of a noise structure (`fallback` for one COLORS does not know)."""
    return COLORS.get(noise, fallback)
