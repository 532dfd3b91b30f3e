"""`covnoise demo PATH`: rebuild the small fixed set of runs the app-page tests read."""

from __future__ import annotations

import argparse
from typing import Any

from covnoise.cli.common import EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from covnoise.results.demo import build_demo

    n = build_demo(args.path, args.workers)
    print(f"wrote {n} runs to {args.path}")
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """Register `demo`."""
    p = sub.add_parser("demo", help="rebuild the app tests' demo runs (tests/data)")
    p.add_argument("path", help="the Parquet file to write")
    p.add_argument("--workers", type=int, default=None, help="parallel runs")
    p.set_defaults(func=_cmd_demo)
