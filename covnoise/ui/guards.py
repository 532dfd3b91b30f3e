"""The page error guard: an exception while drawing becomes a short st.error, never a raw
traceback, and its traceback goes to the app's log instead.

Every page body and widget callback runs through `guarded` or `guarded_callback`, so a bug or
a bad input shows a one-line message and the rest of the app keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import streamlit as st

#: The app's log: tracebacks of guarded errors and warnings about engines and cached files.
log = logging.getLogger("covnoise.app")


def guarded(body: Callable[[], None], what: str = "this page", action: str = "draw") -> None:
    """Run a page body; an exception becomes a short st.error, its traceback goes to the log."""
    try:
        body()
    except Exception as exc:  # noqa: BLE001 - a page never shows a raw traceback
        log.exception("error while drawing %s", what)
        text = str(exc).splitlines()[0] if str(exc) else ""
        st.error(f"Could not {action} {what}: {type(exc).__name__}{': ' + text if text else ''}")


def guarded_callback(what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a widget callback like `guarded`: an exception becomes a short st.error."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            guarded(lambda: fn(*args, **kwargs), what, action="complete")

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    return wrap
