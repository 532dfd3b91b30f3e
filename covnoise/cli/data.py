"""`covnoise data ls|download`: the data sets, and downloads of the file-backed ones."""

from __future__ import annotations

import argparse
from typing import Any

from covnoise.cli.common import Parser


def _cmd_data_download(args: argparse.Namespace) -> int:
    from covnoise.data import default_data_dir, download

    data_dir = args.data_dir or str(default_data_dir())
    paths = download(args.name, data_dir, progress=True, variant=args.variant)
    for p in paths:
        print(p)
    return 0


def _cmd_data_ls(args: argparse.Namespace) -> int:
    from covnoise.data import DATASETS as SPECS

    for spec in SPECS.values():
        kind = "embedded" if spec.embedded else "file-backed"
        print(f"{spec.name:14s} {kind:12s} {spec.description}")
    return 0


def add_parser(sub: Any) -> None:
    """Register `data ls` and `data download` (covnoise.data, and torch with it, is imported
    only when one of them runs, so building the parser stays cheap for every command)."""
    data = sub.add_parser("data", help="list data sets or download file-backed ones")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    dl = data_sub.add_parser("download", help="download a file-backed data set (needs internet)")
    dl.add_argument("name", help="mnist, fashion-mnist or cifar10 (mnist1d: writes its cache)")
    dl.add_argument(
        "--data-dir",
        default=None,
        help="where to put it (default: $COVNOISE_DATA_DIR or ~/.cache/covnoise)",
    )
    dl.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help="another published form of the files, e.g. binary for cifar10 "
        "(fixed-size records, read without pickle)",
    )
    dl.set_defaults(func=_cmd_data_download)
    data_sub.add_parser("ls", help="list the data sets").set_defaults(func=_cmd_data_ls)
