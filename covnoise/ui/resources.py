"""The app's long-lived resources: the run store and the engine (one each per process, cached
by streamlit), the training device, and the status facts the sidebar shows about them.

The store is $COVNOISE_STORE or the user's default. The engine is chosen by
``$COVNOISE_ENGINE`` (local by default, or ray with ``$COVNOISE_RAY_ADDRESS``), its worker
count by ``$COVNOISE_WORKERS``. Closing the app lets running runs finish into the store.
"""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from covnoise.runs import ACTIVE, RunStore, default_store_path
from covnoise.ui.guards import log

ENGINE_ENV = "COVNOISE_ENGINE"
RAY_ADDRESS_ENV = "COVNOISE_RAY_ADDRESS"
WORKERS_ENV = "COVNOISE_WORKERS"


def store_path() -> str:
    """The store file this app uses ($COVNOISE_STORE or the user's default)."""
    return str(default_store_path())


@st.cache_resource(show_spinner=False, on_release=lambda s: s.close())
def _store(path: str) -> RunStore:
    return RunStore(path)


def get_store() -> RunStore:
    """The app's run store (one per store path and process)."""
    return _store(store_path())


def engine_kind() -> str:
    """The engine the app submits to: $COVNOISE_ENGINE (local or ray), local by default."""
    return os.environ.get(ENGINE_ENV, "local").strip().lower() or "local"


def _close_engine(engine: Any) -> None:
    try:
        engine.close(cancel_running=False)  # running runs finish and land in the store
    except Exception:  # noqa: BLE001 - shutting down
        log.exception("closing the engine")


@st.cache_resource(show_spinner=False, on_release=_close_engine)
def _engine(path: str, kind: str, workers: int | None, address: str | None) -> Any:
    from covnoise.runs.engine import make_engine

    return make_engine(kind, _store(path), workers=workers, address=address)


def get_engine() -> Any:
    """The engine the app submits to (built once per store path, kind and worker count)."""
    raw = os.environ.get(WORKERS_ENV)
    workers = int(raw) if raw and raw.strip().isdigit() and int(raw) > 0 else None
    return _engine(store_path(), engine_kind(), workers, os.environ.get(RAY_ADDRESS_ENV))


def engine_info(engine: Any) -> dict[str, Any]:
    """The engine's own status facts (engine.info()), or the basics when it has none."""
    try:
        return dict(engine.info())
    except Exception as exc:  # noqa: BLE001 - a status line must not break the page
        log.warning("engine.info() failed: %s", exc)
        return {"kind": getattr(engine, "kind", type(engine).__name__)}


def engine_description(engine: Any, info: dict[str, Any] | None = None) -> str:
    """A short line naming the engine and its parallelism."""
    info = engine_info(engine) if info is None else info
    workers = info.get("workers") or info.get("max_in_flight") or getattr(engine, "workers", None)
    kind = info.get("kind", getattr(engine, "kind", type(engine).__name__))
    return f"{kind} ({workers} parallel runs)" if workers else str(kind)


def engine_problem(info: dict[str, Any]) -> str | None:
    """A short warning when the engine cannot schedule runs, else None."""
    if info.get("monitor_alive") is False:
        return "The engine's scheduler has stopped; queued runs will wait. Restart the app."
    if info.get("last_error"):
        return f"Engine: {str(info['last_error']).splitlines()[0][:200]}"
    return None


#: Set to 0 to skip the background imports (memo.warm_imports) after the first page.
WARM_ENV = "COVNOISE_WARM_IMPORTS"


@st.cache_resource(show_spinner=False)
def device_found() -> str:
    """The training device a run with device=auto gets: the GPU's name, or the CPU.

    Called once per server, on the first page drawn: it also starts the background imports
    of the modules other pages would otherwise import on their first open (memo.warm_imports).
    """
    import torch

    from covnoise.ui import memo

    if os.environ.get(WARM_ENV, "1") != "0":
        memo.warm_imports()

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        return f"GPU: {name}" + (f" (×{n})" if n > 1 else "")
    return f"CPU ({os.cpu_count() or 1} cores)"


def queue_counts(store: RunStore) -> dict[str, int]:
    """How many runs of the store are in each active status (queued, running)."""
    counts = store.status_counts()
    return {s: int(counts.get(s, 0)) for s in sorted(ACTIVE)}
