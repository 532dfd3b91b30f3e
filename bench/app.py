"""App speed: time to a page's first complete render with the shipped cached runs, and the
cost of one Live update while 8 runs are going.

    python -m bench.app                 # both parts
    python -m bench.app --pages         # page renders only
    python -m bench.app --live          # Live updates only

Pages are rendered with streamlit's AppTest in this process on a fresh temporary store: the
first render (imports, engine start) is reported once, then every page is opened in a new
session (the server already warm, as for a second visitor) several times; the target is
≤ 2 s per page. For Live, 8 runs of a synthetic run function (no training, so the 8 runs
do not compete for the CPU with what is measured) write metric rows through the local engine
at the rate of a fast real run; one update is the incremental read of new rows
(LiveMetrics.update), the figure and its JSON, and it is printed side by side with a full
re-read of every row, with their ratio. Last, the live figure of 8 long runs is built with
traces thinned to 400 points and with every point, side by side (time and payload size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "pages/home.py",
    "pages/train.py",
    "pages/live.py",
    "pages/compare.py",
    "pages/noise_vs_generalisation.py",
    "pages/findings.py",
    "pages/quadratic.py",
    "pages/geometry.py",
)
METRIC_NAMES = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "val_loss",
    "val_acc",
    "gen_gap",
    "lr",
    "sharpness",
    "noise_fro",
    "noise_trace",
    "noise_trace_hsigma",
    "grad_norm",
    "dist_init",
)


def synthetic_run(config, emit, should_stop=None, progress=False):
    """A run function for the benchmark: emits a metric event (14 metrics) every 0.1 s for
    `config.steps` steps, as a fast real run would, without training."""
    import math

    steps = config.steps or 600
    emit(
        {
            "event": "start",
            "total_steps": steps,
            "probe_size": config.probe_size,
            "device": "synthetic",
            "versions": {},
            "code_revision": "bench",
        }
    )
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if should_stop is not None and should_stop():
            return {"status": "cancelled", "steps": step}
        values = {
            name: 1.0 + math.exp(-step / 100) + 0.01 * i for i, name in enumerate(METRIC_NAMES)
        }
        values["lr"] = config.lr
        emit(
            {
                "event": "metric",
                "step": step,
                "epoch": step / 10,
                "examples_seen": step * 128,
                "wall_time": time.perf_counter() - t0,
                "metrics": values,
            }
        )
        time.sleep(0.1)
    return {"status": "finished", "steps": steps, "final": values}


def _app_test():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def bench_pages(repeats: int) -> None:
    import streamlit as st

    t = time.perf_counter()
    at = _app_test().run()
    cold = time.perf_counter() - t
    print(f"first render of the app in a fresh process (imports, engine start): {cold:.2f} s")
    print(f"{'page':<36} {'first open':>11} {'median':>8} {'max':>8}   (s, {repeats} opens)")
    worst = 0.0
    for page in PAGES:
        times = []
        for _ in range(repeats):
            at = _app_test().run()
            t = time.perf_counter()
            at.switch_page(page).run()
            times.append(time.perf_counter() - t)
            if at.exception:
                print(f"  {page}: exception {at.exception[0].value}")
        worst = max(worst, max(times))
        print(f"{page:<36} {times[0]:>11.2f} {statistics.median(times):>8.2f} {max(times):>8.2f}")
    print(f"slowest page open: {worst:.2f} s (target 2 s) — {'met' if worst <= 2 else 'NOT met'}")
    st.cache_resource.clear()


def bench_live(rounds: int) -> None:
    from covnoise import results, viz
    from covnoise.config import RunConfig
    from covnoise.runs.engine import make_engine
    from covnoise.ui import formatting, livemetrics

    store_path = os.environ["COVNOISE_STORE"]
    engine = make_engine("local", store_path, workers=8, run_fn="bench.app:synthetic_run")
    try:
        configs = [
            RunConfig(dataset="digits", steps=100_000, epochs=None, seed=s, lr=0.1)
            for s in range(8)
        ]
        ids = engine.submit_many(configs)
        store = engine.store
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until every run has written some history
            counts = store.metrics(ids).groupby("run_id").size()
            if len(counts) == 8 and counts.min() >= 50 * len(METRIC_NAMES):
                break
            time.sleep(0.5)
        runs = store.runs(run_ids=ids)
        labels = formatting.run_labels(runs).to_dict()
        live = livemetrics.LiveMetrics()
        live.update(store, ids)
        inc, full, fig_t, rows = [], [], [], []
        for _ in range(rounds):
            time.sleep(0.5)
            t = time.perf_counter()
            frame = live.update(store, ids)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            reread = store.metrics(ids)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            viz.live_figure(frame, labels, x="step", x_label=results.X_AXES["step"]).to_json()
            fig_t.append(time.perf_counter() - t)
            inc.append(t_read)
            rows.append(len(frame))
            assert len(reread) >= len(frame) - 200  # the same rows (more may have arrived)
        running = int((store.runs(run_ids=ids)["status"] == "running").sum())
        ms = 1000.0
        print(
            f"Live update with {running} runs going ({rows[0]}–{rows[-1]} metric rows, "
            f"{rounds} updates, 0.5 s apart):"
        )
        print(f"  read new rows (metrics_since)  median {statistics.median(inc) * ms:7.1f} ms")
        print(
            f"  re-read all rows (metrics)     median {statistics.median(full) * ms:7.1f} ms"
            f"   ratio full/incremental {statistics.median(full) / statistics.median(inc):.1f}×"
        )
        print(f"  six-panel figure + JSON        median {statistics.median(fig_t) * ms:7.1f} ms")
        total = [a + b for a, b in zip(inc, fig_t, strict=True)]
        print(
            f"  one update (read + figure)     median {statistics.median(total) * ms:7.1f} ms,"
            f" max {max(total) * ms:.1f} ms"
        )
    finally:
        engine.close(cancel_running=True)
        engine.store.close()


def bench_thinning(evaluations: int = 3000, repeats: int = 3) -> None:
    """The live figure of 8 long runs, thinned to 400 points per trace vs every point: the
    time to build it here and the size of what the browser must draw."""
    import numpy as np
    import pandas as pd

    from covnoise import viz

    steps = np.arange(evaluations)
    frames = [
        pd.DataFrame(
            {
                "run_id": f"r{r}",
                "step": steps,
                "name": name,
                "value": 1.0 + np.exp(-steps / 500.0) + 0.01 * i,
            }
        )
        for r in range(8)
        for i, name in enumerate(METRIC_NAMES)
    ]
    metrics = pd.concat(frames, ignore_index=True)
    labels = {f"r{r}": f"run {r}" for r in range(8)}

    def timed(max_points):
        best, size = float("inf"), 0
        for _ in range(repeats):
            t = time.perf_counter()
            size = len(viz.live_figure(metrics, labels, max_points=max_points).to_json())
            best = min(best, time.perf_counter() - t)
        return best, size

    (thin, thin_size), (every, every_size) = timed(400), timed(None)
    print(
        f"Live figure of 8 runs × {evaluations} evaluations (best of {repeats}), ≤ 400 points "
        f"per trace vs every point:\n  build + JSON {thin * 1000:.0f} ms vs {every * 1000:.0f} ms"
        f" (ratio {every / thin:.1f}×); payload sent to the browser {thin_size / 1e6:.2f} MB vs "
        f"{every_size / 1e6:.2f} MB (ratio {every_size / thin_size:.1f}×)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pages", action="store_true", help="page renders only")
    parser.add_argument("--live", action="store_true", help="Live updates only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    both = not (args.pages or args.live)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COVNOISE_STORE"] = str(Path(tmp) / "runs.sqlite")
        if args.pages or both:
            bench_pages(args.repeats)
        if args.live or both:
            bench_live(args.rounds)
            bench_thinning()
    return 0


if __name__ == "__main__":
    sys.exit(main())
