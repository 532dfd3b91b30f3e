"""Run store and engine speed: metric latency, store write throughput, engine overhead.

`python -m bench.engine [--json] [--quick] [--ray]`

All measured side by side in one process, on a scratch store in a temporary folder:

- latency: a worker started by the local engine emits metric events stamped with the wall
  clock; the driver polls `metrics_since` every 5 ms and records when each one becomes
  readable. Median and 95th percentile (target: median ≤ 0.5 s). With --ray the same
  through the Ray engine on a local two-CPU cluster.
- throughput: metric rows per second written (a) as one 10,000-row batch, (b) one
  transaction per evaluation event of 10 rows as a worker writes them, (c) the same from four
  processes at once (target ≥ 10,000 rows/s).
- queued run start: four tiny real runs queued at once on one worker slot; for every run
  after the first, the seconds from the previous run's end (its `ended_at` in the store) to
  the moment the run function is entered in the worker. Persistent workers (the default)
  against a fresh interpreter per run (`recycle_after=1`, the engine before persistent
  workers). Target: ≤ 1 s.
- overhead: a tiny real run (digits MLP, 30 steps) called in-process versus submitted to the
  local engine until the store says finished, with a warm persistent worker (default) and
  with a fresh interpreter for every run (spares=0, recycle_after=1), in interleaved rounds
  so that load drifts affect all three alike. Medians; the ratio and the difference in
  seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from bench.machine import describe_machine
from covnoise.config import RunConfig
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine

TINY = RunConfig(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    batch_size=64,
    small_batch=16,
    steps=30,
    epochs=None,
    eval_every=5,
    sharpness_every=0,
)
N_NAMES = 10


def latency_run(config, emit, should_stop=None, progress=False):
    """Run function for the latency benchmark: `steps` events, `eval_every` ms apart."""
    n, gap = config.steps, config.eval_every / 1000.0
    for i in range(n):
        if should_stop is not None and should_stop():
            return {"status": "cancelled"}
        metrics = {f"m{k}": float(k) for k in range(N_NAMES - 1)}
        metrics["emitted_at"] = time.time()
        emit(
            {
                "event": "metric",
                "step": i,
                "epoch": 0.0,
                "examples_seen": i,
                "wall_time": 0.0,
                "metrics": metrics,
            }
        )
        time.sleep(gap)
    return {"status": "finished"}


def _latency(engine, store: RunStore, n_events: int, gap_ms: int) -> list[float]:
    start_id = store.max_metric_id()
    rid = engine.submit(TINY.replace(steps=n_events, eval_every=gap_ms, seed=int(time.time())))
    seen: list[float] = []
    last = start_id
    deadline = time.monotonic() + 120 + n_events * gap_ms / 1000
    while len(seen) < n_events and time.monotonic() < deadline:
        rows = store.metrics_since(last, [rid])
        now = time.time()
        if len(rows):
            last = int(rows["id"].max())
            stamps = rows.loc[rows["name"] == "emitted_at", "value"]
            seen.extend(now - float(v) for v in stamps)
        time.sleep(0.005)
    engine.wait([rid], timeout=60)
    return seen


def _rows(n: int, step0: int = 0) -> list[tuple]:
    return [(step0 + i // N_NAMES, 0.0, i, 0.0, f"m{i % N_NAMES}", float(i)) for i in range(n)]


def _writer(path: str, seed: int, n_events: int, out) -> None:
    store = RunStore(path)
    rid, _ = store.submit(TINY.replace(seed=10_000 + seed))
    t = time.perf_counter()
    for e in range(n_events):
        store.add_metrics(rid, _rows(N_NAMES, e))
    out.put(time.perf_counter() - t)
    store.close()


def _throughput(folder: Path, n_events: int, procs: int = 4) -> dict[str, float]:
    path = folder / "throughput.sqlite"
    store = RunStore(path)
    rid, _ = store.submit(TINY.replace(seed=999))
    t = time.perf_counter()
    store.add_metrics(rid, _rows(10_000))
    batch = 10_000 / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in range(n_events):
        store.add_metrics(rid, _rows(N_NAMES, e))
    per_event = n_events * N_NAMES / (time.perf_counter() - t)
    store.close()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ps = [ctx.Process(target=_writer, args=(str(path), i, n_events, out)) for i in range(procs)]
    for p in ps:
        p.start()
    times = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    # rows written by all writers over the longest writer's time (a lower bound on the rate)
    concurrent = procs * n_events * N_NAMES / max(times)
    return {"batch_10000": batch, "per_event": per_event, f"per_event_{procs}_procs": concurrent}


def stamp_run(config, emit, should_stop=None, progress=False):
    """Run function: records the wall clock on entry, then the real training run."""
    from covnoise.core.train import run

    emit({"event": "metric", "step": -1, "metrics": {"entered_at": time.time()}})
    return run(config, emit=emit, should_stop=should_stop)


def _queued_start(folder: Path, runs: int = 4) -> dict[str, list[float]]:
    """Seconds from one queued run's end to the next one's entry, warm vs fresh workers."""
    out: dict[str, list[float]] = {}
    for label, recycle in (("persistent", 20), ("fresh_interpreter", 1)):
        store = RunStore(folder / f"queued-{label}.sqlite")
        with LocalEngine(
            store, workers=1, run_fn="bench.engine:stamp_run", recycle_after=recycle
        ) as engine:
            ids = engine.submit_many([TINY.replace(seed=500 + i) for i in range(runs)])
            engine.wait(ids, timeout=600)
        entered = store.metrics(ids, names=["entered_at"]).set_index("run_id")["value"]
        ended = {rid: store.get_run(rid)["ended_at"] for rid in ids}
        out[label] = [entered[b] - ended[a] for a, b in zip(ids, ids[1:], strict=False)]
        store.close()
    return out


def _overhead(folder: Path, repeats: int) -> dict[str, float]:
    """Interleaved rounds: in-process run, cold worker, warm worker (then the spare warms)."""
    from covnoise.core.train import run

    run(TINY)  # warm up imports and data in this process
    warm = LocalEngine(RunStore(folder / "warm.sqlite"), workers=1, spares=1, poll_interval=0.02)
    cold = LocalEngine(  # a fresh interpreter for every run: no spare, no reuse
        RunStore(folder / "cold.sqlite"), workers=1, spares=0, recycle_after=1, poll_interval=0.02
    )
    times: dict[str, list[float]] = {"in_process_s": [], "engine_cold_s": [], "engine_warm_s": []}
    for i in range(repeats):
        time.sleep(15)  # the warm engine's spare finishes its imports, as in an idle app
        cfg = TINY.replace(seed=100 + i)
        t = time.perf_counter()
        run(cfg)
        times["in_process_s"].append(time.perf_counter() - t)
        for label, engine in (("engine_cold_s", cold), ("engine_warm_s", warm)):
            t = time.perf_counter()
            rid = engine.submit(cfg)
            engine.wait([rid], timeout=300, poll=0.01)
            times[label].append(time.perf_counter() - t)
    for engine in (warm, cold):
        engine.close()
        engine.store.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer events and repeats")
    parser.add_argument("--ray", action="store_true", help="also measure Ray latency")
    args = parser.parse_args(argv)
    n_events, repeats = (100, 2) if args.quick else (300, 5)
    result: dict[str, object] = {"machine": describe_machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = RunStore(folder / "latency.sqlite")
        engine = LocalEngine(
            store, workers=1, run_fn="bench.engine.latency_run", poll_interval=0.05
        )
        lat = sorted(_latency(engine, store, n_events, gap_ms=20))
        engine.close()
        result["latency_local"] = _summary(lat, n_events)
        if args.ray:
            import ray

            from covnoise.runs.engine.ray_engine import RayEngine

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            rengine = RayEngine(store, run_fn="bench.engine.latency_run", poll_interval=0.05)
            lat = sorted(_latency(rengine, store, n_events, gap_ms=20))
            rengine.close()
            ray.shutdown()
            result["latency_ray"] = _summary(lat, n_events)
        store.close()
        result["throughput_rows_per_s"] = _throughput(folder, n_events * 10)
        result["queued_start_s"] = _queued_start(folder)
        result["overhead"] = _overhead(folder, repeats)
    ov = result["overhead"]
    ov["warm_ratio"] = ov["engine_warm_s"] / ov["in_process_s"]
    ov["cold_ratio"] = ov["engine_cold_s"] / ov["in_process_s"]
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(result["machine"])
    for key in ("latency_local", "latency_ray"):
        if key in result:
            r = result[key]
            print(
                f"{key:>14s}: median {r['median_s'] * 1e3:.1f} ms, p95 {r['p95_s'] * 1e3:.1f} ms"
                f" ({r['n']}/{r['expected']} events seen; target median <= 500 ms)"
            )
    for key, value in result["throughput_rows_per_s"].items():
        print(f"{'write ' + key:>26s}: {value:,.0f} metric rows/s (target >= 10,000)")
    for label, gaps in result["queued_start_s"].items():
        print(
            f"queued run start, {label}: median {statistics.median(gaps):.2f} s, "
            f"max {max(gaps):.2f} s (n={len(gaps)}; target <= 1 s)"
        )
    print(
        f"tiny run in-process {ov['in_process_s']:.2f} s | local engine, warm worker "
        f"{ov['engine_warm_s']:.2f} s ({ov['warm_ratio']:.2f}x, +"
        f"{ov['engine_warm_s'] - ov['in_process_s']:.2f} s) | cold worker "
        f"{ov['engine_cold_s']:.2f} s ({ov['cold_ratio']:.2f}x, +"
        f"{ov['engine_cold_s'] - ov['in_process_s']:.2f} s)"
    )
    return 0


def _summary(lat: list[float], expected: int) -> dict[str, float]:
    if not lat:
        return {"median_s": float("nan"), "p95_s": float("nan"), "n": 0, "expected": expected}
    return {
        "median_s": statistics.median(lat),
        "p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
        "n": len(lat),
        "expected": expected,
    }


if __name__ == "__main__":
    raise SystemExit(main())
