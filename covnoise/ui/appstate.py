"""What the app's pages share: the store and engine singletons, cached and uploaded runs, the
Train form's parameters and teaching presets, live-metric polling and the page error guard.

Pages hold widgets and layout; they get data from here and figures from covnoise.viz.plots.
Cached runs (``cached_runs/*.parquet``, or the folder named by ``$COVNOISE_CACHED_RUNS``) and
uploaded files are read as data only, with pyarrow, into memory; the store is never written
with them. The engine is chosen by ``$COVNOISE_ENGINE`` (local by default, or ray with
``$COVNOISE_RAY_ADDRESS``), its worker count by ``$COVNOISE_WORKERS``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from covnoise import results
from covnoise.config import (
    DATASETS,
    LR_SCALINGS,
    MODELS,
    NOISES,
    SCHEDULES,
    ConfigError,
    RunConfig,
)
from covnoise.runs import (
    ACTIVE,
    RunStore,
    default_store_path,
    read_cached_runs,
    read_runs_parquet,
)
from covnoise.ui.urlstate import BadValue, BoolParam, ChoiceParam, FloatParam, IntParam, Param

log = logging.getLogger("covnoise.app")

ROOT = Path(__file__).resolve().parents[2]
CACHED_ENV = "COVNOISE_CACHED_RUNS"
ENGINE_ENV = "COVNOISE_ENGINE"
RAY_ADDRESS_ENV = "COVNOISE_RAY_ADDRESS"
WORKERS_ENV = "COVNOISE_WORKERS"
#: Source label of runs that live in this app's store.
OWN_SOURCE = "this store"


# --------------------------------------------------------------------------------------------
# Error guard
# --------------------------------------------------------------------------------------------


def guarded(body: Callable[[], None], what: str = "this page", action: str = "draw") -> None:
    """Run a page body; an exception becomes a short st.error, its traceback goes to the log."""
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - a page never shows a raw traceback
        log.exception("error while drawing %s", what)
        text = str(exc).splitlines()[0] if str(exc) else ""
        st.error(f"Could not {action} {what}: {type(exc).__name__}{': ' + text if text else ''}")


def guarded_callback(what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a widget callback like `guarded`: an exception becomes a short st.error."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            guarded(lambda: fn(*args, **kwargs), what, action="complete")

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    return wrap


# --------------------------------------------------------------------------------------------
# Store, engine, device
# --------------------------------------------------------------------------------------------


def store_path() -> str:
    """The store file this app uses ($COVNOISE_STORE or the user's default)."""
    return str(default_store_path())


@st.cache_resource(show_spinner=False, on_release=lambda s: s.close())
def _store(path: str) -> RunStore:
    return RunStore(path)


def get_store() -> RunStore:
    """The app's run store (one per store path and process)."""
    return _store(store_path())


def engine_kind() -> str:
    """The engine the app submits to: $COVNOISE_ENGINE (local or ray), local by default."""
    return os.environ.get(ENGINE_ENV, "local").strip().lower() or "local"


def _close_engine(engine: Any) -> None:
    try:
        engine.close(cancel_running=False)  # running runs finish and land in the store
    except Exception:  # noqa: BLE001 - shutting down
        log.exception("closing the engine")


@st.cache_resource(show_spinner=False, on_release=_close_engine)
def _engine(path: str, kind: str, workers: int | None, address: str | None) -> Any:
    from covnoise.runs.engine import make_engine

    return make_engine(kind, _store(path), workers=workers, address=address)


def get_engine() -> Any:
    """The engine the app submits to (built once per store path, kind and worker count)."""
    raw = os.environ.get(WORKERS_ENV)
    workers = int(raw) if raw and raw.strip().isdigit() and int(raw) > 0 else None
    return _engine(store_path(), engine_kind(), workers, os.environ.get(RAY_ADDRESS_ENV))


def engine_info(engine: Any) -> dict[str, Any]:
    """The engine's own status facts (engine.info()), or the basics when it has none."""
    try:
        return dict(engine.info())
    except Exception as exc:  # noqa: BLE001 - a status line must not break the page
        log.warning("engine.info() failed: %s", exc)
        return {"kind": getattr(engine, "kind", type(engine).__name__)}


def engine_description(engine: Any, info: dict[str, Any] | None = None) -> str:
    """A short line naming the engine and its parallelism."""
    info = engine_info(engine) if info is None else info
    workers = (info.get("workers") or info.get("max_in_flight")
               or getattr(engine, "workers", None))  # fmt: skip
    kind = info.get("kind", getattr(engine, "kind", type(engine).__name__))
    return f"{kind} ({workers} parallel runs)" if workers else str(kind)


def engine_problem(info: dict[str, Any]) -> str | None:
    """A short warning when the engine cannot schedule runs, else None."""
    if info.get("monitor_alive") is False:
        return "The engine's scheduler has stopped; queued runs will wait. Restart the app."
    if info.get("last_error"):
        return f"Engine: {str(info['last_error']).splitlines()[0][:200]}"
    return None


@st.cache_resource(show_spinner=False)
def device_found() -> str:
    """The training device a run with device=auto gets: the GPU's name, or the CPU."""
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return f"GPU: {name}" + (f" (×{n})" if n > 1 else "")
    return f"CPU ({os.cpu_count() or 1} cores)"


def queue_counts(store: RunStore) -> dict[str, int]:
    """How many runs of the store are queued and running."""
    counts = store.status_counts()
    return {s: int(counts.get(s, 0)) for s in ("queued", "running")}


# --------------------------------------------------------------------------------------------
# Runs from every source: the store, cached files, uploads
# --------------------------------------------------------------------------------------------


def cached_runs_dir() -> Path:
    """Folder of the cached runs shipped with the app ($COVNOISE_CACHED_RUNS overrides)."""
    env = os.environ.get(CACHED_ENV)
    return Path(env).expanduser() if env else ROOT / "cached_runs"


def _signature(folder: Path) -> tuple:
    try:
        files = sorted(folder.glob("*.parquet"))
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        return ()


@st.cache_resource(show_spinner=False, max_entries=4)
def _read_cached(folder: str, signature: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs, metrics = read_cached_runs(folder)
    for w in caught:
        log.warning("%s", w.message)
    return runs, metrics


def cached_signature() -> tuple:
    """Names, times and sizes of the cached files: a cache key that changes with them."""
    return _signature(cached_runs_dir())


def cached_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) of every readable cached file; re-read when a file changes. Read-only."""
    folder = cached_runs_dir()
    return _read_cached(str(folder), _signature(folder))


def read_upload(name: str, data: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An uploaded covnoise runs file as (runs, metrics); StoreFormatError when it is not one.

    The bytes go to a private temporary file and are read with pyarrow only.
    """
    from covnoise.runs import expand_runs as _expand_runs

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.parquet"
        path.write_bytes(data)
        runs, metrics = read_runs_parquet(path)
    runs = _expand_runs(runs, None)
    runs["source"] = f"upload: {name}"
    return runs, metrics


def uploads() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Runs uploaded in this browser session, by file name."""
    return st.session_state.setdefault("uploaded_runs", {})


def all_runs(store: RunStore) -> pd.DataFrame:
    """Runs from the store, the cached files and this session's uploads, one row per run id
    (the store wins over cached files, cached files over uploads); a ``source`` column says
    where each came from."""
    own = store.runs()
    own["source"] = OWN_SOURCE
    frames = [own, cached_runs()[0], *(r for r, _ in uploads().values())]
    frames = [f for f in frames if len(f)]
    if not frames:
        return own
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates("run_id", keep="first").reset_index(drop=True)


def metrics_for(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """Long metrics of `runs` (a frame from all_runs), each read from the run's source."""
    parts = []
    own_ids = runs.loc[runs["source"] == OWN_SOURCE, "run_id"].tolist()
    if own_ids:
        parts.append(store.metrics(own_ids).drop(columns="id"))
    other = runs[runs["source"] != OWN_SOURCE]
    if len(other):
        c_runs, c_metrics = cached_runs()
        frames = [c_metrics, *(m for _, m in uploads().values())]
        for m in frames:
            if len(m):
                parts.append(m[m["run_id"].isin(set(other["run_id"]))])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["run_id", "step", "epoch", "examples_seen", "wall_time",
                                     "name", "value"])  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def filter_runs(runs: pd.DataFrame, filters: dict[str, Sequence[Any]]) -> pd.DataFrame:
    """Runs whose column values are in each filter's list (an empty list keeps everything)."""
    keep = pd.Series(True, index=runs.index)
    for column, allowed in filters.items():
        if allowed and column in runs:
            text = runs[column].map(_as_text)
            keep &= text.isin({_as_text(v) for v in allowed})
    return runs[keep].reset_index(drop=True)


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


#: Columns the run filters offer (column → label).
FILTER_COLUMNS: dict[str, str] = {
    "source": "source",
    "status": "status",
    "cfg_dataset": "data set",
    "cfg_model": "model",
    "cfg_batch_size": "large batch L",
    "cfg_noise": "noise structure",
    "cfg_noise_scale": "multiplier s",
    "cfg_lr": "learning rate",
}


def filter_options(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter column takes in `runs`, as sorted text."""
    out = {}
    for column in FILTER_COLUMNS:
        if column not in runs:
            out[column] = []
            continue
        values = runs[column].dropna().map(_as_text).unique().tolist()
        out[column] = sorted(values, key=_sort_key)
    return out


def _sort_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# --------------------------------------------------------------------------------------------
# URL parameters the theory helper lacks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListParam(Param):
    """A list of strings in the URL as "a,b,c"; with `choices`, each item must be one of them."""

    choices: Sequence[str] | None = None

    def parse(self, raw: str) -> list[str]:
        items = [t.strip() for t in raw.split(",") if t.strip()]
        if len(items) > 200:
            raise BadValue("too many items")
        if self.choices is not None:
            bad = [t for t in items if t not in self.choices]
            if bad:
                raise BadValue(f"{bad[0]!r} is not one of {', '.join(self.choices)}")
        return items

    def format(self, value: Any) -> str:
        return ",".join(str(v) for v in value)


@dataclass(frozen=True)
class TextParam(Param):
    """Free text of at most `max_len` characters."""

    max_len: int = 100

    def parse(self, raw: str) -> str:
        if len(raw) > self.max_len:
            raise BadValue(f"longer than {self.max_len} characters")
        return raw


# --------------------------------------------------------------------------------------------
# The Train form: its parameters, presets, and the configs it launches
# --------------------------------------------------------------------------------------------

TRAIN_PARAMS: list[Param] = [
    ChoiceParam("dataset", "digits", DATASETS),
    ChoiceParam("model", "mlp", MODELS),
    IntParam("width", 64, 1, 4096),
    IntParam("depth", 2, 1, 16),
    IntParam("batch_size", 1024, 1, 1_000_000),
    IntParam("small_batch", 32, 1, 1_000_000),
    ListParam("noises", ["none", "full"], NOISES),
    TextParam("noise_scales", "1"),
    BoolParam("baseline", True),
    FloatParam("lr", 0.5, 1e-6, 100.0),
    ChoiceParam("lr_scaling", "none", LR_SCALINGS),
    FloatParam("momentum", 0.0, 0.0, 0.999),
    ChoiceParam("schedule", "constant", SCHEDULES),
    FloatParam("warmup_epochs", 0.0, 0.0, 10_000.0),
    FloatParam("step_every_epochs", 10.0, 0.0, 10_000.0),
    FloatParam("epochs", 40.0, 0.01, 100_000.0),
    IntParam("seeds", 1, 1, 20),
    IntParam("eval_every", 4, 1, 1_000_000),
    IntParam("sharpness_every", 1, 0, 1000),
    IntParam("probe_size", 256, 2, 100_000),
]

#: Train-form parameter that shows the error of each RunConfig field.
FIELD_TO_PARAM: dict[str, str] = {
    "noise": "noises", "noise_scale": "noise_scales", "seed": "seeds", "steps": "epochs",
    "step_gamma": "step_every_epochs",
}  # fmt: skip

#: Data set sizes (train, test), input shape and classes, for validation and cost estimates
#: before anything is loaded (defaults of covnoise.data).
DATASET_SHAPES: dict[str, tuple[int, int, tuple[int, ...], int]] = {
    "digits": (1347, 450, (1, 8, 8), 10),
    "mnist1d": (4000, 1000, (1, 40), 10),
    "teacher": (8192, 2048, (32,), 10),
    "mnist": (60000, 10000, (1, 28, 28), 10),
    "fashion-mnist": (60000, 10000, (1, 28, 28), 10),
    "cifar10": (50000, 10000, (3, 32, 32), 10),
}


@dataclass(frozen=True)
class Preset:
    """A teaching preset: a title, what it shows, and Train-form values."""

    title: str
    explains: str
    values: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "gap": Preset(
        "The large-batch gap",
        "Plain SGD with a large batch L = 1024 against the small batch M = 32 for the same "
        "epochs: compare how far each fits the training set and how it does on the test set.",
        {
            "noises": ["none"],
            "baseline": True,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1",
        },
    ),
    "diag-full": Preset(
        "Diagonal vs full noise",
        "The same large batch with noise of equal trace but the diagonal or the full Fisher "
        "structure: full noise has a far larger Frobenius norm and follows the curvature.",
        {
            "noises": ["diag", "full"],
            "baseline": False,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1",
        },
    ),
    "trace-vs-fro": Preset(
        "Equal trace, different ‖Σ‖_F",
        "All four structures at two multipliers: tr Σ is the same across structures, ‖Σ‖_F "
        "is not. Open 'Noise vs generalisation' afterwards to see which explains more.",
        {
            "noises": ["none", "isotropic", "diag", "full"],
            "baseline": True,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1, 4",
        },
    ),
    "quick": Preset(
        "Quick look (about a minute)",
        "One short run per structure on a small MLP, to see the Live page move.",
        {
            "noises": ["none", "full"],
            "baseline": False,
            "width": 32,
            "batch_size": 512,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 30.0,
            "eval_every": 3,
            "seeds": 1,
            "noise_scales": "1",
        },
    ),
}


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


def form_configs(values: dict[str, Any]) -> list[RunConfig]:
    """Every RunConfig the Train form launches, validated (also against the data set size).

    The grid is noise structures × multipliers × seeds at the large batch L, plus, when
    `baseline` is set, plain SGD at the small batch M with the same epochs (its evaluation
    cadence scaled so it is evaluated as often per epoch). Raises ConfigError naming the
    Train-form parameter at fault.
    """
    from covnoise.runs.engine import expand_grid

    try:
        noises = list(values["noises"])
        if not noises and not values["baseline"]:
            raise ConfigError("noises", "choose at least one noise structure (or the baseline)")
        scales = parse_floats(values["noise_scales"], "noise_scale")
        why = missing_data(values["dataset"])
        if why:
            raise ConfigError("dataset", why)
        n_train = DATASET_SHAPES.get(values["dataset"], (None,))[0]
        # settings of a schedule that is not chosen stay at their defaults (same run id)
        warmup = values["schedule"] == "warmup_cosine"
        stepped = values["schedule"] == "step"
        base = RunConfig(
            dataset=values["dataset"], model=values["model"], width=int(values["width"]),
            depth=int(values["depth"]), batch_size=int(values["batch_size"]),
            small_batch=int(values["small_batch"]), noise=noises[0] if noises else "none",
            noise_scale=scales[0], lr=float(values["lr"]), lr_scaling=values["lr_scaling"],
            momentum=float(values["momentum"]), schedule=values["schedule"],
            warmup_epochs=float(values["warmup_epochs"]) if warmup else 0.0,
            step_every_epochs=float(values["step_every_epochs"]) if stepped else 0.0,
            epochs=float(values["epochs"]), eval_every=int(values["eval_every"]),
            sharpness_every=int(values["sharpness_every"]),
            probe_size=int(values["probe_size"]), name="app",
        )  # fmt: skip
        seeds = range(int(values["seeds"]))
        configs = []
        if noises:
            base.validate(n_train=n_train)
            configs = expand_grid(base, noises=noises, noise_scales=scales, seeds=seeds)
        if values["baseline"]:
            per_l = max(1, (n_train or base.batch_size) // base.batch_size)
            per_m = max(1, (n_train or base.small_batch) // base.small_batch)
            every = max(1, round(base.eval_every * per_m / per_l))
            sb = base.replace(batch_size=base.small_batch, noise="none", noise_scale=1.0,
                              lr_scaling="none", eval_every=every)  # fmt: skip
            sb.validate(n_train=n_train)
            configs += [sb.replace(seed=s) for s in seeds]
        for cfg in configs:
            cfg.validate(n_train=n_train)
    except ConfigError as err:
        raise ConfigError(FIELD_TO_PARAM.get(err.field, err.field), _message(err)) from None
    return configs


def missing_data(dataset: str) -> str | None:
    """Why a file-backed data set cannot be loaded from the data folder, or None."""
    from covnoise import data

    spec = data.DATASETS.get(dataset)
    if spec is None or spec.embedded:
        return None
    root = data.default_data_dir()
    if dataset == "cifar10":
        folder = root / data.CIFAR10_FOLDER
        needed = [*data.CIFAR10_TRAIN_BATCHES, data.CIFAR10_TEST_BATCH]
        missing = [f for f in needed if not (folder / f).is_file()]
    else:
        folder = root / dataset
        missing = [f for f in data.IDX_FILES.values()
                   if not ((folder / f).is_file() or (folder / f"{f}.gz").is_file())]
    if not missing:
        return None
    return (f"its files are not in {folder} (missing {', '.join(missing)}); run "
            f"`python -m covnoise data download {dataset} --data-dir {root}`")


def _message(err: ConfigError) -> str:
    text = str(err)
    prefix = f"{err.field}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@st.cache_data(show_spinner=False, max_entries=64)
def forward_flops(dataset: str, model: str, width: int, depth: int) -> float:
    """FLOPs of one example's forward pass (cached; counted once per architecture)."""
    _, _, shape, classes = DATASET_SHAPES[dataset]
    return results.forward_flops(shape, classes, model, width, depth)


#: FLOP rate assumed before any run has been timed on this machine.
DEFAULT_RATE = {"cpu": 2e9, "gpu": 2e11}


def cost_summary(configs: Sequence[RunConfig], past: pd.DataFrame, workers: int) -> dict[str, Any]:
    """Steps, evaluations, FLOPs and a wall-clock estimate for launching `configs`.

    The FLOP rate is calibrated on the finished runs in `past` (their predicted FLOPs over
    their measured wall time); without any it is a fixed guess for the device.
    """
    costs = [_cost(cfg) for cfg in configs]
    rate, calibrated = _calibrated_rate(past)
    if rate is None:
        rate = DEFAULT_RATE["gpu" if device_found().startswith("GPU") else "cpu"]
    secs = [results.run_seconds(c, rate) for c in costs]
    return {
        "runs": len(configs),
        "steps": sum(c.steps for c in costs),
        "evaluations": sum(c.evaluations for c in costs),
        "sharpness_evaluations": sum(c.sharpness_evaluations for c in costs),
        "examples": sum(c.examples for c in costs),
        "flops": sum(c.flops for c in costs),
        "seconds": results.grid_seconds(secs, workers),
        "rate": rate,
        "calibrated_on": calibrated,
    }


def _cost(cfg: RunConfig) -> results.Cost:
    n_train, n_test, _, _ = DATASET_SHAPES[cfg.dataset]
    f = forward_flops(cfg.dataset, cfg.model, cfg.width, cfg.depth)
    return results.run_cost(cfg, n_train, n_test, f)


def _calibrated_rate(past: pd.DataFrame) -> tuple[float | None, int]:
    if past is None or past.empty:
        return None, 0
    done = past[(past["status"] == "finished") & past["wall_time"].notna()]
    done = done[done["cfg_dataset"].isin(list(DATASET_SHAPES))].tail(50)
    costs, secs = [], []
    for row in done.to_dict("records"):
        try:
            costs.append(_cost(results.config_from_row(row)))
            secs.append(float(row["wall_time"]))
        except Exception:  # noqa: BLE001 - an odd past run just does not calibrate
            continue
    return results.throughput(costs, secs), len(costs)


# --------------------------------------------------------------------------------------------
# Live polling
# --------------------------------------------------------------------------------------------


class LiveMetrics:
    """Metric rows of a set of runs, kept up to date by reading only rows added since the
    last poll (store.metrics_since)."""

    def __init__(self) -> None:
        self.frame = pd.DataFrame()
        self.max_id = 0
        self.ids: set[str] = set()

    def update(self, store: RunStore, run_ids: Iterable[str]) -> pd.DataFrame:
        """Rows of `run_ids` (new ids are read in full, known ones incrementally)."""
        wanted = set(run_ids)
        new = wanted - self.ids
        parts = [self.frame[self.frame["run_id"].isin(wanted)]] if len(self.frame) else []
        if new:
            parts.append(store.metrics(sorted(new)))
        if self.ids & wanted:
            parts.append(store.metrics_since(self.max_id, sorted(wanted)))
        parts = [p for p in parts if len(p)]
        if parts:
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            frame = frame.drop_duplicates("id").sort_values("id", kind="stable")
            self.frame = frame.reset_index(drop=True)
            self.max_id = max(self.max_id, int(self.frame["id"].max()))
        else:
            self.frame = store.metrics([])
        self.ids = wanted
        return self.frame

    def forget(self, run_ids: Iterable[str]) -> None:
        """Drop what is known of `run_ids` (a requeued run starts its rows afresh)."""
        drop = set(run_ids)
        self.ids -= drop
        if len(self.frame):
            self.frame = self.frame[~self.frame["run_id"].isin(drop)]


def run_progress(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.Series:
    """Fraction of its steps each run has done (last logged step / total steps), by run_id."""
    last = metrics.groupby("run_id")["step"].max() if len(metrics) else pd.Series(dtype=float)
    out = {}
    for row in runs.itertuples():
        total = row.total_steps
        done = row.steps if row.status not in ACTIVE and pd.notna(row.steps) else None
        if done is None:
            done = last.get(row.run_id, 0)
        if pd.isna(total) or not total:
            out[row.run_id] = 1.0 if row.status == "finished" else 0.0
        else:
            out[row.run_id] = float(min(1.0, float(done or 0) / float(total)))
    return pd.Series(out, dtype=float)


def short_id(run_id: str) -> str:
    return str(run_id)[:8]


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """A readable label per run (index run_id): its varying config values and seed."""
    keys = results.varying_keys(runs)
    if "seed" in results.config_keys(runs) and runs["cfg_seed"].nunique() > 1:
        keys = [*keys, "seed"]
    labels = results.group_labels(runs, keys)
    ids = runs["run_id"].map(short_id).to_numpy()
    if not keys:
        return pd.Series(ids, index=labels.index)
    return pd.Series([f"{lab} [{i}]" for lab, i in zip(labels, ids, strict=True)],
                     index=labels.index)  # fmt: skip
# --------------------------------------------------------------------------------------------
# Run filters shared by Compare and Noise vs generalisation
# --------------------------------------------------------------------------------------------

#: URL parameter of each filter column.
FILTER_PARAM: dict[str, str] = {
    "source": "source", "status": "status", "cfg_dataset": "dataset", "cfg_model": "model",
    "cfg_batch_size": "L", "cfg_noise": "noise", "cfg_noise_scale": "s", "cfg_lr": "lr",
}  # fmt: skip


def filter_params() -> list[Param]:
    """URL parameters of the run filters (each a list of allowed values, empty = all)."""
    return [ListParam(name, []) for name in FILTER_PARAM.values()]


def run_filter_widgets(state: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """Multiselect filters in the sidebar, bound to `state` (a UrlState holding
    filter_params()); returns the runs that pass. Values no longer present are dropped."""
    options = filter_options(runs)
    chosen: dict[str, list[str]] = {}
    with st.sidebar:
        st.header("Runs")
        for column, label in FILTER_COLUMNS.items():
            key = state.key(FILTER_PARAM[column])
            current = [v for v in st.session_state.get(key, []) if v in options[column]]
            st.session_state[key] = current
            if len(options[column]) <= 1 and not current:
                continue  # nothing to choose between
            chosen[column] = st.multiselect(label, options[column], key=key,
                                            placeholder="all")  # fmt: skip
    return filter_runs(runs, chosen)


def parquet_bytes(runs: pd.DataFrame, metrics: pd.DataFrame) -> bytes:
    """`runs` and their metrics as a covnoise runs Parquet file (readable by import/upload)."""
    from covnoise.runs import write_runs_parquet

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.parquet"
        write_runs_parquet(path, runs, metrics)
        return path.read_bytes()


def fmt_seconds(seconds: float) -> str:
    """A duration for people: 45 s, 3.2 min, 1.5 h."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


#: Train-form parameter → the label people see.
PARAM_LABELS: dict[str, str] = {
    "dataset": "data set", "model": "model", "width": "width", "depth": "depth",
    "batch_size": "large batch L", "small_batch": "target small batch M",
    "noises": "noise structures", "noise_scales": "multipliers s", "baseline": "baseline",
    "lr": "learning rate η", "lr_scaling": "learning-rate scaling", "momentum": "momentum β",
    "schedule": "schedule", "warmup_epochs": "warm-up epochs",
    "step_every_epochs": "step every", "epochs": "epochs", "seeds": "seeds",
    "eval_every": "evaluate every", "sharpness_every": "sharpness every",
    "probe_size": "probe batch size",
}  # fmt: skip


def short_field(name: str) -> str:
    """The label of a Train-form parameter (or the config field name)."""
    return PARAM_LABELS.get(name, name)


def error_text(err: ConfigError) -> str:
    """A ConfigError's message without its leading field name."""
    return _message(err)


def describe_config(cfg: RunConfig) -> str:
    """One line naming a run's main settings."""
    noise = "no noise" if cfg.noise == "none" else f"{cfg.noise} noise ×{cfg.noise_scale:g}"
    return (f"{cfg.dataset}, {cfg.model}, L={cfg.batch_size}, M={cfg.small_batch}, {noise}, "
            f"η={cfg.effective_lr:g}, seed {cfg.seed}")  # fmt: skip


def configs_table(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The grid as a table: id and the fields that matter for the comparison."""
    return pd.DataFrame([{
        "run id": c.run_id(), "L": c.batch_size, "M": c.small_batch, "noise": c.noise,
        "s": c.noise_scale if c.noise != "none" else None, "η": c.effective_lr,
        "epochs": c.epochs, "eval every": c.eval_every, "seed": c.seed,
    } for c in configs])  # fmt: skip
