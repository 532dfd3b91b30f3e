"""Response times of the theory pages and their library calls (`python -m bench.theory`).

Runs each page headless with Streamlit's AppTest: the first run (imports of covnoise, scipy,
pandas and plotly included), then one
re-run per control change, each changing one control from the previous state, then a re-run
of an earlier state (served from st.cache_data). Also times the library calls the pages make.
Prints wall and CPU seconds and the ratio of wall time to the 1 s budget per control change;
the load average is printed too, since the wall time of a shared machine depends on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 1.0

# (label, widget kind, key, new value), applied in order
QUADRATIC_CHANGES = [
    ("step size α 1.5 → 1.2", "number_input", "quadratic.alpha", 1.2),
    ("rotation 1 → 0.5", "slider", "quadratic.rotation", 0.5),
    ("P 20 → 40", "slider", "quadratic.P", 40),
    ("P 40 → 64", "slider", "quadratic.P", 64),
    ("spectrum → two-cluster", "selectbox", "quadratic.spectrum", "two-cluster"),
    ("steps T 200 → 1000", "slider", "quadratic.T", 1000),
    ("chains 500 → 4000", "slider", "quadratic.chains", 4000),
    ("multiplier s 1 → 2", "number_input", "quadratic.s", 2.0),
    ("step size α → 2.5 (unstable)", "number_input", "quadratic.alpha", 2.5),
    ("step size α → 1.2 (cached)", "number_input", "quadratic.alpha", 1.2),
]
GEOMETRY_CHANGES = [
    ("isotropic σ 0.1 → 0.3", "slider", "geometry.sigma", 0.3),
    ("isotropic → same trace", "radio", "geometry.iso", "trace"),
    ("correlation ρ 0.8 → 0.5", "slider", "geometry.rho", 0.5),
    ("samples 1000 → 5000", "slider", "geometry.samples", 5000),
    ("step size α 0.5 → 0.8", "slider", "geometry.alpha", 0.8),
    ("samples 5000 → 1000", "slider", "geometry.samples", 1000),
]


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _check(at: AppTest) -> None:
    if at.exception:
        raise RuntimeError(f"page raised: {[e.value for e in at.exception]}")


def page_rows(page: str, changes: list) -> list[tuple[str, float, float]]:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120)
    rows = [(f"{page}: first run", *_timed(at.run))]
    _check(at)
    for label, kind, key, value in changes:
        widget = getattr(at, kind)(key=key)
        rows.append((f"{page}: {label}", *_timed(lambda w=widget, v=value: w.set_value(v).run())))
        _check(at)
    return rows


def library_rows(repeats: int) -> list[tuple[str, float, float]]:
    from covnoise.theory import (  # imported here so the first page run pays for it
        geometry,
        quadratic_report,
    )

    cases = [
        (
            "quadratic_report.report (defaults)",
            lambda: quadratic_report.report(quadratic_report.QuadraticSettings()),
        ),
        (
            "quadratic_report.report (P=64, T=1000, budgeted chains)",
            lambda: quadratic_report.report(
                quadratic_report.QuadraticSettings(
                    P=64, T=1000, n_chains=quadratic_report.affordable_chains(64, 1000, 4000)
                )
            ),
        ),
        (
            "quadratic_report.report (exact only, P=64, T=1000)",
            lambda: quadratic_report.report(
                quadratic_report.QuadraticSettings(P=64, T=1000, n_chains=0)
            ),
        ),
        (
            "geometry clouds + frames (1000 samples)",
            lambda: geometry.geometry_frames(geometry.one_step_clouds(geometry.GeometrySettings())),
        ),
        (
            "geometry clouds + frames (5000 samples)",
            lambda: geometry.geometry_frames(
                geometry.one_step_clouds(geometry.GeometrySettings(n_samples=5000))
            ),
        ),
    ]
    rows = []
    for label, fn in cases:
        fn()  # warm-up
        times = [_timed(fn) for _ in range(repeats)]
        rows.append(
            (
                f"{label}, median of {repeats}",
                statistics.median(t[0] for t in times),
                statistics.median(t[1] for t in times),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each library call")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"CPU cores: {os.cpu_count()}, load average (1/5/15 min): {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f}"
    )
    rows = page_rows("quadratic.py", QUADRATIC_CHANGES)
    rows += page_rows("geometry.py", GEOMETRY_CHANGES)
    rows += library_rows(args.repeats)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'wall s':>7}  {'CPU s':>7}  {'wall/1s':>7}")
    for label, wall, cpu in rows:
        print(f"{label:<{width}}  {wall:7.3f}  {cpu:7.3f}  {wall / BUDGET_S:7.2f}")
    changes = [r for r in rows if ": " in r[0] and "first run" not in r[0]]
    worst = max(changes, key=lambda r: r[1])
    print(f"slowest control change: {worst[0]} ({worst[1]:.3f} s wall, {worst[2]:.3f} s CPU)")


if __name__ == "__main__":
    main()
