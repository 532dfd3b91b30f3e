"""`python -m covnoise runs …` and `python -m covnoise sweep …`: the run store from the shell.

`runs ls|show|rm|cancel|export|import` read and change the store; `sweep` expands a grid
(batch sizes × structures × multipliers × learning rates × seeds) around the training flags,
runs it through the local or Ray engine with a progress bar, and can export the result to a
Parquet file in one go. Bad input exits 2 with one line naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

from covnoise.config import ConfigError, RunConfig
from covnoise.store import COMPLETED, STATUSES, TERMINAL, RunStore, StoreFormatError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

_LS_COLUMNS = {
    "run_id": "run_id",
    "status": "status",
    "cfg_dataset": "dataset",
    "cfg_model": "model",
    "cfg_noise": "noise",
    "cfg_batch_size": "L",
    "cfg_small_batch": "M",
    "cfg_noise_scale": "s",
    "cfg_lr": "lr",
    "cfg_seed": "seed",
    "steps": "steps",
}


def _bad(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store", default=None, metavar="PATH",
        help="run store file (default: $COVNOISE_STORE, else runs.sqlite in the user data "
             "folder, e.g. ~/.local/share/covnoise/)",
    )  # fmt: skip


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        action="append",
        default=None,
        metavar="STATUS",
        help=f"keep runs with this status ({', '.join(STATUSES)}); repeatable",
    )
    parser.add_argument("--where", action="append", default=None, metavar="FIELD=VALUE",
                        help="keep runs whose config field has this value, e.g. noise=full; "
                             "repeatable")  # fmt: skip


def _open_store(args: argparse.Namespace) -> RunStore:
    return RunStore(args.store)


def _parse_filters(args: argparse.Namespace) -> tuple[list[str] | None, dict[str, Any]]:
    """(statuses, where) from --status/--where; raises ConfigError naming the bad option."""
    statuses = None
    if args.status:
        statuses = [s for item in args.status for s in item.split(",") if s]
        for s in statuses:
            if s not in STATUSES:
                raise ConfigError("status", f"{s!r} is not one of {', '.join(STATUSES)}")
    where: dict[str, Any] = {}
    known = {f.name for f in fields(RunConfig)}
    for item in args.where or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("where", f"{item!r} is not FIELD=VALUE")
        if key not in known:
            raise ConfigError("where", f"{key!r} is not a config field; allowed: {sorted(known)}")
        where[key] = value
    return statuses, where


def _resolve_ids(store: RunStore, prefixes: list[str]) -> list[str]:
    try:
        return [store.resolve(p) for p in prefixes]
    except KeyError as exc:
        raise ConfigError("run_id", exc.args[0]) from None


def _selected(store: RunStore, args: argparse.Namespace):
    statuses, where = _parse_filters(args)
    ids = _resolve_ids(store, args.run_ids) if getattr(args, "run_ids", None) else None
    return store.runs(status=statuses, run_ids=ids, where=where)


# ---------------------------------------------------------------------- runs sub-commands
def _cmd_ls(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        runs = _selected(store, args)
    if runs.empty:
        print("no runs")
        return EXIT_OK
    cols = [c for c in _LS_COLUMNS if c in runs.columns]
    table = runs[cols].rename(columns=_LS_COLUMNS)
    finals = [json.loads(f) if isinstance(f, str) else {} for f in runs["final"]]
    table["test_acc"] = [f.get("test_acc") for f in finals]
    print(table.to_string(index=False, na_rep="-"))
    print(f"{len(runs)} runs: " + ", ".join(
        f"{n} {s}" for s, n in Counter(runs["status"]).most_common()))  # fmt: skip
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        run_id = _resolve_ids(store, [args.run_id])[0]
        rec = store.get_run(run_id)
        metrics = store.metrics([run_id])
    assert rec is not None
    for key in ("run_id", "name", "status", "message", "engine", "device", "code_revision",
                "total_steps", "steps", "examples_seen", "wall_time", "host", "pid"):  # fmt: skip
        if rec.get(key) is not None:
            print(f"{key:>14s}: {rec[key]}")
    for key in ("submitted_at", "started_at", "ended_at"):
        if rec.get(key):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec[key]))
            print(f"{key:>14s}: {stamp}")
    if rec.get("versions"):
        print(f"{'versions':>14s}: {json.dumps(rec['versions'], sort_keys=True)}")
    print("config:")
    for key, value in rec["config"].items():
        print(f"  {key:>18s}: {json.dumps(value)}")
    if len(metrics):
        print(f"metrics ({len(metrics)} rows; last value of each):")
        last = metrics.groupby("name", sort=True).tail(1).sort_values("name")
        for row in last.itertuples(index=False):
            print(f"  {row.name:>24s}: {row.value:.6g}  (step {row.step})")
    if args.traceback and rec.get("traceback"):
        print(rec["traceback"])
    return EXIT_OK


def _cmd_rm(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        ids = _resolve_ids(store, args.run_ids)
        active = [r for r, s in store.statuses(ids).items() if s not in TERMINAL]
        if active and not args.force:
            return _bad(f"run_id: {active[0]} is queued or running; cancel it first or use --force")
        for rid in active:
            store.request_cancel(rid)
        n = store.delete(ids)
    print(f"removed {n} runs")
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        for rid in _resolve_ids(store, args.run_ids):
            status = store.request_cancel(rid)
            note = "stopping" if status == "running" else status
            print(f"{rid}: {note}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        runs = _selected(store, args)
        n = store.export_parquet(args.to, runs["run_id"].tolist())
    print(f"wrote {n} runs to {args.to}")
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    total = 0
    with _open_store(args) as store:
        for path in args.paths:
            if not Path(path).is_file():
                return _bad(f"paths: {path} is not a file")
            try:
                n = store.import_parquet(path, replace=args.replace)
            except StoreFormatError as exc:
                return _bad(f"paths: {path}: {exc}")
            total += n
            print(f"{path}: imported {n} runs")
    if len(args.paths) > 1:
        print(f"imported {total} runs")
    return EXIT_OK


def add_runs_parser(subparsers: Any) -> None:
    """Register `runs` (ls, show, rm, cancel, export, import) on an argparse subparsers object."""
    runs = subparsers.add_parser("runs", help="list, show, remove, cancel, export, import runs")
    sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=type(runs))

    ls = sub.add_parser("ls", help="list the stored runs")
    _store_argument(ls)
    _filter_arguments(ls)
    ls.set_defaults(func=_guard(_cmd_ls))

    show = sub.add_parser("show", help="show one run: record, config, last metric values")
    show.add_argument("run_id", help="a run id or a unique prefix of one")
    show.add_argument("--traceback", action="store_true", help="print the error traceback")
    _store_argument(show)
    show.set_defaults(func=_guard(_cmd_show))

    rm = sub.add_parser("rm", help="remove runs and their metrics")
    rm.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    rm.add_argument("--force", action="store_true", help="also remove queued or running runs")
    _store_argument(rm)
    rm.set_defaults(func=_guard(_cmd_rm))

    cancel = sub.add_parser("cancel", help="cancel queued or running runs")
    cancel.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    _store_argument(cancel)
    cancel.set_defaults(func=_guard(_cmd_cancel))

    export = sub.add_parser("export", help="write runs and their metrics to a Parquet file")
    export.add_argument("--to", required=True, metavar="PATH",
                        help="the Parquet file, e.g. cached_runs/NAME.parquet")  # fmt: skip
    export.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="only these runs")
    _store_argument(export)
    _filter_arguments(export)
    export.set_defaults(func=_guard(_cmd_export))

    imp = sub.add_parser("import", help="add the runs of Parquet files to the store")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--replace", action="store_true", help="replace runs with the same id")
    _store_argument(imp)
    imp.set_defaults(func=_guard(_cmd_import))


def _guard(fn):
    """Turn a ConfigError raised by a sub-command into one line and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ConfigError as exc:
            return _bad(str(exc))

    wrapped.__doc__ = fn.__doc__
    return wrapped


# ---------------------------------------------------------------------- sweep
def _parse_list(field: str, text: str | None, kind: type) -> list | None:
    if text is None:
        return None
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(kind(item))
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise ConfigError(field, f"{item!r} is not {name}") from None
    if not values:
        raise ConfigError(field, "give at least one value")
    return values


def _noise_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from covnoise.config import NOISES

    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values:
        if v not in NOISES:
            raise ConfigError("noises", f"{v!r} is not one of {', '.join(NOISES)}")
    if not values:
        raise ConfigError("noises", "give at least one value")
    return values


def sweep_configs(args: argparse.Namespace) -> list:
    """The RunConfigs a parsed `sweep` command runs (ConfigError names a bad field)."""
    from covnoise.cli import config_from_args
    from covnoise.engine import expand_grid

    return expand_grid(
        config_from_args(args),
        batch_sizes=_parse_list("batch_sizes", args.batch_sizes, int),
        noises=_noise_list(args.noises),
        noise_scales=_parse_list("noise_scales", args.noise_scales, float),
        lrs=_parse_list("lrs", args.lrs, float),
        seeds=_parse_list("seeds", args.seeds, int),
    )


def _cmd_sweep(args: argparse.Namespace) -> int:
    from covnoise.engine import make_engine

    try:
        configs = sweep_configs(args)
        if args.workers is not None and args.workers < 1:
            raise ConfigError("workers", f"{args.workers} is not allowed; use an integer >= 1")
    except ConfigError as exc:
        return _bad(str(exc))
    if args.dry_run:
        for cfg in configs:
            print(cfg.run_id(), cfg.to_json())
        print(f"{len(configs)} runs")
        return EXIT_OK

    store = RunStore(args.store)
    try:
        engine = make_engine(args.engine, store, workers=args.workers, address=args.address)
    except ImportError as exc:
        store.close()
        return _bad(f"engine: {args.engine} needs an optional package ({exc}); "
                    "pip install -r requirements-ray.txt")  # fmt: skip
    ids: list[str] = []
    try:
        ids = engine.submit_many(configs, rerun=args.rerun)
        statuses = _follow(store, ids, progress=not args.no_progress)
    except KeyboardInterrupt:
        engine.close(cancel_running=True)
        queued = sum(s == "queued" for s in store.statuses(ids).values())
        print(f"interrupted: running runs were cancelled, {queued} stay queued "
              "(run the same sweep again to go on)", file=sys.stderr)  # fmt: skip
        store.close()
        return EXIT_INTERRUPTED
    engine.close(cancel_running=True)
    counts = Counter(statuses.values())
    print(f"{len(ids)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    for rid, status in statuses.items():
        if status not in COMPLETED:
            rec = store.get_run(rid) or {}
            print(f"  {rid} {status}: {rec.get('message')}", file=sys.stderr)
    if args.export:
        n = store.export_parquet(args.export, ids)
        print(f"wrote {n} runs to {args.export}")
    store.close()
    return EXIT_OK if all(s in COMPLETED for s in statuses.values()) else EXIT_FAILED


def _follow(store: RunStore, ids: list[str], progress: bool) -> dict[str, str | None]:
    """Poll the store until every run has a final status, with a tqdm progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(ids), unit="run", desc="sweep", disable=not progress, file=sys.stderr)
    shown = None
    try:
        while True:
            statuses = store.statuses(ids)
            done = sum(s in TERMINAL or s is None for s in statuses.values())
            counts = Counter(s for s in statuses.values() if s is not None)
            text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if text != shown:
                bar.set_postfix_str(text, refresh=False)
                shown = text
            bar.update(done - bar.n)
            if done == len(ids):
                return statuses
            time.sleep(0.5)
    finally:
        bar.close()


def add_sweep_parser(subparsers: Any) -> None:
    """Register `sweep` (training flags + grid flags + engine flags) on a subparsers object."""
    from covnoise.cli import add_train_arguments

    sweep = subparsers.add_parser(
        "sweep", help="run a grid of configs through an engine, with a progress bar",
        description="Expand batch sizes × noises × noise scales × lrs × seeds around the "
                    "training flags and run every combination.",
    )  # fmt: skip
    add_train_arguments(sweep)
    grid = sweep.add_argument_group("grid (comma-separated values; a flag left out keeps the "
                                    "single value of the training flags)")  # fmt: skip
    grid.add_argument("--batch-sizes", metavar="L,L,…", help="large batch sizes, e.g. 256,1024")
    grid.add_argument("--noises", metavar="N,N,…", help="structures, e.g. none,diag,full")
    grid.add_argument("--noise-scales", metavar="S,S,…", help="multipliers s, e.g. 0.5,1")
    grid.add_argument("--lrs", metavar="LR,LR,…", help="learning rates, e.g. 0.1,0.4")
    grid.add_argument("--seeds", metavar="SEED,…", help="seeds, e.g. 0,1,2")
    run = sweep.add_argument_group("where and how")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local process pool (default) or a Ray cluster")  # fmt: skip
    run.add_argument("--address", default=None,
                     help="Ray cluster address, e.g. auto (default: $RAY_ADDRESS, else a new "
                          "local Ray)")  # fmt: skip
    run.add_argument("--workers", type=int, default=None,
                     help="runs at a time (default: one per GPU, else one per two CPU cores; "
                          "Ray: as many as the cluster fits)")  # fmt: skip
    _store_argument(run)
    run.add_argument("--rerun", action="store_true", help="run finished configs again")
    run.add_argument("--export", metavar="PATH", default=None,
                     help="write the sweep's runs to this Parquet file when it ends, e.g. "
                          "cached_runs/NAME.parquet")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    sweep.set_defaults(func=_cmd_sweep)
