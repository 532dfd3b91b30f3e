"""The figures' shared style: one colour per method or structure, the run palette, axis types.

Every figure colours a noise structure the same way (COLORS) and gives each run (by its id)
or group (by its label) a colour chosen from a hash of it (palette), so a structure, a run
or a group keeps its colour from page to page.
"""

from __future__ import annotations

import zlib

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


def home_color(key: str) -> int:
    """The index in RUN_PALETTE a key asks for: a hash of the key alone (crc32), so a run or a
    group asks for the same colour on every page whatever else is drawn."""
    return zlib.crc32(str(key).encode()) % len(RUN_PALETTE)


def palette(keys: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A colour per distinct key (in order of first appearance), stable across figures.

    Each key gets its home colour (home_color) unless a key that sorts before it in the same
    figure holds that colour already; it then takes the next free one. So up to
    len(RUN_PALETTE) keys always get distinct colours, and a key keeps its colour from page to
    page unless it shares a home with another key drawn beside it. Past len(RUN_PALETTE) keys
    the colours are handed out again in a new round.
    """
    distinct = list(dict.fromkeys(keys))
    taken: dict[str, str] = {}
    used: set[int] = set()
    for key in sorted(distinct, key=str):
        if len(used) == len(RUN_PALETTE):
            used = set()  # every colour is in use: start a new round
        i = home_color(key)
        while i in used:
            i = (i + 1) % len(RUN_PALETTE)
        used.add(i)
        taken[key] = RUN_PALETTE[i]
    return {k: taken[k] for k in distinct}


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
