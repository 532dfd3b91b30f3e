"""DataFrame → Plotly figure: pure functions, testable without a browser. Import from here
(``viz.live_figure``); the modules behind these names may move.

Behind this face: ``style`` (colours and palettes), ``runs`` (run curves, seed bands, the
Live panels), ``noise`` (noise statistics against generalisation), ``findings`` (the study's
arms) and ``theory`` (the quadratic and geometry pages)."""

from covnoise.viz.findings import arm_metric_figure, design_figure, design_svg  # noqa: F401
from covnoise.viz.noise import noise_pair_figure, noise_scatter_figure  # noqa: F401
from covnoise.viz.runs import (  # noqa: F401
    LIVE_PANELS,
    group_bands_figure,
    live_figure,
    live_key,
    run_lines_figure,
)
from covnoise.viz.style import COLORS, RUN_PALETTE, palette  # noqa: F401
from covnoise.viz.theory import (  # noqa: F401
    GEOMETRY_LABELS,
    QUADRATIC_LABELS,
    geometry_panel_figure,
    loss_curves_figure,
    stationary_figure,
)

__all__ = [
    "COLORS",
    "GEOMETRY_LABELS",
    "LIVE_PANELS",
    "QUADRATIC_LABELS",
    "RUN_PALETTE",
    "arm_metric_figure",
    "design_figure",
    "design_svg",
    "geometry_panel_figure",
    "group_bands_figure",
    "live_figure",
    "live_key",
    "loss_curves_figure",
    "noise_pair_figure",
    "noise_scatter_figure",
    "palette",
    "run_lines_figure",
    "stationary_figure",
]
