"""Keep a page's widget values in the URL (st.query_params) so its state can be shared as a link.

Usage in a page::

    state = UrlState("demo", [IntParam("P", 20, 2, 64), FloatParam("alpha", 1.0, 1e-4, 10.0)])
    for notice in state.load():  # before the widgets: seeds st.session_state
        st.info(notice)
    st.slider("P", 2, 64, key=state.key("P"))  # no value=: the widget reads the seeded state
    st.number_input("alpha", 1e-4, 10.0, key=state.key("alpha"))
    state.save()  # after the widgets: writes changed values to the URL
    P = state.values()["P"]

load() reads each parameter from the URL once per session (when its widget has no state yet),
validates it, and falls back to the default with a short notice when it is malformed or out of
range. save() writes the current values back, so every change updates the link. Session keys
are prefixed with the page name, so pages under one st.navigation never share widget state.
Widgets must be created with key=state.key(name) and without value=, and always rendered
(disable rather than hide them), so their state persists between runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st


class BadValue(ValueError):
    """A URL value that cannot be used for a parameter."""


@dataclass(frozen=True)
class Param:
    """A URL-backed parameter: its name in the URL and its default."""

    name: str
    default: Any

    def parse(self, raw: str) -> Any:
        """Turn the URL text into a valid value, or raise BadValue."""
        raise NotImplementedError

    def format(self, value: Any) -> str:
        """The URL text for a value (parse(format(v)) == v)."""
        return str(value)


@dataclass(frozen=True)
class IntParam(Param):
    lo: int | None = None
    hi: int | None = None

    def parse(self, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise BadValue("not a whole number") from None
        _check_range(value, self.lo, self.hi)
        return value


@dataclass(frozen=True)
class FloatParam(Param):
    lo: float | None = None
    hi: float | None = None

    def parse(self, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise BadValue("not a number") from None
        if not math.isfinite(value):
            raise BadValue("not a finite number")
        _check_range(value, self.lo, self.hi)
        return value

    def format(self, value: Any) -> str:
        return repr(float(value))


@dataclass(frozen=True)
class ChoiceParam(Param):
    choices: Sequence[str] = ()

    def parse(self, raw: str) -> str:
        if raw not in self.choices:
            raise BadValue(f"not one of {', '.join(map(str, self.choices))}")
        return raw


@dataclass(frozen=True)
class BoolParam(Param):
    def parse(self, raw: str) -> bool:
        text = raw.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise BadValue("not true/false")

    def format(self, value: Any) -> str:
        return "true" if value else "false"


@dataclass(frozen=True)
class ListParam(Param):
    """A list of strings in the URL as "a,b,c"; with `choices`, each item must be one of them."""

    choices: Sequence[str] | None = None

    def parse(self, raw: str) -> list[str]:
        items = [t.strip() for t in raw.split(",") if t.strip()]
        if len(items) > 200:
            raise BadValue("too many items")
        if self.choices is not None:
            bad = [t for t in items if t not in self.choices]
            if bad:
                raise BadValue(f"{bad[0]!r} is not one of {', '.join(self.choices)}")
        return items

    def format(self, value: Any) -> str:
        return ",".join(str(v) for v in value)


@dataclass(frozen=True)
class TextParam(Param):
    """Free text of at most `max_len` characters."""

    max_len: int = 100

    def parse(self, raw: str) -> str:
        if len(raw) > self.max_len:
            raise BadValue(f"longer than {self.max_len} characters")
        return raw


def _check_range(value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise BadValue(f"below the minimum {lo}")
    if hi is not None and value > hi:
        raise BadValue(f"above the maximum {hi}")


#: URL parameter naming the page that wrote the others; reserved.
PAGE_PARAM = "page"
#: Streamlit's own URL parameters, never touched.
RESERVED = ("embed", "embed_options")


class UrlState:
    """A page's URL-backed parameters; widgets bind to them through key(name).

    The URL also carries page=<name>. Values written by another page (a link copied from
    one page and opened on another, or parameters kept across navigation) are ignored, and
    the first save() replaces them, as st.switch_page does.
    """

    def __init__(self, page: str, params: Iterable[Param]) -> None:
        self.page = page
        self.params: dict[str, Param] = {p.name: p for p in params}
        bad = {PAGE_PARAM, *RESERVED} & set(self.params)
        if bad:
            raise ValueError(f"reserved URL parameter names: {sorted(bad)}")

    def _url_is_ours(self) -> bool:
        owner = st.query_params.get(PAGE_PARAM)
        return owner is None or owner == self.page

    def key(self, name: str) -> str:
        """The st.session_state key (and widget key) of a parameter."""
        if name not in self.params:
            raise KeyError(f"unknown parameter {name!r} for page {self.page!r}")
        return f"{self.page}.{name}"

    def load(self) -> list[str]:
        """Seed st.session_state from the URL for parameters without widget state yet.

        Returns one short notice per URL value that was rejected (the default is used).
        """
        notices = []
        ours = self._url_is_ours()
        for name, param in self.params.items():
            key = self.key(name)
            if key in st.session_state:
                continue
            value = param.default
            raw = st.query_params.get(name) if ours else None
            if raw is not None:
                try:
                    value = param.parse(raw)
                except BadValue as err:
                    shown = raw if len(raw) <= 40 else raw[:37] + "..."
                    notices.append(
                        f"Ignored {name}={shown!r} from the link ({err}); "
                        f"using the default {param.format(param.default)}."
                    )
            st.session_state[key] = value
        return notices

    def values(self) -> dict[str, Any]:
        """Current value of every parameter (the default when it has no state yet)."""
        return {
            name: st.session_state.get(self.key(name), param.default)
            for name, param in self.params.items()
        }

    def save(self) -> None:
        """Write current values to the URL; only entries that changed are sent."""
        if not self._url_is_ours():
            for name in list(st.query_params.keys()):
                if name not in RESERVED:
                    del st.query_params[name]
        if st.query_params.get(PAGE_PARAM) != self.page:
            st.query_params[PAGE_PARAM] = self.page
        for name, value in self.values().items():
            text = self.params[name].format(value)
            if st.query_params.get(name) != text:
                st.query_params[name] = text
