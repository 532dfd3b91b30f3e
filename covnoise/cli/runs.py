"""`covnoise runs ls|show|rm|cancel|export|import`: the run store from the shell.

Bad input exits 2 with one line naming the field: a store that cannot be used (not SQLite,
damaged pages found by SQLite's quick_check, a newer version, an impossible path), a file that
cannot be imported (over the size caps, not a runs file, holding queued or running runs) or an
export target that cannot be written; the store is left as it was. Text from the store is
printed with control characters escaped, and running runs whose process is gone are marked.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from covnoise.cli.common import EXIT_OK, bad, guard, store_argument
from covnoise.config import ConfigError, RunConfig
from covnoise.runs import STATUSES, TERMINAL, RunStore, StoreFormatError, read_runs_parquet
from covnoise.runs.parquet import FileTooLargeError
from covnoise.runs.store import ImportRefusedError, check_importable

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


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        action="append",
        default=None,
        metavar="STATUS",
        help=f"keep runs with this status ({', '.join(STATUSES)}); repeatable",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="keep runs whose config field has this value, e.g. noise=full; repeatable",
    )


#: C0 controls, DEL and C1 controls: printed as \xNN so stored text cannot drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: How a running run whose recorded process is gone is shown.
GONE = "running (process gone)"


def printable(value: Any) -> str:
    """`value` as text with control characters escaped as \\xNN (ANSI/OSC sequences inert)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _open_store(args: argparse.Namespace) -> RunStore:
    """The --store file, checked with SQLite's quick_check (StoreError says what is wrong)."""
    return RunStore(args.store, check=True)


def _store_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a SQLite error met mid-command (a page damaged after the check) as one line."""

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except sqlite3.Error as exc:
            text = " ".join(str(exc).split())
            return bad(printable(f"store: {args.store or 'the default store'}: {text}"))

    return wrapped


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


def _json_dict(text: Any) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------- runs sub-commands
def _cmd_ls(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        runs = _selected(store, args)
        gone = store.gone_runs()
    if runs.empty:
        print("no runs")
        return EXIT_OK
    runs["status"] = [
        GONE if r in gone else s for r, s in zip(runs["run_id"], runs["status"], strict=True)
    ]
    cols = [c for c in _LS_COLUMNS if c in runs.columns]
    table = runs[cols].rename(columns=_LS_COLUMNS)
    finals = [_json_dict(f) for f in runs["final"]]
    table["test_acc"] = [f.get("test_acc") for f in finals]
    for col in table.columns:
        if table[col].dtype == object:
            table[col] = [v if v is None else printable(v) for v in table[col]]
    print(table.to_string(index=False, na_rep="-"))
    print(
        f"{len(runs)} runs: "
        + ", ".join(f"{n} {s}" for s, n in Counter(runs["status"]).most_common())
    )
    return EXIT_OK


_SHOW_FIELDS = (
    "run_id",
    "name",
    "status",
    "message",
    "engine",
    "device",
    "code_revision",
    "total_steps",
    "steps",
    "examples_seen",
    "wall_time",
    "host",
    "pid",
)


def _print_record(rec: dict[str, Any]) -> None:
    """The run's fields, times, versions and config, text escaped."""
    for key in _SHOW_FIELDS:
        if rec.get(key) is not None:
            print(f"{key:>14s}: {printable(rec[key])}")
    for key in ("submitted_at", "started_at", "ended_at"):
        if rec.get(key):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec[key]))
            print(f"{key:>14s}: {stamp}")
    if rec.get("versions"):
        print(f"{'versions':>14s}: {json.dumps(rec['versions'], sort_keys=True)}")
    print("config:")
    for key, value in rec["config"].items():
        print(f"  {printable(key):>18s}: {json.dumps(value)}")


def _cmd_show(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        run_id = _resolve_ids(store, [args.run_id])[0]
        rec = store.get_run(run_id)
        metrics = store.metrics([run_id])
        gone = store.gone_runs()
    assert rec is not None
    if run_id in gone:
        rec["status"] = GONE
    _print_record(rec)
    if len(metrics):
        print(f"metrics ({len(metrics)} rows; last value of each):")
        last = metrics.groupby("name", sort=True).tail(1).sort_values("name")
        for row in last.itertuples(index=False):
            print(f"  {printable(row.name):>24s}: {row.value:.6g}  (step {row.step})")
    if args.traceback and rec.get("traceback"):
        for line in str(rec["traceback"]).splitlines():
            print(printable(line))
    return EXIT_OK


def _cmd_rm(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        ids = _resolve_ids(store, args.run_ids)
        active = [r for r, s in store.statuses(ids).items() if s not in TERMINAL]
        if active and not args.force:
            return bad(f"run_id: {active[0]} is queued or running; cancel it first or use --force")
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


def _export_target(to: str, store: RunStore) -> Path:
    """The --to file; ConfigError when it is empty, a folder or the store itself."""
    if not to.strip():
        raise ConfigError("to", "the path is empty; give a file such as runs.parquet")
    path = Path(to).expanduser()
    if path.is_dir():
        raise ConfigError("to", f"{printable(to)} is a folder; give a file such as runs.parquet")
    if path.resolve() == store.path.resolve():
        raise ConfigError("to", f"{printable(to)} is the store itself")
    return path


def _cmd_export(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        path = _export_target(args.to, store)
        runs = _selected(store, args)
        try:
            n = store.export_parquet(path, runs["run_id"].tolist())
        except OSError as exc:
            return bad(printable(f"to: cannot write {args.to} ({exc.strerror or exc})"))
        except FileTooLargeError as exc:
            return bad(printable(f"to: {exc}"))
    print(f"wrote {n} runs to {printable(args.to)}")
    return EXIT_OK


def _read_imports(paths: list[str]) -> list[tuple[str, Any, Any]]:
    """(path, runs, metrics) of each file, all read and checked before the store is touched."""
    loaded = []
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError("paths", f"{printable(path)} is not a file")
        try:
            runs, metrics = read_runs_parquet(path)
            check_importable(runs)
        except StoreFormatError as exc:
            raise ConfigError("paths", printable(f"{path}: {exc}")) from None
        loaded.append((path, runs, metrics))
    return loaded


def _cmd_import(args: argparse.Namespace) -> int:
    total = 0
    loaded = _read_imports(args.paths)  # bad files are refused before the store is opened
    with _open_store(args) as store:
        for path, runs, metrics in loaded:
            try:
                n = store.import_frames(runs, metrics, replace=args.replace)
            except (StoreFormatError, ImportRefusedError) as exc:
                return bad(printable(f"paths: {path}: {exc}"))
            total += n
            print(f"{printable(path)}: imported {n} runs")
    if len(args.paths) > 1:
        print(f"imported {total} runs")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register `runs` (ls, show, rm, cancel, export, import) on an argparse subparsers object."""
    runs = subparsers.add_parser("runs", help="list, show, remove, cancel, export, import runs")
    sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=type(runs))

    ls = sub.add_parser("ls", help="list the stored runs")
    store_argument(ls)
    _filter_arguments(ls)
    ls.set_defaults(func=guard(_store_errors(_cmd_ls)))

    show = sub.add_parser("show", help="show one run: record, config, last metric values")
    show.add_argument("run_id", help="a run id or a unique prefix of one")
    show.add_argument("--traceback", action="store_true", help="print the error traceback")
    store_argument(show)
    show.set_defaults(func=guard(_store_errors(_cmd_show)))

    rm = sub.add_parser("rm", help="remove runs and their metrics")
    rm.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    rm.add_argument("--force", action="store_true", help="also remove queued or running runs")
    store_argument(rm)
    rm.set_defaults(func=guard(_store_errors(_cmd_rm)))

    cancel = sub.add_parser("cancel", help="cancel queued or running runs")
    cancel.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    store_argument(cancel)
    cancel.set_defaults(func=guard(_store_errors(_cmd_cancel)))

    export = sub.add_parser("export", help="write runs and their metrics to a Parquet file")
    export.add_argument(
        "--to",
        required=True,
        metavar="PATH",
        help="the Parquet file, e.g. cached_runs/NAME.parquet",
    )
    export.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="only these runs")
    store_argument(export)
    _filter_arguments(export)
    export.set_defaults(func=guard(_store_errors(_cmd_export)))

    imp = sub.add_parser("import", help="add the runs of Parquet files to the store")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--replace", action="store_true", help="replace runs with the same id")
    store_argument(imp)
    imp.set_defaults(func=guard(_store_errors(_cmd_import)))
