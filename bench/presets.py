"""The Train page's cost estimate against the wall time of each teaching preset, on this machine.

    python -m bench.presets [--presets quick,gap,full-noise,trace-vs-fro] [--workers N]

Runs each preset's grid (the form's defaults plus the preset, exactly what Train launches)
through the local engine into a fresh store, one preset after the other, the way a new user
would, and prints per preset: its runs, the estimate the page shows before launch calibrated
on the runs this store has finished so far (the first preset: the assumed rate of a fresh
install), the estimate of a fresh install, the measured time from submit to the last run's
end, and estimate / actual. The target is within a factor of 1.5 (0.67–1.5).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

PRESET_ORDER = ("quick", "gap", "full-noise", "trace-vs-fro")


def main(argv: list[str] | None = None) -> int:
    from streamlit.logger import get_logger

    get_logger("streamlit.runtime.caching.cache_data_api").setLevel("ERROR")  # bare-mode note

    from covnoise.results.labels import OWN_SOURCE
    from covnoise.runs.engine import make_engine
    from covnoise.ui import presets, trainform
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
                configs = trainform.form_configs({**defaults, **presets.PRESETS[name].values})
                past = engine.store.runs().assign(source=OWN_SOURCE)
                # what the page estimates: the runs not already in the store
                new = to_run(configs, engine.store.statuses([c.run_id() for c in configs]))
                est = cost_summary(new, past, args.workers)
                fresh = cost_summary(new, pd.DataFrame(), args.workers)
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
                    f"| {name} | {len(new)} of {len(configs)} | {est['seconds']:.0f} s "
                    f"({est['calibrated_on']} runs) | {fresh['seconds']:.0f} s | "
                    f"{actual:.0f} s{note} | {est['seconds'] / actual:.2f} |",
                    flush=True,
                )
        finally:
            engine.close()
            engine.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
