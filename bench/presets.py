"""The Train page's cost estimate against the wall time of each teaching preset, on this machine.

    python -m bench.presets [--presets quick,gap,full-noise,trace-vs-fro] [--workers N]

Runs each preset's grid (the form's defaults plus the preset, exactly what Train launches)
through the local engine into a fresh store, one preset after the other, the way a new user
would (each after the engine has a started worker waiting, as it has while the app is idle),
and prints per preset: its runs, the estimate the page shows before launch (each setting
timed on this machine, its curvature counted from earlier runs of it — the cached runs
shipped with the app and this store's — and scaled to the runs this store has finished so
far), the estimate of a fresh install (the cached runs only), the measured time from
submit to the last run's end, and estimate / actual. The target is within a factor of 1.5
(0.67–1.5).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

PRESET_ORDER = ("quick", "gap", "full-noise", "trace-vs-fro")


def main(argv: list[str] | None = None) -> int:
    from streamlit.logger import get_logger

    get_logger("streamlit.runtime.caching.cache_data_api").setLevel("ERROR")  # bare-mode note

    from covnoise.runs.engine import make_engine
    from covnoise.ui import presets, runsdata, trainform
    from covnoise.ui.cost import cost_summary, to_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESET_ORDER))
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2))
    args = parser.parse_args(argv)
    defaults = {p.name: p.default for p in trainform.TRAIN_PARAMS}
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {args.workers} worker(s), local engine, fresh store"
    )
    print(
        "| preset | runs (new of all) | estimate (calibrated on runs so far) "
        "| estimate (fresh install) | actual | estimate / actual |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine("local", Path(tmp) / "runs.sqlite", workers=args.workers)
        try:
            for name in args.presets.split(","):
                warm = _wait_for_spare(engine)  # the app's engine waits with one, started
                configs = trainform.form_configs({**defaults, **presets.PRESETS[name].values})
                # what the page sees: the store's runs and the cached runs shipped with the app
                past = runsdata.all_runs(engine.store)
                # what the page estimates: the runs not already in the store
                new = to_run(configs, engine.store.statuses([c.run_id() for c in configs]))

                def metrics_of(runs):
                    return runsdata.metrics_for(engine.store, runs)

                est = cost_summary(new, past, args.workers, warm=warm, metrics_of=metrics_of)
                fresh = cost_summary(
                    new, runsdata.cached_runs()[0], args.workers, warm=warm, metrics_of=metrics_of
                )
                t0 = time.monotonic()
                ids = engine.submit_many(configs)
                while True:
                    states = engine.wait(ids, timeout=5)
                    if all(
                        s in ("finished", "diverged", "failed", "cancelled")
                        for s in states.values()
                    ):
                        break
                actual = time.monotonic() - t0
                bad = {i: s for i, s in states.items() if s not in ("finished", "diverged")}
                note = f" ({len(bad)} not finished)" if bad else ""
                print(
                    f"| {name} | {len(new)} of {len(configs)} | {est['seconds']:.1f} s "
                    f"({est['calibrated_on']} runs) | {fresh['seconds']:.1f} s | "
                    f"{actual:.1f} s{note} | {est['seconds'] / actual:.2f} |",
                    flush=True,
                )
        finally:
            engine.close()
            engine.store.close()
    return 0


def _wait_for_spare(engine, timeout: float = 60.0) -> int:
    """Wait (as a user reading the Train page does) until the engine has a started, idle
    worker; returns how many it has."""
    end = time.monotonic() + timeout
    while (warm := int(engine.info().get("warm_spares") or 0)) < 1 and time.monotonic() < end:
        time.sleep(0.2)
    return warm


if __name__ == "__main__":
    raise SystemExit(main())
