"""`covnoise …` (or `python -m covnoise …`): train, data, runs, sweep, study, findings, demo.

Exit codes: 0 success, 2 bad input (one line naming the field and what is allowed),
3 a run that diverged (its summary is still printed), 1 any other failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from covnoise.cli import data, demo, findings, runs, study, sweep, train
from covnoise.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, Parser
from covnoise.config import ConfigError

SUBCOMMANDS = (train, data, runs, sweep, study, findings, demo)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = Parser(prog="covnoise", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        from covnoise.data import DatasetError

        if isinstance(exc, DatasetError):  # names the data set or path and what is allowed
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
