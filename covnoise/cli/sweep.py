"""`covnoise sweep`: a grid (batch sizes × structures × multipliers × learning rates × seeds)
around the training flags, run through the local or Ray engine with a progress bar, and
exported to a Parquet file in one go. Bad input exits 2 with one line naming the field.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from covnoise.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    bad,
    store_argument,
)
from covnoise.cli.train import add_train_arguments, config_from_args, integer
from covnoise.config import NOISES, ConfigError, RunConfig, field_info
from covnoise.fields import check_field
from covnoise.runs import COMPLETED, TERMINAL, RunStore


def _parse_list(field: str, text: str | None, kind: type) -> list | None:
    if text is None:
        return None
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            values.append(integer(item) if kind is int else kind(item))
        except (ValueError, argparse.ArgumentTypeError):
            name = "an integer" if kind is int else "a number"
            raise ConfigError(field, f"{item!r} is not {name}") from None
    if not values:
        raise ConfigError(field, "give at least one value")
    return values


def _noise_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    for v in values:
        if v not in NOISES:
            raise ConfigError("noises", f"{v!r} is not one of {', '.join(NOISES)}")
    if not values:
        raise ConfigError("noises", "give at least one value")
    return values


def sweep_configs(args: argparse.Namespace) -> list[RunConfig]:
    """The RunConfigs a parsed `sweep` command runs, each checked against its data set (batch,
    probe and total steps against the training set, the model's size), so a grid that holds
    a config that cannot run is refused before anything is submitted or stored (ConfigError
    names the bad field)."""
    from covnoise.runs.checks import check_runnable
    from covnoise.runs.engine import expand_grid

    scales = _parse_list("noise_scales", args.noise_scales, float)
    for s in scales or ():  # runs without noise drop the multiplier, so check each value here
        check_field("noise_scales", s, field_info("noise_scale"), "float")
    configs = expand_grid(
        config_from_args(args),
        batch_sizes=_parse_list("batch_sizes", args.batch_sizes, int),
        noises=_noise_list(args.noises),
        noise_scales=scales,
        lrs=_parse_list("lrs", args.lrs, float),
        seeds=_parse_list("seeds", args.seeds, int),
    )
    for config in configs:
        check_runnable(config)
    return configs


def _start_engine(args: argparse.Namespace, store: RunStore) -> Any:
    """The engine of --engine on `store`; ConfigError when it cannot start (a missing optional
    package, or a Ray --address where no cluster answers)."""
    from covnoise.runs.engine import make_engine

    try:
        return make_engine(args.engine, store, workers=args.workers, address=args.address)
    except ImportError as exc:
        raise ConfigError(
            "engine",
            f"{args.engine} needs an optional package ({exc}); pip install -r requirements-ray.txt",
        ) from None


def _check_address(args: argparse.Namespace) -> None:
    """ConfigError when --engine ray --address names something that is not a Ray cluster
    (a missing ray package is left to _start_engine to explain)."""
    if args.engine != "ray" or not args.address:
        return
    try:
        from covnoise.runs.engine.ray_engine import check_address
    except ImportError:
        return
    check_address(args.address)


def _checked_sweep(args: argparse.Namespace) -> list[RunConfig]:
    """The sweep's configs after every check that needs no store (ConfigError otherwise)."""
    configs = sweep_configs(args)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("workers", f"{args.workers} is not allowed; use an integer >= 1")
    if not args.dry_run:
        _check_address(args)  # before the store exists: a dead address leaves no file
    return configs


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:
        configs = _checked_sweep(args)
    except ConfigError as exc:
        return bad(str(exc))
    if args.dry_run:
        for cfg in configs:
            print(cfg.run_id(), cfg.to_json())
        print(f"{len(configs)} runs")
        return EXIT_OK

    store = RunStore(args.store)
    try:
        engine = _start_engine(args, store)
    except ConfigError as exc:
        store.close()
        return bad(str(exc))
    ids: list[str] = []
    try:
        ids = engine.submit_many(configs, rerun=args.rerun)
        statuses = _follow(store, ids, progress=not args.no_progress)
    except KeyboardInterrupt:
        engine.close(cancel_running=True)
        queued = sum(s == "queued" for s in store.statuses(ids).values())
        print(
            f"interrupted: running runs were cancelled, {queued} stay queued "
            "(run the same sweep again to go on)",
            file=sys.stderr,
        )
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


def add_parser(subparsers: Any) -> None:
    """Register `sweep` (training flags + grid flags + engine flags) on a subparsers object."""
    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of configs through an engine, with a progress bar",
        description="Expand batch sizes × noises × noise scales × lrs × seeds around the "
        "training flags and run every combination.",
    )
    add_train_arguments(sweep)
    grid = sweep.add_argument_group(
        "grid (comma-separated values; a flag left out keeps the "
        "single value of the training flags)"
    )
    grid.add_argument("--batch-sizes", metavar="L,L,…", help="large batch sizes, e.g. 256,1024")
    grid.add_argument("--noises", metavar="N,N,…", help="structures, e.g. none,diag,full")
    grid.add_argument("--noise-scales", metavar="S,S,…", help="multipliers s, e.g. 0.5,1")
    grid.add_argument("--lrs", metavar="LR,LR,…", help="learning rates, e.g. 0.1,0.4")
    grid.add_argument("--seeds", metavar="SEED,…", help="seeds, e.g. 0,1,2")
    run = sweep.add_argument_group("where and how")
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local process pool (default) or a Ray cluster",
    )
    run.add_argument(
        "--address",
        default=None,
        help="Ray cluster address, e.g. auto (default: $RAY_ADDRESS, else a new local Ray)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at a time (default: one per GPU, else one per two CPU cores; "
        "Ray: as many as the cluster fits)",
    )
    store_argument(run)
    run.add_argument("--rerun", action="store_true", help="run finished configs again")
    run.add_argument(
        "--export",
        metavar="PATH",
        default=None,
        help="write the sweep's runs to this Parquet file when it ends, e.g. "
        "cached_runs/NAME.parquet",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    sweep.set_defaults(func=_cmd_sweep)
