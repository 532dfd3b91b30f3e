"""`covnoise train`: one flag per RunConfig field, one run in this process, a summary."""

from __future__ import annotations

import argparse
import decimal
import json
import sys
import types
import typing
from dataclasses import fields
from typing import Any

from covnoise.cli.common import EXIT_DIVERGED, EXIT_FAILED, EXIT_OK, bad, store_argument
from covnoise.config import ConfigError, RunConfig, field_info
from covnoise.fields import MAX_INT


def _field_type(annotation: Any) -> type:
    """The scalar type behind an annotation such as 'int | None'."""
    hint = typing.get_type_hints(RunConfig)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    return hint


def integer(text: str) -> int:
    """An integer flag's value; whole numbers in float notation (1e6, 2.0e3) are accepted, so
    a large value reaches validation and its bound rather than 'invalid int value'."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if number.adjusted() > 30:  # past every bound; int() of it could take long
        raise argparse.ArgumentTypeError(f"{text} is too large; integers here are <= {MAX_INT}")
    return int(number)


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (`--batch-size` for batch_size …), defaults from RunConfig."""
    defaults = RunConfig()
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "dataset_options":
            parser.add_argument(
                "--dataset-option",
                dest="dataset_options",
                action="append",
                type=_option,
                default=None,
                metavar="KEY=VALUE",
                help=field_info(f.name).help,
            )
            continue
        kind = _field_type(f.name)
        default = getattr(defaults, f.name)
        info = field_info(f.name)
        help_text = info.help + (f": {', '.join(info.choices)}" if info.choices else "")
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if kind is bool:  # --drop-last / --no-drop-last
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{help_text} (default: {'on' if default else 'off'})",
            )
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=integer if kind is int else kind,
            default=None,
            help=f"{help_text} (default: {default})",
        )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> RunConfig:
    """The validated RunConfig named by the parsed flags (unset flags keep their defaults)."""
    values: dict[str, Any] = {}
    for f in fields(RunConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = dict(v) if f.name == "dataset_options" else v
    if values.get("stats_rows") == 0:
        values["stats_rows"] = None
    if "steps" in values:
        values.setdefault("epochs", None)
    values.update(overrides)
    return RunConfig.from_dict(values)


# --------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from covnoise.core.train import run
    from covnoise.runs.checks import check_runnable

    config = config_from_args(args)
    check_runnable(config)
    summary: dict[str, Any] = {}

    def run_fn(cfg: RunConfig, emit: Any, should_stop: Any = None) -> dict[str, Any]:
        def both(event: dict[str, Any]) -> None:
            if emit is not None:
                emit(event)
            if args.json:
                print(json.dumps(event), flush=True)

        summary.update(run(cfg, emit=both, should_stop=should_stop, progress=not args.json))
        return summary

    if args.no_store:
        run_fn(config, None)
    elif (code := _train_into_store(args, config, run_fn, summary)) is not None:
        return code
    if not args.json:
        _print_summary(summary)
    return EXIT_DIVERGED if summary["status"] == "diverged" else 0


def _train_into_store(
    args: argparse.Namespace, config: RunConfig, run_fn: Any, summary: dict[str, Any]
) -> int | None:
    """Run in this process, recorded in the store like an engine's run (so the app shows it);
    an exit code when it does not run (already stored, or running elsewhere)."""
    import os
    import socket

    from covnoise.core.train import load_data
    from covnoise.runs import RunStore, StoreError
    from covnoise.runs.engine.worker import execute
    from covnoise.runs.schema import COMPLETED

    try:
        store = RunStore(args.store, check=True)
    except (StoreError, OSError) as exc:
        return bad(f"store: {args.store or 'the default store'}: {exc}")
    with store:
        if args.rerun and (store.get_run(config.run_id()) or {}).get("status") in COMPLETED:
            load_data(config)  # a rerun replaces the stored run: bad files must not cost it
        owner = f"cli:{socket.gethostname()}:{os.getpid()}"
        run_id, found = store.begin_here(config, owner, os.getpid(), rerun=args.rerun)
        path = store.path
    if found in COMPLETED:
        print(f"run {run_id} is already in the store ({found}); --rerun trains it again")
        return EXIT_OK
    if found is not None:
        return bad(f"store: run {run_id} is {found} there already; --no-store trains a copy")
    from covnoise.data import DatasetError

    # bad input found before training (a data set's files, a size) is one line and exit 2,
    # and leaves no record; a run that fails while training stays in the store as failed
    status = execute(str(path), run_id, run_fn, passthrough=(ConfigError, DatasetError))
    if not summary:  # the run function raised: the store holds the failure
        with RunStore(path) as store:
            message = (store.get_run(run_id) or {}).get("message")
        print(f"error: run {run_id} {status}: {message}", file=sys.stderr)
        return EXIT_FAILED
    print(f"stored as run {run_id} in {path}", file=sys.stderr)
    return None


def _print_summary(summary: dict[str, Any]) -> None:
    note = f" ({summary['message']})" if summary["message"] else ""
    print(f"status: {summary['status']}{note}")
    print(
        f"steps: {summary['steps']}  examples seen: {summary['examples_seen']}  "
        f"wall time: {summary['wall_time']:.1f} s  device: {summary['device']}"
    )
    for key, value in summary["final"].items():
        print(f"  {key:>24s}  {value:.6g}")


def add_parser(sub: Any) -> None:
    """Register `train`."""
    train = sub.add_parser("train", help="train one run and print its metrics")
    add_train_arguments(train)
    train.add_argument("--json", action="store_true", help="print one JSON event per line")
    store_argument(train)
    train.add_argument(
        "--no-store", action="store_true", help="do not record the run in the run store"
    )
    train.add_argument(
        "--rerun", action="store_true", help="train again a config the store holds as finished"
    )
    train.set_defaults(func=_cmd_train)
