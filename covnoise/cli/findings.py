"""`covnoise findings [--write PATH | --check PATH]`: the study's findings from the cached runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from covnoise.cli.common import EXIT_FAILED, EXIT_OK, bad


def _figures(found: list) -> dict[str, str]:
    """Relative path → SVG text of each study's claim-4 design figure."""
    from covnoise.results.markdown import figure_path
    from covnoise.viz.findings import design_svg

    return {
        figure_path(f.study.name): design_svg(
            f.designs, f"{f.study.name}: equal trace vs equal Frobenius (mean ± seed std)"
        )
        for f in found
        if len(f.designs)
    }


def _stale_figures(figures: dict[str, str], root: Path) -> list[str]:
    out = []
    for rel, svg in figures.items():
        path = root / rel
        if not path.is_file() or path.read_text() != svg:
            out.append(rel)
    return out


def _cmd_findings(args: argparse.Namespace) -> int:
    from covnoise.results.findings import all_findings
    from covnoise.results.markdown import render, replace_block
    from covnoise.runs import read_cached_runs

    if not Path(args.runs).is_dir():
        return bad(f"runs: {args.runs} is not a folder of cached runs (*.parquet)")
    target = args.write or args.check
    text = None
    if target is not None:
        try:
            text = Path(target).read_text()
        except OSError as exc:
            which = "write" if args.write else "check"
            return bad(f"{which}: cannot read {target} ({exc.strerror or exc})")
    runs, metrics = read_cached_runs(args.runs)
    found = all_findings(runs, metrics)
    block = render(found)
    if target is None or text is None:
        print(block, end="")
        return EXIT_OK
    try:
        new = replace_block(text, block)
    except ValueError as exc:
        return bad(f"{'write' if args.write else 'check'}: {target}: {exc}")
    figures, root = _figures(found), Path(target).resolve().parent
    if args.check:
        stale = _stale_figures(figures, root)
        if new != text or stale:
            print(
                f"{target}: the generated findings"
                + (f" (figures {', '.join(stale)})" if stale else "")
                + f" differ from the cached runs; run covnoise findings --write {target}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK
    try:
        Path(target).write_text(new)
        for rel, svg in figures.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(svg)
    except OSError as exc:
        return bad(f"write: cannot write {target} ({exc.strerror or exc})")
    print(f"wrote the findings of {args.runs} to {target}")
    return EXIT_OK


def add_parser(sub: Any) -> None:
    """Register `findings`."""
    p = sub.add_parser(
        "findings",
        help="the claims' verdicts computed from the cached runs",
        description="Print the findings tables, or rewrite / check the "
        "generated part of FINDINGS.md.",
    )
    p.add_argument("--runs", default="cached_runs", help="folder of cached runs")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="rewrite the generated part of PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 when PATH's part is stale")
    p.set_defaults(func=_cmd_findings)
