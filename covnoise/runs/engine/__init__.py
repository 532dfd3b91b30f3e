"""Engines that run training configs somewhere: a local process pool or a Ray cluster.

`make_engine("local" | "ray", store, ...)` builds one; both share the Engine interface
(submit, submit_many, sweep, list, status, cancel, wait, close). Ray is imported only when
the Ray engine is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from covnoise.runs.engine.base import DEFAULT_RUN_FN, Engine, import_run_fn
from covnoise.runs.engine.local import LocalEngine, default_workers
from covnoise.runs.engine.sweep import expand_grid
from covnoise.runs.store import RunStore

ENGINES = ("local", "ray")

__all__ = [
    "DEFAULT_RUN_FN",
    "ENGINES",
    "Engine",
    "LocalEngine",
    "default_workers",
    "expand_grid",
    "import_run_fn",
    "make_engine",
]


def make_engine(
    kind: str = "local",
    store: RunStore | str | Path | None = None,
    *,
    workers: int | None = None,
    address: str | None = None,
    run_fn: str = DEFAULT_RUN_FN,
    **options: Any,
) -> Engine:
    """An engine of `kind` writing to `store`; `address` is the Ray cluster (ray only)."""
    if kind == "local":
        return LocalEngine(store, workers=workers, run_fn=run_fn, **options)
    if kind == "ray":
        from covnoise.runs.engine.ray_engine import RayEngine

        return RayEngine(store, address=address, max_in_flight=workers, run_fn=run_fn, **options)
    raise ValueError(f"engine: {kind!r} is not one of {', '.join(ENGINES)}")
