"""Names for what the app shows: metric and axis labels, config keys of a runs frame, group labels.

A runs frame (the store's layout) has one ``cfg_<field>`` column per RunConfig field. Runs
whose configs differ only in fields that do not make a different experiment (the seed, the
name, where it ran, how often it is measured) belong to one group; a group's label names the
fields that vary between groups, with short names for the common ones, and then the run's
tags: settings named only when they differ from the default ("fisher" for noise drawn from the
true Fisher, "drop-last" for epochs cut into full batches), to keep labels short. Labels live
here so every page and figure names a metric or a group the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from covnoise.config import LEGACY_VALUES, RunConfig, field_info

#: X axes a curve can be drawn against (column of the metrics table → label).
X_AXES: dict[str, str] = {
    "step": "steps",
    "epoch": "epochs",
    "examples_seen": "examples seen",
    "wall_time": "wall time (s)",
}

#: Display names of the metrics the training loop logs.
METRIC_LABELS: dict[str, str] = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "gen_gap": "test − train loss",
    "batch_loss": "batch loss",
    "sharpness": "λ_max(H)",
    "sharpness_residual": "Lanczos residual ‖Hv − λv‖",
    "sharpness_converged": "Lanczos converged (1 = yes)",
    "sharpness_hvps": "Lanczos Hessian-vector products",
    "noise_fro": "‖Σ‖_F",
    "noise_trace": "tr Σ",
    "noise_trace_hsigma": "Tr(HΣ)",
    "noise_trace_hsigma_se": "Tr(HΣ) standard error",
    "noise_trace_hsigma_draws": "Tr(HΣ) draws",
    "grad_norm": "‖∇L‖",
    "dist_init": "‖θ − θ₀‖",
    "lr": "learning rate",
    "stats_refresh_every": "noise statistics refreshed every (steps)",
}

#: Noise statistics a run can be summarised by (x of the noise-vs-generalisation scatter).
NOISE_STATISTICS: dict[str, str] = {
    "noise_fro": "‖Σ‖_F",
    "noise_trace": "tr Σ",
    "noise_trace_hsigma": "Tr(HΣ)",
    "batch_size": "batch size L",
}

#: Generalisation measures (y of the scatter), all taken at the run's last evaluation.
GENERALISATION: dict[str, str] = {
    "gen_gap": "test − train loss",
    "test_acc": "test accuracy",
    "train_loss": "final train loss",
}

#: Config fields that label a run but do not make it a different experiment.
NON_EXPERIMENT_FIELDS = ("seed", "name", "device", "data_dir")
#: Config fields that change what is measured, not the training trajectory; left out of
#: automatic labels.
MEASUREMENT_FIELDS = (
    "eval_every",
    "sharpness_every",
    "probe_size",
    "lanczos_iters",
    "noise_samples",
)
#: Short names of config fields in labels.
KEY_NAMES: dict[str, str] = {
    "batch_size": "L",
    "small_batch": "M",
    "noise_scale": "s",
    "lr": "η",
    "noise_source": "source",
    "drop_last": "drop-last",
    "val_fraction": "val",
}
#: Settings a label names only when they differ from the default, by a short tag
#: (field → {value: tag}), so labels stay short. The noise source applies only to runs with
#: injected noise.
TAGS: dict[str, dict[object, str]] = {
    "noise_source": {"fisher": "fisher"},
    "drop_last": {True: "drop-last"},
}


def metric_label(name: str) -> str:
    """Display name of a metric (the raw name when unknown)."""
    return METRIC_LABELS.get(name, name)


def key_label(key: str) -> str:
    """Readable name of a config field (its RunConfig label; the raw name when unknown)."""
    try:
        return field_info(key).label or key
    except KeyError:
        return key


def config_keys(runs: pd.DataFrame) -> list[str]:
    """Config field names present in a runs frame (its ``cfg_<field>`` columns)."""
    return [c[4:] for c in runs.columns if c.startswith("cfg_")]


def config_from_row(row: Mapping[str, object]) -> RunConfig:
    """The RunConfig stored in a runs-frame row (its ``config`` JSON), without validation."""
    data = {**LEGACY_VALUES, **json.loads(str(row["config"]))}
    known = set(RunConfig.__dataclass_fields__)
    return RunConfig(**{k: v for k, v in data.items() if k in known})


def hashable(value: object) -> object:
    """A config value usable as a group key (dicts and lists become canonical JSON, a missing
    value "None")."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return value


def varying_keys(
    runs: pd.DataFrame, exclude: Iterable[str] = NON_EXPERIMENT_FIELDS + MEASUREMENT_FIELDS
) -> list[str]:
    """Config fields that take more than one value across `runs` (minus `exclude`)."""
    skip = set(exclude)
    out = []
    for key in config_keys(runs):
        if key in skip:
            continue
        if runs[f"cfg_{key}"].map(hashable).nunique(dropna=False) > 1:
            out.append(key)
    return out


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def config_tags(cfg: Mapping[str, object]) -> list[str]:
    """The TAGS of one config (field → value, e.g. RunConfig.to_dict()): "fisher" for noise
    drawn from the Fisher source, "drop-last" for epochs cut into full batches."""
    out = []
    for field, tags in TAGS.items():
        if field == "noise_source" and cfg.get("noise") == "none":
            continue  # no noise is injected, so it has no source
        tag = tags.get(hashable(cfg.get(field)))
        if tag:
            out.append(tag)
    return out


def _cfg_rows(runs: pd.DataFrame, fields: Iterable[str]) -> list[dict[str, object]]:
    """Per run, its values of `fields` (those the frame has as cfg_ columns)."""
    cols = {f: runs[f"cfg_{f}"].tolist() for f in fields if f"cfg_{f}" in runs}
    return [{f: v[i] for f, v in cols.items()} for i in range(len(runs))]


def run_tags(runs: pd.DataFrame) -> pd.Series:
    """Per run (index run_id), its config_tags joined by " · " ("" for default settings)."""
    rows = _cfg_rows(runs, [*TAGS, "noise"])
    text = [" · ".join(config_tags(row)) for row in rows]
    return pd.Series(text, index=runs["run_id"].to_numpy(), name="tags", dtype=object)


def _key_part(key: str, value: object) -> str:
    return f"{KEY_NAMES.get(key, key)}={_format_value(hashable(value))}"


def group_labels(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """A label per run (index run_id) naming its values of `keys`, e.g. "noise=diag · η=0.5"
    (batch_size, small_batch, noise_scale and lr are shown as L, M, s and η), then its tags
    ("fisher", "drop-last"; see TAGS), so runs that differ in those are never one group.

    A tagged key is named by its tag alone (by key=value when the label would be empty). With
    no keys every run is in one group, "all runs".
    """
    if not keys:
        return pd.Series("all runs", index=runs["run_id"].to_numpy(), name="group")
    fields = [k for k in keys if k != SOURCE_KEY]
    values = _cfg_rows(runs, fields)
    sources = (
        runs[SOURCE_KEY].map(origin).tolist() if SOURCE_KEY in keys and SOURCE_KEY in runs else None
    )
    tags = run_tags(runs).tolist()
    labels = []
    for i, (row, tag) in enumerate(zip(values, tags, strict=True)):
        parts = [_key_part(k, row.get(k)) for k in fields if k not in TAGS]
        parts += [tag] if tag else []
        if not parts:
            parts = [_key_part(k, row.get(k)) for k in fields]
        parts += [str(sources[i])] if sources is not None else []
        labels.append(" · ".join(parts))
    return pd.Series(labels, index=runs["run_id"].to_numpy(), name="group", dtype=object)


#: The group-by key that splits runs by where they come from (cached, yours, a file).
SOURCE_KEY = "source"
#: The `source` of the runs in the app's own store (covnoise.ui.runsdata).
OWN_SOURCE = "this store"


def origin(source: object) -> str:
    """Where a run comes from, as a group: "yours" (the app's store), "upload: NAME" (a file
    the user added), "cached" (any file shipped in cached_runs/: one study's files pool)."""
    text = str(source)
    if text == OWN_SOURCE:
        return "yours"
    return text if text.startswith("upload: ") else "cached"


def group_keys(runs: pd.DataFrame) -> list[str]:
    """What Compare offers to group by: the experiment fields that vary across `runs` (seed
    excluded: seeds are what a group averages), then "source" when runs come from more than
    one place."""
    keys = [k for k in varying_keys(runs) if k != "seed"]
    if SOURCE_KEY in runs and runs[SOURCE_KEY].map(origin).nunique() > 1:
        keys.append(SOURCE_KEY)
    return keys


def group_key_label(key: str) -> str:
    """Readable name of a group-by key ("source" for the runs' origin)."""
    return "source (cached / yours / file)" if key == SOURCE_KEY else key_label(key)


def experiment_labels(runs: pd.DataFrame) -> pd.Series:
    """Seed-free group label per run: the fields that vary across `runs`, seed excluded."""
    return group_labels(runs, varying_keys(runs))
