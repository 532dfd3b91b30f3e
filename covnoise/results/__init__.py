"""DataFrame → DataFrame: curves, smoothing, seed aggregation, statistics with intervals,
the cost model, the studies as data and their findings. Import from here (``results.curves``);
the modules behind these names may move.

Behind this face: ``labels`` (readable names of metrics, axes and config keys),
``trajectories`` (curves, smoothing, seed bands), ``summaries`` (final and mean values per
run and per seed group), ``correlations`` (Pearson/Spearman with bootstrap intervals),
``cost`` (the cost model: FLOPs, evaluations, wall time), ``study`` (the studies as data and
their runner), ``tables``, ``claims``, ``markdown`` and ``findings`` (what the cached runs say
about the paper's claims), and ``demo`` (the app tests' fixture runs).

The names are imported on first use: a command that needs one module does not pay for
pandas, scipy and torch behind the others."""

from __future__ import annotations

import importlib
from typing import Any

#: Where each exported name lives; a name's module is imported on first use (PEP 562).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "claims": (
        "CLAIMS",
        "SPEED_TOLERANCE",
        "Difference",
        "Verdict",
        "difference",
        "verdicts",
    ),
    "correlations": (
        "Correlation",
        "coefficients",
        "correlation",
        "correlation_difference",
        "correlation_table",
    ),
    "cost": (
        "OVERHEAD_SECONDS",
        "QUEUED_START_SECONDS",
        "STRUCTURE_COST",
        "WORKER_START_SECONDS",
        "Cost",
        "evaluation_count",
        "forward_flops",
        "grid_seconds",
        "run_cost",
        "run_seconds",
        "throughput",
    ),
    "findings": (
        "StudyFindings",
        "all_findings",
        "study_findings",
    ),
    "labels": (
        "GENERALISATION",
        "KEY_NAMES",
        "MEASUREMENT_FIELDS",
        "METRIC_LABELS",
        "NOISE_STATISTICS",
        "NON_EXPERIMENT_FIELDS",
        "TAGS",
        "X_AXES",
        "config_from_row",
        "config_keys",
        "config_tags",
        "experiment_labels",
        "group_labels",
        "key_label",
        "metric_label",
        "run_tags",
        "varying_keys",
    ),
    "markdown": (
        "BEGIN",
        "END",
        "arm_markdown",
        "correlation_markdown",
        "format_pm",
        "render",
        "replace_block",
    ),
    "study": (
        "ALL_STUDIES",
        "GPU_STUDIES",
        "GRID_AXES",
        "NOISY",
        "SCALES",
        "SEEDS",
        "STUDIES",
        "Study",
        "Sweep",
        "run_parts",
        "run_study",
    ),
    "summaries": (
        "CHANCE_FACTOR",
        "final_values",
        "group_seeds",
        "mean_values",
        "SETTING_FIELDS",
        "run_flags",
        "run_points",
        "setting_fields",
        "setting_labels",
    ),
    "tables": (
        "FINAL_METRICS",
        "GAPS",
        "PICKED_ON",
        "STRUCTURE_ORDER",
        "arm_label",
        "arm_table",
        "best_arm",
        "claim4_table",
        "noise_settings",
        "pick_column",
        "run_table",
        "steps_to_target",
        "study_runs",
    ),
    "trajectories": (
        "aggregate_seeds",
        "curves",
        "ema",
        "smooth",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ALL_STUDIES",
    "BEGIN",
    "CHANCE_FACTOR",
    "CLAIMS",
    "Correlation",
    "Cost",
    "Difference",
    "END",
    "FINAL_METRICS",
    "GAPS",
    "GENERALISATION",
    "GPU_STUDIES",
    "GRID_AXES",
    "KEY_NAMES",
    "MEASUREMENT_FIELDS",
    "METRIC_LABELS",
    "NOISE_STATISTICS",
    "NOISY",
    "NON_EXPERIMENT_FIELDS",
    "OVERHEAD_SECONDS",
    "QUEUED_START_SECONDS",
    "PICKED_ON",
    "SCALES",
    "SEEDS",
    "SPEED_TOLERANCE",
    "STRUCTURE_COST",
    "STRUCTURE_ORDER",
    "SETTING_FIELDS",
    "STUDIES",
    "Study",
    "StudyFindings",
    "Sweep",
    "TAGS",
    "Verdict",
    "WORKER_START_SECONDS",
    "X_AXES",
    "aggregate_seeds",
    "all_findings",
    "arm_label",
    "arm_markdown",
    "arm_table",
    "best_arm",
    "claim4_table",
    "coefficients",
    "config_from_row",
    "config_keys",
    "config_tags",
    "correlation",
    "correlation_difference",
    "correlation_markdown",
    "correlation_table",
    "curves",
    "difference",
    "ema",
    "evaluation_count",
    "experiment_labels",
    "final_values",
    "format_pm",
    "forward_flops",
    "grid_seconds",
    "group_labels",
    "group_seeds",
    "key_label",
    "mean_values",
    "metric_label",
    "noise_settings",
    "pick_column",
    "render",
    "replace_block",
    "run_cost",
    "run_parts",
    "run_flags",
    "run_points",
    "setting_fields",
    "setting_labels",
    "run_seconds",
    "run_study",
    "run_table",
    "run_tags",
    "smooth",
    "steps_to_target",
    "study_findings",
    "study_runs",
    "throughput",
    "varying_keys",
    "verdicts",
]


def __getattr__(name: str) -> Any:
    """Import the module behind an exported name (or a submodule) on first use."""
    module = _WHERE.get(name)
    if module is None:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # also wins over a submodule of the same name (download)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
