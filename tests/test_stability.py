"""covnoise.results.stability: the warnings Train shows before launch, from earlier runs.

The stability limit 2(1+β)/λ_max is checked against heavy-ball iterations on a quadratic;
the warnings against synthetic run tables with known λ_max and divergences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covnoise.config import RunConfig
from covnoise.results.stability import first_values, launch_warnings


def _heavy_ball_end(eta: float, beta: float, lam: float, steps: int = 500) -> float:
    """|x| after `steps` heavy-ball steps on f(x) = λx²/2 from x = 1."""
    x_prev = x = 1.0
    for _ in range(steps):
        x, x_prev = x - eta * lam * x + beta * (x - x_prev), x
    return abs(x)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_the_limit_is_where_heavy_ball_on_a_quadratic_starts_to_diverge(beta):
    lam = 4.0
    limit = 2 * (1 + beta) / lam
    assert _heavy_ball_end(0.95 * limit, beta, lam) < 1e-3
    assert _heavy_ball_end(1.05 * limit, beta, lam) > 1e3


def _runs(rows):
    base = RunConfig(dataset="mnist1d", width=256, depth=3, batch_size=1024, small_batch=32)
    return pd.DataFrame(
        [
            {
                "run_id": rid,
                "status": status,
                "config": base.replace(lr=lr).to_json(),
                "cfg_dataset": "mnist1d",
                "cfg_model": "mlp",
                "cfg_width": 256,
                "cfg_depth": 3,
                "cfg_lr": lr,
                "cfg_lr_scaling": "none",
                "cfg_batch_size": 1024,
                "cfg_small_batch": 32,
            }
            for rid, status, lr in rows
        ]
    )


def test_warnings_name_the_limit_the_divergences_and_far_multipliers():
    runs = _runs([("a", "finished", 0.4), ("b", "finished", 0.4), ("c", "diverged", 3.2)])
    metrics = pd.DataFrame(
        [
            {"run_id": r, "step": step, "name": "sharpness", "value": v}
            for r, first in (("a", 4.0), ("b", 6.0))
            for step, v in ((0, first), (10, 50.0))
        ]
    )
    lam = first_values(metrics)
    assert lam.to_dict() == {"a": 4.0, "b": 6.0}  # the first, not the largest
    base = RunConfig(dataset="mnist1d", width=256, depth=3, batch_size=1024, small_batch=32)
    assert launch_warnings([base.replace(lr=0.3)], runs, lam) == []  # 2/5 = 0.4
    (text,) = launch_warnings([base.replace(lr=0.8)], runs, lam)
    assert "above 2(1+β)/λ_max ≈ 0.4" in text and "λ_max ≈ 5" in text and "2 earlier" in text
    momentum = launch_warnings([base.replace(lr=0.5, momentum=0.9)], runs, lam)
    assert momentum == []  # 2(1.9)/5 = 0.76
    texts = launch_warnings([base.replace(lr=4.0)], runs, lam)
    assert any("1 earlier run(s) of the mlp 256×3 on mnist1d diverged" in t for t in texts)
    other = base.replace(dataset="digits")
    assert launch_warnings([other.replace(lr=4.0)], runs, lam) == []  # other model: silent
    far = launch_warnings([base.replace(lr=0.1, noise="diag", noise_scale=20.0)], runs, lam)
    assert far and "s = 20 is far above the studied range" in far[-1]
    assert np.isfinite(lam).all()
