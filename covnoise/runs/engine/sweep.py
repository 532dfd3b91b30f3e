"""Grid expansion for sweeps: batch sizes × structures × multipliers × learning rates × seeds."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from covnoise.config import RunConfig


def expand_grid(
    base: RunConfig,
    *,
    batch_sizes: Iterable[int] | None = None,
    noises: Iterable[str] | None = None,
    noise_scales: Iterable[float] | None = None,
    lrs: Iterable[float] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[RunConfig]:
    """Every combination of the given values, other fields from `base`, each validated.

    A dimension left as None keeps the base value. The multiplier means nothing without
    noise, so runs with noise "none" keep the base multiplier and appear once per other
    combination. Raises ConfigError (naming the field) for the first invalid combination.
    """
    dims = {
        "batch_size": _values(batch_sizes, base.batch_size),
        "noise": _values(noises, base.noise),
        "noise_scale": _values(noise_scales, base.noise_scale),
        "lr": _values(lrs, base.lr),
        "seed": _values(seeds, base.seed),
    }
    out: list[RunConfig] = []
    seen: set[str] = set()
    for combo in itertools.product(*dims.values()):
        changes = dict(zip(dims, combo, strict=True))
        if changes["noise"] == "none":
            changes["noise_scale"] = base.noise_scale
        cfg = base.replace(**changes)
        rid = cfg.run_id()
        if rid not in seen:
            seen.add(rid)
            out.append(cfg)
    return out


def _values(given: Iterable | None, default: object) -> list:
    if given is None:
        return [default]
    values = list(dict.fromkeys(given))  # keep order, drop repeats
    return values or [default]
