"""The local engine's worker processes seen from the engine: start, hand a run to, stop, inspect.

A worker is ``python -m covnoise.runs.engine.worker`` in a fresh interpreter and its own
session (Ctrl-C in a terminal goes to the engine, not to it), with its stderr in an anonymous
temporary file whose last lines explain a crash. It is persistent: it reads one line on stdin
per run, and after a run that finished it writes one line on stdout ("done") and waits for
the next; after a failure, a cancel or `max_runs` runs it exits instead, and end of stdin
makes it exit. Processes are inspected with psutil, which also guards against a reused
process id: only a process whose command line names the worker module and the store is ever
killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

WORKER_MODULE = "covnoise.runs.engine.worker"
#: Seconds between terminating a worker that ignores a cancel request and killing it.
KILL_AFTER = 3.0

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])

#: Workers left running by engines closed with cancel_running=False; polled (reaped) later.
_DETACHED: list[subprocess.Popen] = []


@dataclass
class WorkerProcess:
    """One worker process, the run it holds (once handed one) and its cancel timeline."""

    popen: subprocess.Popen
    log: IO[bytes]
    run_id: str | None = None
    slot: int | None = None
    cancel_at: float | None = None
    terminated_at: float | None = None
    born: float = field(default_factory=time.monotonic)
    gpu: int | None = None
    runs_taken: int = 0
    _out: bytes = b""

    def can_take(self, gpu: int | None) -> bool:
        """Whether this worker may run on `gpu`: a worker's GPU is fixed by its first run."""
        return self.runs_taken == 0 or self.gpu == gpu

    def hand_over(self, run_id: str, gpu: int | None) -> None:
        """Send the worker its run (and GPU); raises OSError/ValueError if it is gone."""
        self.popen.stdin.write((json.dumps({"run_id": run_id, "gpu": gpu}) + "\n").encode())
        self.popen.stdin.flush()
        self.gpu, self.runs_taken = gpu, self.runs_taken + 1
        self.run_id, self.cancel_at, self.terminated_at = run_id, None, None

    def finished_run(self) -> bool:
        """Whether the worker said it is done with its run and waits for the next one
        (reads its stdout without blocking)."""
        try:
            chunk = os.read(self.popen.stdout.fileno(), 4096)
        except (BlockingIOError, OSError, ValueError, AttributeError):
            chunk = b""
        self._out += chunk
        if b"\n" not in self._out:
            return False
        self._out = self._out.rsplit(b"\n", 1)[1]
        return True

    def release(self) -> None:
        """End the worker's stdin: it exits once its current run (if any) has ended."""
        try:
            self.popen.stdin.close()
        except (OSError, ValueError):
            pass

    def tail(self, limit: int = 800) -> str:
        """The last lines the worker wrote to stderr (for failure messages)."""
        try:
            self.log.seek(0, os.SEEK_END)
            size = self.log.tell()
            self.log.seek(max(0, size - limit))
            return self.log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def escalate(self, grace: float) -> None:
        """Terminate, then kill, a worker that ignores a cancel request past `grace` s."""
        if self.cancel_at is None:
            return
        now = time.monotonic()
        if self.terminated_at is None and now - self.cancel_at > grace:
            self.popen.terminate()
            self.terminated_at = now
        elif self.terminated_at is not None and now - self.terminated_at > KILL_AFTER:
            self.popen.kill()

    def stop(self) -> None:
        """Kill the process at once and wait for it (an idle worker, or one past every
        deadline)."""
        self.popen.kill()
        self.popen.wait()
        self.close()

    def detach(self) -> None:
        """Leave the process to finish its run on its own and then exit; it is reaped later."""
        self.release()
        self.close()
        _DETACHED.append(self.popen)

    def close(self) -> None:
        """Close the log and the pipes (the process itself is left alone)."""
        for f in (self.log, self.popen.stdin, self.popen.stdout):
            try:
                if f is not None:
                    f.close()
            except (OSError, ValueError):
                pass


def reap_detached() -> None:
    """Collect the exit status of detached workers that ended (no zombies left behind)."""
    _DETACHED[:] = [p for p in _DETACHED if p.poll() is None]


def spawn_worker(
    python: str, store_path: Path, run_fn: str, threads: int, max_runs: int = 1
) -> WorkerProcess:
    """Start a worker for the store at `store_path`; it imports `run_fn` and waits for a
    run, and runs up to `max_runs` runs one after the other."""
    reap_detached()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [
        python,
        "-m",
        WORKER_MODULE,
        "--store",
        str(store_path),
        "--run-fn",
        run_fn,
        "--threads",
        str(threads),
        "--max-runs",
        str(max(1, max_runs)),
    ]
    log = tempfile.TemporaryFile()
    try:
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to the engine, not here
        )
    except OSError:
        log.close()
        raise
    os.set_blocking(popen.stdout.fileno(), False)
    return WorkerProcess(popen=popen, log=log)


def _names_store(cmd: list[str], store_path: Path) -> bool:
    """Whether a command line is a covnoise worker's for this store."""
    if WORKER_MODULE not in cmd or "--store" not in cmd:
        return False
    i = cmd.index("--store") + 1
    return i < len(cmd) and (cmd[i] == str(store_path) or Path(cmd[i]) == Path(store_path))


def _owner_pid(owner: str | None) -> int | None:
    """The engine's process id in a local owner tag ``local:HOST:PID:TOKEN``."""
    parts = (owner or "").split(":")
    if len(parts) == 4 and parts[0] == "local" and parts[2].isdigit():
        return int(parts[2])
    return None


def orphan_workers(
    store_path: Path, active: list[dict], exclude: set[int], detached: set[int]
) -> dict[int, psutil.Process]:
    """Running workers of this store on this machine that no live engine watches.

    A worker is an orphan when its parent is no longer the engine that claimed its run
    (that engine died, e.g. SIGKILL, and the worker was re-parented), or when this process
    detached it. `active` is the store's running runs (RunStore.active_runs), `exclude` the
    workers the asking engine runs itself. Idle workers hold no run and exit when their
    engine goes (end of stdin), so they are not counted.
    """
    owners = {rec["pid"]: _owner_pid(rec["owner"]) for rec in active if rec["pid"] is not None}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
        info = proc.info
        pid = proc.pid
        if pid in exclude or pid not in owners or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not _names_store(info["cmdline"] or [], store_path):
            continue
        if pid in detached or info["ppid"] != owners[pid]:
            found[pid] = proc
    return found


def still_running(proc: psutil.Process) -> bool:
    """Whether an adopted worker still runs (not gone, not a zombie, not a reused id)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def detached_pids() -> set[int]:
    """Process ids of the workers this process detached that still run."""
    reap_detached()
    return {p.pid for p in _DETACHED}


def _worker_process(pid: int, store_path: Path) -> psutil.Process | None:
    """The process `pid` if it is a covnoise worker writing to this store (not a reused id)."""
    try:
        proc = psutil.Process(pid)
        cmd = proc.cmdline()
    except psutil.Error:
        return None
    return proc if _names_store(cmd, store_path) else None


def is_worker_of(pid: int, store_path: Path) -> bool:
    """Whether `pid` is a covnoise worker writing to this store (guards against pid reuse)."""
    return _worker_process(pid, store_path) is not None


def kill_worker_of(pid: int, store_path: Path) -> bool:
    """Kill `pid` if it is a covnoise worker writing to this store; returns whether it was."""
    proc = _worker_process(pid, store_path)
    if proc is None:
        return False
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        return False
    return True
