"""What every subcommand shares: exit codes, the one-line error parser, the store flag."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable

from covnoise.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def bad(message: str) -> int:
    """Print one error line and return the bad-input exit code."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a ConfigError raised by a subcommand into one line and exit code 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ConfigError as exc:
            return bad(str(exc))

    wrapped.__doc__ = fn.__doc__
    return wrapped


def store_argument(parser: argparse.ArgumentParser) -> None:
    """The --store flag of every command that reads or writes the run store."""
    parser.add_argument(
        "--store",
        default=None,
        metavar="PATH",
        help="run store file (default: $COVNOISE_STORE, else runs.sqlite in the user data "
        "folder, e.g. ~/.local/share/covnoise/)",
    )
