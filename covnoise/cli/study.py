"""`covnoise study run|show NAME`: run a study's sweeps into its cached file, or print them."""

from __future__ import annotations

import argparse
from typing import Any

from covnoise.cli.common import EXIT_OK


def _cmd_study(args: argparse.Namespace) -> int:
    from covnoise.results.study import ALL_STUDIES, run_study

    study = ALL_STUDIES[args.name]
    if args.study_command == "show":
        ratios = _cached_ratios(study)
        print(f"# {study.description}")
        for label, command in study.commands(ratios):
            print(f"# {label}")
            print(command)
        if study.matched_scales and ratios is None:
            print(
                "# equal Frobenius: isotropic and diag at s·r for s in "
                f"{', '.join(f'{s:g}' for s in study.matched_scales)}, r = ‖K_full‖_F/‖K‖_F "
                "from the pilot's runs (covnoise.results.calibration)"
            )
        return EXIT_OK
    output = args.to or study.output
    n = run_study(study, output, workers=args.workers, store=args.store)
    print(f"wrote {n} runs to {output}")
    return EXIT_OK


def _cached_ratios(study: Any) -> dict[str, float] | None:
    """The pilot ratios recorded in the study's cached file, or None (no file, no pilot)."""
    from pathlib import Path

    if not study.matched_scales or not Path(study.output).is_file():
        return None
    from covnoise.results.calibration import pilot_ratios
    from covnoise.results.tables import is_pilot
    from covnoise.runs import read_runs_parquet

    runs, metrics = read_runs_parquet(study.output)
    pilot = runs[is_pilot(runs)]
    return pilot_ratios(pilot, metrics) if len(pilot) else None


def add_parser(sub: Any) -> None:
    """Register `study run` and `study show`."""
    from covnoise.cli.common import Parser, store_argument
    from covnoise.results.study import ALL_STUDIES

    study = sub.add_parser("study", help="run or show the studies behind the cached runs")
    study_sub = study.add_subparsers(dest="study_command", required=True, parser_class=Parser)
    run = study_sub.add_parser("run", help="run a study's sweeps and export its cached runs")
    run.add_argument("name", choices=sorted(ALL_STUDIES))
    run.add_argument("--to", default=None, help="the Parquet file (default: the study's)")
    run.add_argument("--workers", type=int, default=None, help="runs at a time")
    store_argument(run)
    run.set_defaults(func=_cmd_study)
    show = study_sub.add_parser("show", help="print a study's equivalent sweep commands")
    show.add_argument("name", choices=sorted(ALL_STUDIES))
    show.set_defaults(func=_cmd_study)
