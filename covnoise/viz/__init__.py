"""DataFrame → Plotly figure: pure functions, testable without a browser. Import from here
(``viz.live_figure``); the modules behind these names may move."""

from covnoise.viz.plots import (  # noqa: F401
    COLORS,
    GEOMETRY_LABELS,
    LIVE_PANELS,
    QUADRATIC_LABELS,
    RUN_PALETTE,
    arm_metric_figure,
    geometry_panel_figure,
    group_bands_figure,
    live_figure,
    loss_curves_figure,
    noise_pair_figure,
    noise_scatter_figure,
    palette,
    run_lines_figure,
    stationary_figure,
)

__all__ = [
    "COLORS",
    "GEOMETRY_LABELS",
    "LIVE_PANELS",
    "QUADRATIC_LABELS",
    "RUN_PALETTE",
    "arm_metric_figure",
    "geometry_panel_figure",
    "group_bands_figure",
    "live_figure",
    "loss_curves_figure",
    "noise_pair_figure",
    "noise_scatter_figure",
    "palette",
    "run_lines_figure",
    "stationary_figure",
]
