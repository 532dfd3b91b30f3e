"""Turning store rows into pandas frames and back: typed metrics, expanded configs, plain values.

Shared by the store (SQLite ↔ frames) and the Parquet files (Arrow ↔ frames), so runs and
metrics look the same whichever they come from. pandas is imported inside the functions:
workers write to the store without ever importing it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from covnoise.config import LEGACY_VALUES
from covnoise.runs.schema import METRIC_DTYPES

if TYPE_CHECKING:
    import pandas as pd


def chunks(items: list, size: int) -> Iterator[list]:
    """`items` in consecutive pieces of at most `size` (SQLite limits bound parameters)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def plain(value: Any) -> Any:
    """A plain Python value for sqlite or Arrow (NaN/NA → None, numpy scalars → Python)."""
    import pandas as pd

    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value


def typed_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The long metrics frame with nullable integer steps and float values."""
    return df.astype(METRIC_DTYPES)


def expand_runs(df: pd.DataFrame, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Add ``cfg_<field>`` columns from each run's config JSON (as RunStore.runs does);
    `where` keeps runs whose config field equals the value (compared as JSON text)."""
    import pandas as pd

    configs = [
        {**LEGACY_VALUES, **json.loads(c)} if isinstance(c, str) else {} for c in df["config"]
    ]  # a field the stored config lacks reads as what the run did (config.LEGACY_VALUES)
    if where:
        keep = [all(_json_eq(cfg.get(k), v) for k, v in where.items()) for cfg in configs]
        df = df[keep].reset_index(drop=True)
        configs = [c for c, k in zip(configs, keep, strict=True) if k]
    cfg = pd.DataFrame(configs, index=df.index)
    cfg = cfg.drop(columns=[c for c in cfg.columns if c == "name"])
    cfg.columns = [f"cfg_{c}" for c in cfg.columns]
    return pd.concat([df, cfg], axis=1)


def _json_eq(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and not isinstance(actual, str):
        try:
            wanted = json.loads(wanted)
        except ValueError:
            return False
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)):
        return float(actual) == float(wanted)
    return actual == wanted
