"""The local engine: a pool of worker processes on this machine, fed from the run store.

Runs execute in worker processes (``python -m covnoise.runs.engine.worker``: a fresh
interpreter, spawn semantics, so nothing is forked from the multi-threaded app), at most
`workers` at a time. Workers are persistent: a worker that finished a run takes the next
queued one at once, with torch and the run function already imported (each run still builds
its own model, data and generators), so a queued run starts in a fraction of a second
instead of an interpreter start. A worker is replaced by a fresh interpreter after a run
that failed or was cancelled, and after `recycle_after` runs. One warm spare is also kept
ready for the first run (started while a CPU core is free, so it never competes with running
workers). A monitor thread

- claims queued runs from the store (atomically, so several engines can share one store and
  runs still queued when an app or CLI restarts are picked up again),
- notices a worker that died (for example SIGKILL) within a fraction of a second and marks
  its run failed with the signal,
- turns a cancel request into a cooperative stop, and kills the worker after a grace period
  when it does not stop by itself,
- marks runs failed whose worker vanished while no engine was watching it (its process is
  gone, or its heartbeat is older than `stale_after`),
- adopts orphans: workers of this store that still run a run for an engine that died (or
  that this process detached) take up slots until they end, so a restarted engine never has
  more than `workers` runs going on the machine (they write their own final status).

Workers write their events straight into the store, so a running worker outlives an engine
that is closed with ``cancel_running=False`` and finishes its run. Starting, stopping and
inspecting one worker process is covnoise.runs.engine.process; this module schedules them.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from covnoise.runs.engine.base import DEFAULT_RUN_FN, Engine
from covnoise.runs.engine.monitor import reap_lost_runs
from covnoise.runs.engine.process import (
    WorkerProcess,
    detached_pids,
    kill_worker_of,
    orphan_workers,
    spawn_worker,
    still_running,
)
from covnoise.runs.store import RunStore

#: Seconds between looks for orphaned workers (only while a slot is free).
ADOPT_SCAN_SECONDS = 2.0


def detect_gpus() -> int:
    """Number of CUDA GPUs visible to torch (0 without torch or without GPUs)."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
        return 0


def default_workers(gpus: int | None = None) -> int:
    """One worker per GPU when there are GPUs, otherwise one per two CPU cores (at least 1)."""
    gpus = detect_gpus() if gpus is None else gpus
    if gpus > 0:
        return gpus
    return max(1, (os.cpu_count() or 1) // 2)


class LocalEngine(Engine):
    """Runs configs in worker processes on this machine (see the module docstring)."""

    kind = "local"

    def __init__(
        self,
        store: RunStore | str | Path | None = None,
        workers: int | None = None,
        run_fn: str = DEFAULT_RUN_FN,
        *,
        spares: int = 1,
        recycle_after: int = 20,
        gpus: int | None = None,
        threads: int | None = None,
        poll_interval: float = 0.2,
        cancel_grace: float = 5.0,
        stale_after: float = 30.0,
        python: str | None = None,
        start: bool = True,
    ) -> None:
        super().__init__(store, run_fn)
        self.gpus = detect_gpus() if gpus is None else gpus
        self.workers = max(1, workers if workers is not None else default_workers(self.gpus))
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self.spares = max(0, spares)
        self.recycle_after = max(1, recycle_after)
        self.poll_interval = poll_interval
        self.cancel_grace = cancel_grace
        self.stale_after = stale_after
        self.python = python or sys.executable
        self.owner = f"local:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.host = socket.gethostname()
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._running: dict[int, WorkerProcess] = {}  # slot -> worker
        self._idle: list[WorkerProcess] = []
        self._adopted: dict[int, Any] = {}  # pid -> psutil.Process of an orphaned worker
        self._adopt_scan = float("-inf")
        self._foreign_cancel: dict[str, float] = {}
        self._launching: str | None = None
        self._wake_event = threading.Event()
        self._stopping = threading.Event()
        self._last_scan = 0.0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the monitor thread (done by the constructor unless start=False)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="covnoise-engine", daemon=True)
        self._thread.start()

    def close(self, cancel_running: bool = True, timeout: float | None = None) -> None:
        """Stop scheduling. With `cancel_running`, running runs are cancelled and their
        workers stopped (killed after the grace period); otherwise they run on and finish.
        Queued runs stay queued for the next engine."""
        self._stopping.set()
        self._wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            idle, self._idle = self._idle, []
            running = dict(self._running)
        for w in idle:
            w.stop()  # an idle worker holds no run
        if cancel_running:
            self._cancel_all(running, timeout)
        else:
            with self._lock:
                for w in self._running.values():
                    w.detach()  # it finishes its run on its own
                self._running.clear()

    def _cancel_all(self, running: dict, timeout: float | None) -> None:
        """Ask every running worker to stop, escalate after the grace, reap them all."""
        for w in running.values():
            if w.run_id is not None and w.cancel_at is None:
                self.store.request_cancel(w.run_id)
                w.cancel_at = time.monotonic()
        deadline = time.monotonic() + (timeout if timeout is not None else self.cancel_grace + 10)
        while running and time.monotonic() < deadline:
            for slot, w in list(running.items()):
                rc = w.popen.poll()
                if rc is None:
                    w.escalate(self.cancel_grace)
                else:
                    self._reap(w, rc)
                    running.pop(slot)
                    with self._lock:
                        self._running.pop(slot, None)
            time.sleep(0.05)
        for w in running.values():  # still alive past the deadline
            w.popen.kill()
            self._reap(w, w.popen.wait())
        with self._lock:
            self._running.clear()

    # ------------------------------------------------------------------ control
    def cancel(self, run_id: str) -> str | None:
        """Cancel a queued run at once; ask a running one to stop (killed after the grace)."""
        status = self.store.request_cancel(run_id)
        if status == "running":
            now = time.monotonic()
            with self._lock:
                mine = [w for w in self._running.values() if w.run_id == run_id]
                for w in mine:
                    if w.cancel_at is None:
                        w.cancel_at = now
                if not mine:
                    self._foreign_cancel.setdefault(run_id, now)
            self._wake()
        return status

    def info(self) -> dict[str, Any]:
        """Engine status for the app: workers, busy slots, warm spares, last monitor error."""
        with self._lock:
            busy, warm, adopted = len(self._running), len(self._idle), len(self._adopted)
        alive = self._thread is not None and self._thread.is_alive()
        return {
            **super().info(),
            "workers": self.workers,
            "busy": busy,
            "warm_spares": warm,
            "adopted": adopted,
            "gpus": self.gpus,
            "threads_per_worker": self.threads,
            "monitor_alive": alive,
            "last_error": self.last_error,
        }

    def worker_pid(self, run_id: str) -> int | None:
        """Process id of the worker running `run_id` under this engine, if any."""
        with self._lock:
            for w in self._running.values():
                if w.run_id == run_id:
                    return w.popen.pid
        return None

    def _wake(self) -> None:
        self._wake_event.set()

    # ------------------------------------------------------------------ monitor thread
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the monitor must keep going
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._wake_event.wait(self.poll_interval)
            self._wake_event.clear()

    def _tick(self) -> None:
        with self._lock:
            running = list(self._running.items())
        for slot, w in running:
            rc = w.popen.poll()
            if rc is None:
                if w.finished_run():  # free again: it waits for the next run
                    with self._lock:
                        self._running.pop(slot, None)
                        w.run_id = w.slot = None
                        self._idle.insert(0, w)
                    continue
                w.escalate(self.cancel_grace)
                continue
            self._reap(w, rc)
            with self._lock:
                self._running.pop(slot, None)
        with self._lock:
            alive = []
            for w in self._idle:
                if w.popen.poll() is None:
                    alive.append(w)
                else:
                    w.close()
            self._idle = alive
        self._refresh_adopted()
        self._launch_queued()
        now = time.monotonic()
        if now - self._last_scan >= 1.0:
            self._last_scan = now
            self._scan_store()
        with self._lock:
            need = self.spares - len(self._idle)
            # A spare's imports take a few CPU-seconds: start one only while a core is free,
            # so it never slows down running workers on a small machine.
            busy = len(self._running) + len(self._adopted)
            free_cores = (os.cpu_count() or 1) - busy * self.threads
        if need > 0 and free_cores >= 1 and not self._stopping.is_set():
            for _ in range(need):
                w = self._spawn()
                with self._lock:
                    self._idle.append(w)

    def _free_slots(self) -> list[int]:
        """Slots without a run, less one for every adopted orphan."""
        with self._lock:
            free = [s for s in range(self.workers) if s not in self._running]
            room = self.workers - len(self._running) - len(self._adopted)
        return free[: max(0, room)]

    def _refresh_adopted(self) -> None:
        """Forget adopted workers that ended; look for new orphans while a slot is free."""
        with self._lock:
            self._adopted = {pid: p for pid, p in self._adopted.items() if still_running(p)}
            mine = {w.popen.pid for w in (*self._running.values(), *self._idle)}
            room = self.workers - len(self._running) - len(self._adopted)
        now = time.monotonic()
        if room <= 0 or now - self._adopt_scan < ADOPT_SCAN_SECONDS:
            return
        self._adopt_scan = now
        found = orphan_workers(self.store.path, self.store.active_runs(), mine, detached_pids())
        with self._lock:
            self._adopted.update(found)

    def _launch_queued(self) -> None:
        for slot in self._free_slots():
            if self._stopping.is_set():
                return
            claim = self.store.claim_next(self.kind, self.owner)
            if claim is None:
                return
            run_id, config = claim
            with self._lock:
                self._launching = run_id
            gpu = None
            if self.gpus > 0 and config.get("device") != "cpu":
                gpu = slot % self.gpus
            try:
                self._launch(slot, run_id, gpu)
            finally:
                with self._lock:
                    self._launching = None

    def _launch(self, slot: int, run_id: str, gpu: int | None) -> None:
        error: Exception | None = None
        for attempt in range(2):
            w = self._take_idle(gpu) if attempt == 0 else None
            try:
                if w is None:
                    w = self._spawn()
                w.hand_over(run_id, gpu)
            except (OSError, ValueError) as exc:  # a spare that died, or no interpreter
                error = exc
                if w is not None:
                    w.stop()
                continue
            w.slot = slot
            with self._lock:
                self._running[slot] = w
            self.store.set_worker(run_id, w.popen.pid, self.host)
            return
        self.store.finish(run_id, "failed", message=f"could not start a worker: {error}")

    def _take_idle(self, gpu: int | None) -> WorkerProcess | None:
        """An idle worker that may run on `gpu` (most recently used first), if any."""
        with self._lock:
            for i, w in enumerate(self._idle):
                if w.can_take(gpu):
                    return self._idle.pop(i)
        return None

    def _spawn(self) -> WorkerProcess:
        return spawn_worker(
            self.python, self.store.path, self.run_fn, self.threads, self.recycle_after
        )

    def _reap(self, w: WorkerProcess, rc: int) -> None:
        """Record the end of a worker whose run has no final status yet."""
        try:
            if w.run_id is None or self.store.status(w.run_id) != "running":
                return
            if w.cancel_at is not None:
                message = "cancelled; the worker was stopped"
                self.store.finish(w.run_id, "cancelled", message=message)
                return
            why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            message = f"worker exited unexpectedly ({why})"
            tail = w.tail()
            if tail:
                message += f": {tail.splitlines()[-1]}"
            self.store.finish(w.run_id, "failed", message=message, traceback=tail or None)
        finally:
            w.close()

    def _scan_store(self) -> None:
        """Pick up cancel requests made elsewhere and runs whose worker nobody watches."""
        with self._lock:
            mine = {w.run_id: w for w in self._running.values() if w.run_id is not None}
        now = time.monotonic()
        for rec in self.store.active_runs():
            rid = rec["run_id"]
            if rid in mine:
                w = mine[rid]
                if rec["cancel_requested"] and w.cancel_at is None:
                    w.cancel_at = now  # asked from another process (CLI, another app)
                continue
            pid = rec["pid"]
            if rec["cancel_requested"] and rec["host"] == self.host and pid is not None:
                # a worker nobody watches that ignores its cancel request: stop it here
                first = self._foreign_cancel.setdefault(rid, now)
                if now - first > self.cancel_grace + 5.0:
                    kill_worker_of(pid, self.store.path)
        skip = set(mine)
        with self._lock:
            launching = self._launching
        if launching is not None:
            skip.add(launching)
        for rid in reap_lost_runs(self.store, self.host, self.stale_after, skip):
            self._foreign_cancel.pop(rid, None)
