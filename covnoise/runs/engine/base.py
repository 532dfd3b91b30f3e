"""The engine interface shared by the local process pool and the Ray engine.

An engine takes validated configs, queues them in the run store, runs them somewhere, and
lets callers list, inspect, cancel and wait for them. Everything a page needs is in the store,
so callers never talk to workers directly.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covnoise.config import RunConfig
from covnoise.runs.engine.sweep import expand_grid
from covnoise.runs.schema import TERMINAL
from covnoise.runs.store import RunStore

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RUN_FN = "covnoise.core.train.run"


def import_run_fn(path: str) -> Callable[..., Any]:
    """The callable named by "package.module.name" or "package.module:name"."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ValueError(f"run function {path!r} is not of the form package.module.name")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"run function {path!r} is not callable")
    return fn


def _as_store(store: RunStore | str | Path | None) -> RunStore:
    return store if isinstance(store, RunStore) else RunStore(store)


class Engine(ABC):
    """Submit, list, inspect, cancel and wait for runs; results land in `self.store`."""

    kind: str = "base"

    def __init__(self, store: RunStore | str | Path | None, run_fn: str = DEFAULT_RUN_FN) -> None:
        self.store = _as_store(store)
        self.run_fn = run_fn

    # ------------------------------------------------------------------ submitting
    def submit(self, config: RunConfig, rerun: bool = False) -> str:
        """Queue one run and return its id (an existing finished run is returned as is).
        A config that cannot run on its data set raises ConfigError and is not stored."""
        from covnoise.runs.checks import check_runnable  # the data registry imports torch

        check_runnable(config)
        run_id, _ = self.store.submit(config, rerun=rerun, engine=self.kind)
        self._wake()
        return run_id

    def submit_many(self, configs: Iterable[RunConfig], rerun: bool = False) -> list[str]:
        """Queue several runs; returns their ids in order (duplicates collapse to one id).
        Every config is checked against its data set before any is stored."""
        from covnoise.runs.checks import check_runnable

        configs = list(configs)
        for config in configs:  # every config first: nothing is stored if one cannot run
            check_runnable(config)
        ids: list[str] = []
        for config in configs:
            run_id, _ = self.store.submit(config, rerun=rerun, engine=self.kind)
            if run_id not in ids:
                ids.append(run_id)
        self._wake()
        return ids

    def sweep(
        self,
        base: RunConfig,
        *,
        batch_sizes: Iterable[int] | None = None,
        noises: Iterable[str] | None = None,
        noise_scales: Iterable[float] | None = None,
        lrs: Iterable[float] | None = None,
        seeds: Iterable[int] | None = None,
        rerun: bool = False,
    ) -> list[str]:
        """Expand the grid around `base` (see expand_grid) and queue every run."""
        configs = expand_grid(
            base,
            batch_sizes=batch_sizes,
            noises=noises,
            noise_scales=noise_scales,
            lrs=lrs,
            seeds=seeds,
        )
        return self.submit_many(configs, rerun=rerun)

    # ------------------------------------------------------------------ reading
    def list(self, status: str | Iterable[str] | None = None) -> pd.DataFrame:
        """The runs table (see RunStore.runs)."""
        return self.store.runs(status=status)

    def info(self) -> dict[str, Any]:
        """A status line's worth of facts: engine kind, store, run counts by status."""
        return {
            "kind": self.kind,
            "store": str(self.store.path),
            "runs": self.store.status_counts(),
        }

    def status(self, run_id: str) -> dict[str, Any] | None:
        """The stored record of one run (status, timestamps, device, message …)."""
        return self.store.get_run(run_id)

    def wait(
        self, run_ids: Iterable[str], timeout: float | None = None, poll: float = 0.2
    ) -> dict[str, str | None]:
        """Block until every run has a final status (or `timeout` s); returns the statuses."""
        ids = list(run_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            statuses = self.store.statuses(ids)
            if all(s in TERMINAL or s is None for s in statuses.values()):
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                return statuses
            time.sleep(poll)

    # ------------------------------------------------------------------ control
    @abstractmethod
    def cancel(self, run_id: str) -> str | None:
        """Stop a queued or running run; returns its status after the request."""

    @abstractmethod
    def close(self, cancel_running: bool = True) -> None:
        """Stop the engine; with `cancel_running` its running runs are stopped (cancelled)."""

    def _wake(self) -> None:  # noqa: B027 - engines without a scheduler thread need nothing
        """Tell the scheduler that new work is queued."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
