"""The Train form's model: its URL parameters, the labels people see, and the turning of its
values into validated RunConfigs, with errors that name the widget at fault.

The form launches a grid (noise structures × multipliers × seeds at the large batch L) and,
optionally, the plain small-batch baseline. Everything is validated here, against the data
set's size too, before anything is queued, so the page can put each message next to its widget.
"""

from __future__ import annotations

import math
from typing import Any

from covnoise.config import NOISES, ConfigError, RunConfig, field_info
from covnoise.core.schedule import epoch_steps
from covnoise.data import DATASETS as DATASET_SPECS
from covnoise.data import missing_files, train_size
from covnoise.data.validation import validation_size
from covnoise.ui.urlstate import (
    BoolParam,
    ChoiceParam,
    FloatParam,
    IntParam,
    ListParam,
    Param,
    TextParam,
)


def _choice(name: str, default: str) -> ChoiceParam:
    return ChoiceParam(name, default, field_info(name).choices or ())


def _int(name: str, default: int) -> IntParam:
    info = field_info(name)
    return IntParam(
        name,
        default,
        None if info.low is None else int(info.low),
        None if info.high is None else int(info.high),
    )


def _float(name: str, default: float, lo: float | None = None) -> FloatParam:
    """`lo` is the form's smallest value where the field only asks for > low."""
    info = field_info(name)
    return FloatParam(name, default, info.low if lo is None else lo, info.high)


#: The form's parameters: defaults are the form's own; choices and ranges come from RunConfig's
#: field metadata (covnoise.config), except the form-only ones (noises, multipliers, seeds).
TRAIN_PARAMS: list[Param] = [
    _choice("dataset", "digits"),
    _float("val_fraction", 0.1),
    _choice("model", "mlp"),
    _int("width", 64),
    _int("depth", 2),
    _int("batch_size", 1024),
    _int("small_batch", 32),
    BoolParam("drop_last", False),
    ListParam("noises", ["none", "full"], NOISES),
    _choice("noise_source", "batch"),
    TextParam("noise_scales", "1"),
    BoolParam("baseline", True),
    _float("lr", 0.5, lo=1e-6),
    _choice("lr_scaling", "none"),
    _float("momentum", 0.0),
    _choice("schedule", "constant"),
    _float("warmup_epochs", 0.0),
    _float("step_every_epochs", 10.0),
    _float("epochs", 40.0, lo=0.01),
    IntParam("seeds", 1, 1, 20),
    _int("eval_every", 4),
    _int("sharpness_every", 1),
    _int("probe_size", 256),
]
_PARAMS = {p.name: p for p in TRAIN_PARAMS}
_FIELDS = frozenset(RunConfig.__dataclass_fields__)

#: Train-form parameter that shows the error of each RunConfig field.
FIELD_TO_PARAM: dict[str, str] = {
    "noise": "noises",
    "noise_scale": "noise_scales",
    "seed": "seeds",
    "steps": "epochs",
    "step_gamma": "step_every_epochs",
}

#: Train-form parameter → the label people see (config fields: their metadata's label).
PARAM_LABELS: dict[str, str] = {
    **{p.name: field_info(p.name).label for p in TRAIN_PARAMS if p.name in _FIELDS},
    "noises": "noise structures",
    "noise_scales": "multipliers s",
    "baseline": "baseline",
    "seeds": "seeds",
}


def choice_field(name: str, help: str | None = None) -> dict[str, Any]:
    """label, options and help of a choice parameter, for st.selectbox."""
    info = field_info(name)
    return {"label": info.label, "options": info.choices, "help": help or info.help}


def checkbox_field(name: str, help: str | None = None) -> dict[str, Any]:
    """label and help of a true/false form parameter, for st.checkbox."""
    info = field_info(name) if name in _FIELDS else None
    return {
        "label": PARAM_LABELS[name],
        "help": help or (info.help if info is not None else None),
    }


def allowed_range(name: str) -> str:
    """The allowed values of a numeric form parameter, in words ("1 to 20", "at least 0")."""
    param = _PARAMS[name]
    lo, hi = param.lo, param.hi
    if lo is not None and hi is not None:
        return f"{lo:g} to {hi:g}"
    if lo is not None:
        return f"at least {lo:g}"
    return f"at most {hi:g}" if hi is not None else "any number"


def number_field(name: str, help: str | None = None) -> dict[str, Any]:
    """label and help (with the allowed range) of a numeric form parameter, for
    st.number_input. No min_value/max_value: the browser would then keep the old value
    when a typed one is outside them, silently; check_ranges refuses it instead, by name."""
    info = field_info(name) if name in _FIELDS else None
    text = help or (info.help if info is not None else None) or ""
    return {
        "label": PARAM_LABELS[name],
        "help": f"{text} Allowed: {allowed_range(name)}.".strip(),
    }


def check_ranges(values: dict[str, Any]) -> None:
    """ConfigError naming the first numeric form parameter outside its allowed range (what a
    user typed, not the browser's clamped value), with the range."""
    for param in TRAIN_PARAMS:
        if not isinstance(param, (IntParam, FloatParam)) or param.name not in values:
            continue
        value = values[param.name]
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(param.name, f"{value!r} is not a number") from None
        low = param.lo is not None and v < param.lo
        high = param.hi is not None and v > param.hi
        if low or high or not math.isfinite(v):
            raise ConfigError(
                param.name, f"{v:g} is outside the allowed range: {allowed_range(param.name)}"
            )


def parse_floats(text: str, field_name: str) -> list[float]:
    """Comma-separated numbers, e.g. "1, 4"; ConfigError naming `field_name` otherwise."""
    items = [t.strip() for t in str(text).replace(";", ",").split(",") if t.strip()]
    if not items:
        raise ConfigError(field_name, "give at least one number, e.g. 1 or 1, 4")
    out = []
    for t in items:
        try:
            v = float(t)
        except ValueError:
            raise ConfigError(field_name, f"{t!r} is not a number; use e.g. 1, 4") from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(field_name, f"{t!r} is not allowed; use numbers >= 0")
        out.append(v)
    if len(out) > 10:
        raise ConfigError(field_name, "at most 10 multipliers")
    return list(dict.fromkeys(out))


def missing_data(dataset: str) -> str | None:
    """Why a file-backed data set cannot be loaded from the data folder, or None."""
    return missing_files(dataset) if dataset in DATASET_SPECS else None


def _without_source(cfg: RunConfig) -> RunConfig:
    """A run without injected noise has no noise source: it keeps the default one, so it is
    the same run (same id) whichever source the form names."""
    return cfg.replace(noise_source="batch") if cfg.noise == "none" else cfg


def form_configs(values: dict[str, Any]) -> list[RunConfig]:
    """Every RunConfig the Train form launches, validated (also against the data set size).

    The grid is noise structures × multipliers × seeds at the large batch L, plus, when
    `baseline` is set, plain SGD at the small batch M with the same epochs (its evaluation
    cadence scaled so it is evaluated as often per epoch). Every run takes the form's
    validation fraction and drop-last choice; the noise source applies to the runs with
    injected noise. Raises ConfigError naming the Train-form parameter at fault.
    """
    from covnoise.runs.checks import check_runnable
    from covnoise.runs.engine import expand_grid

    try:
        check_ranges(values)
        noises = list(values["noises"])
        if not noises and not values["baseline"]:
            raise ConfigError("noises", "choose at least one noise structure (or the baseline)")
        scales = parse_floats(values["noise_scales"], "noise_scale")
        why = missing_data(values["dataset"])
        if why:
            raise ConfigError("dataset", why)
        spec = DATASET_SPECS.get(values["dataset"])
        # the examples a run trains on: the training set less its validation split
        n_train = None
        if spec is not None:
            n = train_size(values["dataset"])
            n_train = n - validation_size(n, float(values["val_fraction"]))
        # settings of a schedule that is not chosen stay at their defaults (same run id)
        warmup = values["schedule"] == "warmup_cosine"
        stepped = values["schedule"] == "step"
        base = RunConfig(
            dataset=values["dataset"],
            model=values["model"],
            width=int(values["width"]),
            depth=int(values["depth"]),
            batch_size=int(values["batch_size"]),
            small_batch=int(values["small_batch"]),
            drop_last=bool(values["drop_last"]),
            val_fraction=float(values["val_fraction"]),
            noise=noises[0] if noises else "none",
            noise_source=values["noise_source"],
            noise_scale=scales[0],
            lr=float(values["lr"]),
            lr_scaling=values["lr_scaling"],
            momentum=float(values["momentum"]),
            schedule=values["schedule"],
            warmup_epochs=float(values["warmup_epochs"]) if warmup else 0.0,
            step_every_epochs=float(values["step_every_epochs"]) if stepped else 0.0,
            epochs=float(values["epochs"]),
            eval_every=int(values["eval_every"]),
            sharpness_every=int(values["sharpness_every"]),
            probe_size=int(values["probe_size"]),
            name="app",
        )
        seeds = range(int(values["seeds"]))
        configs = []
        if noises:
            base.validate(n_train=n_train)
            grid = expand_grid(base, noises=noises, noise_scales=scales, seeds=seeds)
            configs = [_without_source(c) for c in grid]
        if values["baseline"]:
            sb = base.replace(
                batch_size=base.small_batch,
                noise="none",
                noise_source="batch",
                noise_scale=1.0,
                lr_scaling="none",
            )
            # evaluated as often per epoch as the large-batch runs (core.schedule's epochs)
            n = n_train or base.batch_size
            every = round(base.eval_every * epoch_steps(sb, n) / epoch_steps(base, n))
            sb = sb.replace(eval_every=max(1, every))
            sb.validate(n_train=n_train)
            configs += [sb.replace(seed=s) for s in seeds]
        for cfg in configs:
            cfg.validate(n_train=n_train)
        if configs and spec is not None:  # the model on this data set (all share it)
            check_runnable(configs[0])
    except ConfigError as err:
        raise ConfigError(FIELD_TO_PARAM.get(err.field, err.field), error_text(err)) from None
    return configs


def short_field(name: str) -> str:
    """The label of a Train-form parameter (or the config field name)."""
    return PARAM_LABELS.get(name, name)


def error_text(err: ConfigError) -> str:
    """A ConfigError's message without its leading field name."""
    text = str(err)
    prefix = f"{err.field}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
