"""The noise structures by name, and `make_structure`.

Adding a structure: its class in its own module, one line here, and its tests. The names are
also the choices of `RunConfig.noise` (covnoise.config.NOISES), which must list it too.
"""

from __future__ import annotations

from covnoise.core.noise.base import NoiseStructure, Structure
from covnoise.core.noise.diag import DiagNoise
from covnoise.core.noise.full import FullNoise
from covnoise.core.noise.isotropic import IsotropicNoise
from covnoise.core.noise.none import NoNoise

STRUCTURES: dict[str, type[Structure]] = {
    "none": NoNoise,
    "isotropic": IsotropicNoise,
    "diag": DiagNoise,
    "full": FullNoise,
}


def make_structure(
    name: str,
    c: float,
    *,
    stats_rows: int | None = None,
    stats_every: int = 1,
    source: str = "batch",
) -> NoiseStructure:
    """The structure `name` with scale c = s(1/M − 1/L), its statistics schedule and source.

    stats_rows: sub-batch size for v (None = the whole batch); stats_every: refresh v every
    k steps. Both only matter for diag and isotropic. source: "batch" (C of the batch's
    per-example gradients) or "fisher" (C of the gradients at labels sampled from the
    model's predictions: the true Fisher; covnoise.core.noise.base).
    """
    try:
        cls = STRUCTURES[name]
    except KeyError:
        raise ValueError(
            f"noise structure {name!r} is not one of {', '.join(STRUCTURES)}"
        ) from None
    return cls(c, stats_rows=stats_rows, stats_every=stats_every, source=source)
