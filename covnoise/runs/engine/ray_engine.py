"""The Ray engine: the same interface as the local engine, each run a Ray task on a cluster.

Each run is a Ray generator task asking for the CPUs/GPUs it needs. The task runs the run
function in a thread and yields its events in small batches (at least once a second, which
doubles as a heartbeat), so metrics stream back while the run is going; a driver thread per
run writes them to the store. Cancelling sets a flag in a small actor that the task polls
(the run stops between steps, like a local worker); a task that does not stop within the
grace period is cancelled by force. Ray is imported only when this engine is built.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import ray

from covnoise.config import ConfigError
from covnoise.runs.engine.base import DEFAULT_RUN_FN, Engine, import_run_fn
from covnoise.runs.engine.monitor import reap_lost_runs
from covnoise.runs.schema import TERMINAL
from covnoise.runs.store import RunStore

#: Seconds a Ray --address has to accept a connection before the engine gives up.
CONNECT_TIMEOUT = 15.0
BATCH_SECONDS = 0.2
HEARTBEAT_SECONDS = 1.0
_DONE = object()


@ray.remote(num_cpus=0)
class StopFlags:
    """Run ids whose run should stop; polled by the tasks."""

    def __init__(self) -> None:
        self.flags: set[str] = set()

    def set(self, run_id: str) -> None:
        self.flags.add(run_id)

    def is_set(self, run_id: str) -> bool:
        return run_id in self.flags


def _limit_threads(threads: int) -> None:
    """Keep a task to the CPUs Ray gave it."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _start_run(
    run_id: str,
    config: dict[str, Any],
    run_fn_path: str,
    events: queue.Queue,
    stop: threading.Event,
    result: dict[str, Any],
) -> threading.Thread:
    """Run the training function in a thread that puts its events on `events`, then _DONE."""
    from covnoise.config import RunConfig

    def target() -> None:
        try:
            fn = import_run_fn(run_fn_path)
            summary = fn(RunConfig.from_stored(config), emit=events.put, should_stop=stop.is_set)
            result["summary"] = summary if isinstance(summary, dict) else {}
        except BaseException as exc:  # noqa: BLE001 - reported to the driver
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc()
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=target, name=f"run-{run_id}", daemon=True)
    thread.start()
    return thread


def _collect(events: queue.Queue) -> tuple[list[dict], bool]:
    """The metric events that arrive within one batch window, and whether the run ended."""
    batch: list[dict] = []
    deadline = time.monotonic() + BATCH_SECONDS
    while True:
        wait = deadline - time.monotonic()
        try:
            item = events.get(timeout=max(wait, 0.0)) if wait > 0 else events.get_nowait()
        except queue.Empty:
            return batch, False
        if item is _DONE:
            return batch, True
        if item.get("event") != "summary":
            batch.append(item)


class _CancelWatch:
    """Asks the flags actor, without blocking, whether the run should stop."""

    def __init__(self, flags: Any, run_id: str, stop: threading.Event) -> None:
        self.flags, self.run_id, self.stop = flags, run_id, stop
        self.pending = None

    def poll(self) -> None:
        if self.pending is None:
            self.pending = self.flags.is_set.remote(self.run_id)
        ready, _ = ray.wait([self.pending], timeout=0)
        if ready:
            if ray.get(self.pending):
                self.stop.set()
            self.pending = None


def run_task(run_id: str, config: dict[str, Any], run_fn_path: str, flags, threads: int):
    """Generator body of one Ray task: yields {"events": [...]} batches, then the result."""
    _limit_threads(threads)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: dict[str, Any] = {}
    thread = _start_run(run_id, config, run_fn_path, events, stop, result)
    watch = _CancelWatch(flags, run_id, stop)
    last_yield = time.monotonic()
    finished = False
    while not finished:
        batch, finished = _collect(events)
        watch.poll()
        now = time.monotonic()
        if batch or now - last_yield >= HEARTBEAT_SECONDS:
            last_yield = now
            yield {"events": batch}
    thread.join()
    yield {"events": [], "result": result}


_remote_run_task = ray.remote(max_retries=0)(run_task)


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise ConfigError naming `address` unless something there (host:port or
    ray://host:port) accepts a TCP connection within `timeout` seconds; `auto` and `local`
    are Ray's to resolve. ray.init retries a dead address for minutes instead of failing."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("address", f"{address!r} is not host:port (or ray://host:port, auto)")
    try:
        speaks_grpc = _speaks_http2(host, int(port), timeout)
    except OSError as exc:
        raise ConfigError(
            "address",
            f"no Ray cluster answers at {address} within {timeout:g} s ({exc.strerror or exc}); "
            "start one with `ray start --head`, or leave --address out for a local one",
        ) from None
    if not speaks_grpc:
        raise ConfigError(
            "address",
            f"something at {address} accepts connections but is not a Ray cluster (it does not "
            f"answer gRPC within {timeout:g} s); give the head node's GCS port (6379 by default) "
            "or a ray:// client address",
        )


#: The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113, sections 3.4 and 6.5).
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_http2(host: str, port: int, timeout: float) -> bool:
    """Whether the server at host:port answers an HTTP/2 preface with a SETTINGS frame, as
    every gRPC server (Ray's GCS and its client server) does; OSError if nothing listens."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(_HTTP2_HELLO)
            head = b""
            while len(head) < 9:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
        except (TimeoutError, ConnectionError):
            return False
    return head[3] == 4  # frame type SETTINGS


def _connect(address: str | None, runtime_env: dict[str, Any] | None) -> None:
    """ray.init at `address` (None: a new local Ray), failing fast with ConfigError."""
    if address:
        check_address(address)
    extra = {} if address else {"include_dashboard": False}
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, **extra)
    except ConnectionError as exc:
        raise ConfigError("address", f"cannot connect to Ray at {address}: {exc}") from None


class RayEngine(Engine):
    """Runs configs as Ray tasks on the cluster at `address` (see the module docstring)."""

    kind = "ray"

    def __init__(
        self,
        store: RunStore | str | Path | None = None,
        address: str | None = None,
        run_fn: str = DEFAULT_RUN_FN,
        *,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        max_in_flight: int | None = None,
        cancel_grace: float = 10.0,
        stale_after: float = 30.0,
        poll_interval: float = 0.2,
        runtime_env: dict[str, Any] | None = None,
        start: bool = True,
    ) -> None:
        super().__init__(store, run_fn)
        if not ray.is_initialized():
            _connect(address or os.environ.get("RAY_ADDRESS") or None, runtime_env)
        resources = ray.cluster_resources()
        self.cluster_gpus = float(resources.get("GPU", 0.0))
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        if max_in_flight is None:
            by_cpu = int(resources.get("CPU", 1) // max(num_cpus, 1e-9)) if num_cpus else 64
            gpu_need = num_gpus if num_gpus is not None else (1.0 if self.cluster_gpus else 0.0)
            by_gpu = int(self.cluster_gpus // gpu_need) if gpu_need else by_cpu
            max_in_flight = max(1, min(by_cpu, by_gpu))
        self.max_in_flight = max_in_flight
        self.cancel_grace = cancel_grace
        self.stale_after = stale_after
        self.poll_interval = poll_interval
        self.host = socket.gethostname()
        self.owner = f"ray:{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.last_error: str | None = None
        self._flags = StopFlags.remote()
        self._lock = threading.RLock()
        self._inflight: dict[str, dict[str, Any]] = {}  # run id -> {gen, thread, cancel_at}
        self._wake_event = threading.Event()
        self._stopping = threading.Event()
        self._last_scan = 0.0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="covnoise-ray", daemon=True)
        self._thread.start()

    def close(self, cancel_running: bool = True, timeout: float | None = None) -> None:
        """Stop scheduling; with `cancel_running` the in-flight runs are cancelled.

        Ray tasks end with their driver, so without `cancel_running` runs still in flight
        are left to the monitor of the next engine (which marks them failed)."""
        self._stopping.set()
        self._wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            inflight = dict(self._inflight)
        if cancel_running:
            for rid in inflight:
                self.cancel(rid)
            deadline = time.monotonic() + (
                timeout if timeout is not None else self.cancel_grace + 10
            )
            for rid, item in inflight.items():
                while item["thread"].is_alive() and time.monotonic() < deadline:
                    self._escalate(rid, item)
                    item["thread"].join(timeout=0.1)
                if item["thread"].is_alive():
                    ray.cancel(item["gen"], force=True)
                    item["thread"].join(timeout=10)

    # ------------------------------------------------------------------ control
    def cancel(self, run_id: str) -> str | None:
        """Cancel a queued run at once; ask a running one to stop (forced after the grace)."""
        status = self.store.request_cancel(run_id)
        if status == "running":
            with self._lock:
                item = self._inflight.get(run_id)
                if item is not None and item["cancel_at"] is None:
                    item["cancel_at"] = time.monotonic()
                    self._flags.set.remote(run_id)
        return status

    def info(self) -> dict[str, Any]:
        """Engine status for the app: cluster resources, tasks in flight, last error."""
        return {
            **super().info(),
            "max_in_flight": self.max_in_flight,
            "in_flight": len(self.in_flight()),
            "cluster": ray.cluster_resources(),
            "last_error": self.last_error,
        }

    def in_flight(self) -> list[str]:
        """Ids of the runs whose task has not ended yet."""
        with self._lock:
            return [rid for rid, it in self._inflight.items() if it["thread"].is_alive()]

    def _wake(self) -> None:
        self._wake_event.set()

    # ------------------------------------------------------------------ scheduler thread
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the scheduler must keep going
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._wake_event.wait(self.poll_interval)
            self._wake_event.clear()

    def _tick(self) -> None:
        with self._lock:
            for rid in [r for r, it in self._inflight.items() if not it["thread"].is_alive()]:
                self._inflight.pop(rid)
            items = list(self._inflight.items())
        for rid, item in items:
            self._escalate(rid, item)
        while not self._stopping.is_set():
            with self._lock:
                if len(self._inflight) >= self.max_in_flight:
                    break
            claim = self.store.claim_next(self.kind, self.owner)
            if claim is None:
                break
            self._launch(*claim)
        now = time.monotonic()
        if now - self._last_scan >= 1.0:
            self._last_scan = now
            self._scan_store()

    def _launch(self, run_id: str, config: dict[str, Any]) -> None:
        self.store.set_worker(run_id, os.getpid(), self.host)  # the driver answers for it
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1.0 if self.cluster_gpus and config.get("device") != "cpu" else 0.0
        threads = max(1, int(self.num_cpus or 1))
        try:
            gen = _remote_run_task.options(num_cpus=self.num_cpus, num_gpus=gpus).remote(
                run_id, config, self.run_fn, self._flags, threads
            )
        except Exception as exc:  # noqa: BLE001 - recorded against the run
            self.store.finish(run_id, "failed", message=f"could not submit the Ray task: {exc}")
            return
        item: dict[str, Any] = {"gen": gen, "cancel_at": None}
        item["thread"] = threading.Thread(
            target=self._drive, args=(run_id, item), name=f"ray-{run_id}", daemon=True
        )
        with self._lock:
            self._inflight[run_id] = item
        item["thread"].start()

    def _drive(self, run_id: str, item: dict[str, Any]) -> None:
        """Write a task's streamed events into the store and record how it ended."""
        store = self.store
        try:
            for ref in item["gen"]:
                batch = ray.get(ref)
                for event in batch["events"]:
                    kind = event.get("event")
                    if kind == "metric":
                        store.add_metric_event(run_id, event)
                    elif kind == "start":
                        store.record_start(run_id, event)
                if store.heartbeat(run_id) and item["cancel_at"] is None:
                    self.cancel(run_id)  # asked from another process
                if "result" in batch:
                    self._record_result(run_id, batch["result"])
                    return
            store.finish(run_id, "failed", message="the Ray task ended without a result")
        except Exception as exc:  # noqa: BLE001 - any way the task can end
            if item["cancel_at"] is not None:
                store.finish(run_id, "cancelled", message="cancelled; the Ray task was stopped")
            else:
                text = str(exc).strip().splitlines()
                detail = text[-1] if text else ""
                store.finish(
                    run_id,
                    "failed",
                    message=f"worker exited unexpectedly ({type(exc).__name__}: {detail})",
                    traceback=str(exc),
                )

    def _record_result(self, run_id: str, result: dict[str, Any]) -> None:
        if "error" in result:
            self.store.finish(
                run_id, "failed", message=result["error"], traceback=result.get("traceback")
            )
            return
        summary = result.get("summary") or {}
        status = summary.get("status", "finished")
        if status not in TERMINAL - {"failed"}:  # a run reports how it ended, never "failed"
            status = "finished"
        self.store.finish(run_id, status, message=summary.get("message"), summary=summary)

    def _escalate(self, run_id: str, item: dict[str, Any]) -> None:
        if item["cancel_at"] is None or item.get("forced"):
            return
        if time.monotonic() - item["cancel_at"] > self.cancel_grace:
            item["forced"] = True
            ray.cancel(item["gen"], force=True)

    def _scan_store(self) -> None:
        with self._lock:
            mine = set(self._inflight)
        for rec in self.store.active_runs(engine=self.kind):
            if rec["run_id"] in mine and rec["cancel_requested"]:
                with self._lock:
                    item = self._inflight.get(rec["run_id"])
                if item is not None and item["cancel_at"] is None:
                    self.cancel(rec["run_id"])
        reap_lost_runs(self.store, self.host, self.stale_after, mine)
