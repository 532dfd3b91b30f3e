"""The worker process of the local engine: ``python -m covnoise.runs.engine.worker``.

Started by the engine in a fresh interpreter (nothing forked from the multi-threaded app, and
unlike multiprocessing's spawn it never re-imports the parent's ``__main__``, which under
Streamlit is the app script). It imports the run function first, then waits for a line on
stdin naming a run, so the engine keeps warm workers ready. For each run it writes events
straight into the store, heartbeats every second from a thread (looking for a cancel request
five times a second), stops when the store says the run was cancelled, and records the final
status. A run builds its own model, data and generators, so runs do not share state. After
a run that finished, the worker writes one line on stdout and waits for the next run; after
a failure, a cancel or `--max-runs` runs it exits, so the engine starts a clean interpreter.
EOF on stdin (the engine went away, or released the worker) makes it exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

HEARTBEAT_SECONDS = 1.0
#: Seconds between looks at the store for a cancel request.
CANCEL_POLL_SECONDS = 0.2


def _set_threads(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    try:
        import torch
    except ImportError:  # the run function may not need torch
        return
    torch.set_num_threads(threads)


def _warm_up() -> None:
    """Import what a first run would import lazily, so a warm worker does not pay for it once
    a run arrives: the data sets' loaders and the training step (the run function's module
    usually imports them already; the embedded data sets need neither scikit-learn nor the
    compiler stack)."""
    try:
        import covnoise.core.step  # noqa: F401
        import covnoise.data.load  # noqa: F401
    except Exception:  # noqa: BLE001 - only a speed-up
        pass


class _Heartbeat(threading.Thread):
    """Writes a heartbeat every second and turns a cancel request into a stop flag."""

    def __init__(self, store, run_id: str, stop: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.store, self.run_id, self.stop = store, run_id, stop
        self.done = threading.Event()

    def run(self) -> None:
        last_beat = time.monotonic()
        while not self.done.wait(CANCEL_POLL_SECONDS):
            try:
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    stop = self.store.heartbeat(self.run_id)
                else:
                    stop = self.store.stop_requested(self.run_id)
                if stop:
                    self.stop.set()
            except Exception:  # noqa: BLE001 - a missed look is retried next time
                pass


def execute(
    store_path: str,
    run_id: str,
    run_fn: Any = None,
    import_error: BaseException | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
) -> str:
    """Run `run_id` from the store at `store_path` with the run function; returns its status.
    An exception of a `passthrough` type (bad input found before training, for a caller that
    reports it itself) removes the run's record and propagates."""
    from covnoise.config import RunConfig
    from covnoise.runs.schema import TERMINAL
    from covnoise.runs.store import RunStore

    store = RunStore(store_path)
    store.set_worker(run_id, os.getpid(), socket.gethostname())
    stop = threading.Event()
    beat = _Heartbeat(store, run_id, stop)
    beat.start()

    def emit(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "metric":
            store.add_metric_event(run_id, event)
        elif kind == "start":
            store.record_start(run_id, event)

    try:
        if import_error is not None:
            raise import_error
        record = store.get_run(run_id)
        if record is None:
            return "missing"
        config = RunConfig.from_stored(record["config"])
        summary = run_fn(config, emit=emit, should_stop=stop.is_set)
        summary = summary if isinstance(summary, dict) else {}
        status = summary.get("status", "finished")
        if status not in TERMINAL:
            status = "finished"
        store.finish(run_id, status, message=summary.get("message"), summary=summary)
        return status
    except passthrough:
        store.delete([run_id])
        raise
    except KeyboardInterrupt:  # Ctrl-C in a process that runs a run itself (`train`)
        store.finish(run_id, "cancelled", message="interrupted (Ctrl-C)")
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded in the store
        message = f"{type(exc).__name__}: {exc}"
        store.finish(run_id, "failed", message=message, traceback=traceback.format_exc())
        return "failed"
    finally:
        beat.done.set()
        beat.join(timeout=5)
        store.close()


def _next_order() -> dict[str, Any] | None:
    """The next run order from the engine, or None at end of input."""
    line = sys.stdin.readline()
    if not line.strip():
        return None
    return json.loads(line)


def _say_done(run_id: str, status: str) -> bool:
    """Tell the engine this worker is free again; False if the engine is gone."""
    try:
        sys.stdout.write(json.dumps({"done": run_id, "status": status}) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covnoise.runs.engine.worker")
    parser.add_argument("--store", required=True)
    parser.add_argument("--run-fn", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-runs", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when a run stops

    _set_threads(max(1, args.threads))
    from covnoise.runs.engine.base import import_run_fn

    run_fn, import_error = None, None
    try:
        run_fn = import_run_fn(args.run_fn)
    except Exception as exc:  # noqa: BLE001 - reported against the run when one arrives
        import_error = exc
    else:
        _warm_up()

    runs = 0
    while (order := _next_order()) is not None:
        if runs == 0 and order.get("gpu") is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(order["gpu"])
        status = execute(args.store, order["run_id"], run_fn, import_error)
        runs += 1
        if status != "finished" or runs >= args.max_runs:
            break
        if not _say_done(order["run_id"], status):
            break
    # The results are in the store and its connection closed: skip the interpreter's slow
    # teardown (torch) so the engine's slot frees up at once.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
