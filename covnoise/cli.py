"""`python -m covnoise …`: train one run, manage data, runs and sweeps.

Exit codes: 0 success, 2 bad input (one line naming the field and what is allowed),
3 a run that diverged (its summary is still printed), 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import fields
from typing import Any

from covnoise.config import (
    DATASETS,
    DEVICES,
    LR_SCALINGS,
    MODELS,
    NOISES,
    SCHEDULES,
    ConfigError,
    RunConfig,
)

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3

_HELP: dict[str, str] = {
    "dataset": f"data set: {', '.join(DATASETS)}",
    "model": f"model: {', '.join(MODELS)}",
    "width": "hidden width (MLP/CNN); vgg/resnet use width/4 base channels",
    "depth": "number of linear layers of the MLP",
    "ghost_bn": "ghost batch-norm group size (0 = no normalisation)",
    "data_dir": "folder of file-backed data sets (mnist, fashion-mnist, cifar10)",
    "split_seed": "seed of the train/test split",
    "batch_size": "the large batch L",
    "small_batch": "the target small batch M whose gradient noise is imitated",
    "noise": f"noise structure: {', '.join(NOISES)}",
    "noise_scale": "the multiplier s of c = s(1/M - 1/L)",
    "stats_rows": "rows of the batch used to estimate diag(C) (0 = the whole batch)",
    "stats_every": "re-estimate diag(C) every k steps",
    "lr": "learning rate (before the scaling rule)",
    "lr_scaling": f"scale lr relative to M: {', '.join(LR_SCALINGS)}",
    "schedule": f"learning-rate schedule: {', '.join(SCHEDULES)}",
    "warmup_epochs": "warm-up length of warmup_cosine, in epochs",
    "step_every_epochs": "the step schedule multiplies lr by step_gamma this often",
    "epochs": "training length in epochs",
    "steps": "training length in steps (overrides epochs)",
    "eval_every": "steps between evaluations",
    "sharpness_every": "evaluations between sharpness/noise measurements (0 = never)",
    "probe_size": "examples in the fixed probe batch for curvature and noise statistics",
    "lanczos_iters": "Hessian-vector products allowed to Lanczos for the sharpness",
    "noise_samples": "draws of the noise for the Tr(H Sigma) estimate",
    "device": f"where to train: {', '.join(DEVICES)}",
    "name": "a label for the run (not part of its id)",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _field_type(annotation: Any) -> type:
    """The scalar type behind an annotation such as 'int | None'."""
    hint = typing.get_type_hints(RunConfig)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    return hint


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
                "--dataset-option", dest="dataset_options", action="append", type=_option,
                default=None, metavar="KEY=VALUE", help="a data-set option (repeatable)",
            )  # fmt: skip
            continue
        kind = _field_type(f.name)
        default = getattr(defaults, f.name)
        help_text = _HELP.get(f.name, f.name.replace("_", " "))
        parser.add_argument(
            flag, dest=f.name, type=kind, default=None,
            help=f"{help_text} (default: {default})",
        )  # fmt: skip


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
    from covnoise.train import run

    config = config_from_args(args)

    def emit(event: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(event), flush=True)

    summary = run(config, emit=emit, progress=not args.json)
    if not args.json:
        _print_summary(summary)
    return EXIT_DIVERGED if summary["status"] == "diverged" else 0


def _print_summary(summary: dict[str, Any]) -> None:
    note = f" ({summary['message']})" if summary["message"] else ""
    print(f"status: {summary['status']}{note}")
    print(f"steps: {summary['steps']}  examples seen: {summary['examples_seen']}  "
          f"wall time: {summary['wall_time']:.1f} s  device: {summary['device']}")
    for key, value in summary["final"].items():
        print(f"  {key:>24s}  {value:.6g}")


# --------------------------------------------------------------------------- data
def _cmd_data_download(args: argparse.Namespace) -> int:
    from covnoise.data import download

    paths = download(args.name, args.data_dir, progress=True)
    for p in paths:
        print(p)
    return 0


def _cmd_data_ls(args: argparse.Namespace) -> int:
    from covnoise.data import DATASETS as SPECS

    for spec in SPECS.values():
        kind = "embedded" if spec.embedded else "file-backed"
        print(f"{spec.name:14s} {kind:12s} {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m covnoise", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one run and print its metrics")
    add_train_arguments(train)
    train.add_argument("--json", action="store_true", help="print one JSON event per line")
    train.set_defaults(func=_cmd_train)

    data = sub.add_parser("data", help="list data sets or download file-backed ones")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    from covnoise.data import default_data_dir

    dl = data_sub.add_parser("download", help="download a file-backed data set (needs internet)")
    dl.add_argument("name", help="mnist, fashion-mnist or cifar10 (mnist1d: writes its cache)")
    dl.add_argument("--data-dir", default=str(default_data_dir()),
                    help="where to put it (default: $COVNOISE_DATA_DIR or ~/.cache/covnoise)")
    dl.set_defaults(func=_cmd_data_download)
    data_sub.add_parser("ls", help="list the data sets").set_defaults(func=_cmd_data_ls)

    try:
        from covnoise.runs_cli import add_runs_parser, add_sweep_parser
    except ImportError:  # the run store is an optional part of a partial checkout
        pass
    else:
        add_runs_parser(sub)
        add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        from covnoise.data import DatasetError

        if isinstance(exc, DatasetError):  # names the data set or path and what is allowed
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
