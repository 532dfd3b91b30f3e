"""Finding runs that nobody is running any more, for every engine's monitor thread.

A running run records the host and process id responsible for it (the worker process for
the local engine, the driver for Ray) and a heartbeat. A run is lost when that process is
gone from this machine, or when its heartbeat is older than `stale_after` and it cannot be
checked directly. A run that was claimed but never handed to a worker (no process id) goes
back to the queue.
"""

from __future__ import annotations

import time

import psutil

from covnoise.runs.store import RunStore


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # gone, or a zombie (psutil.ZombieProcess)
        return False
    except psutil.AccessDenied:  # someone else's process: it exists
        return True


#: Seconds a run whose process is gone is left to the engine that owns it, so that engine
#: can record the exact exit status first.
OWNER_GRACE = 5.0


def reap_lost_runs(
    store: RunStore,
    host: str,
    stale_after: float,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Give lost running runs a final status (or requeue unlaunched ones); returns their ids."""
    now = time.time()
    done: list[str] = []
    for rec in store.active_runs():
        rid = rec["run_id"]
        if rid in skip:
            continue
        age = now - (rec["heartbeat_at"] or 0.0)
        if rec["pid"] is None:
            if age > stale_after and store.requeue(rid):
                done.append(rid)
            continue
        if rec["host"] == host:
            if pid_alive(rec["pid"]) or age <= OWNER_GRACE:
                continue
            why = f"worker process {rec['pid']} is gone"
        elif age > stale_after:
            why = f"no heartbeat for {age:.0f} s"
        else:
            continue
        if rec["cancel_requested"]:
            ok = store.finish(rid, "cancelled", message=f"cancelled; {why}")
        else:
            ok = store.finish(rid, "failed", message=f"worker exited unexpectedly ({why})")
        if ok:
            done.append(rid)
    return done
