"""covnoise.ui.memo: the cache key follows the contents exactly (a changed or added row is a new
key), and the cached results are the library's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt

from covnoise import results
from covnoise.ui import memo


def curve_and_groups():
    rng = np.random.default_rng(0)
    curve = pd.DataFrame(
        {
            "run_id": np.repeat(["a", "b", "c"], 50),
            "x": np.tile(np.arange(50.0), 3),
            "value": rng.normal(size=150),
        }
    )
    groups = pd.Series({"a": "g1", "b": "g1", "c": "g2"})
    return curve, groups


def test_frame_key_follows_contents():
    curve, groups = curve_and_groups()
    key = memo.frame_key(curve, groups)
    assert key == memo.frame_key(curve.copy(), groups.copy())
    changed = curve.copy()
    changed.loc[149, "value"] += 1e-12  # one value in the last row of a live run
    assert memo.frame_key(changed, groups) != key
    longer = pd.concat([curve, curve.tail(1).assign(x=50.0)], ignore_index=True)
    assert memo.frame_key(longer, groups) != key
    assert memo.frame_key(curve, groups.replace("g2", "g1")) != key
    assert memo.frame_key(curve.rename(columns={"value": "v"}), groups) != key
    # dicts (a run's recorded versions) are hashed by their text
    runs = pd.DataFrame({"run_id": ["a"], "versions": [{"torch": "2"}]})
    assert memo.frame_key(runs) != memo.frame_key(runs.assign(versions=[{"torch": "3"}]))


def test_cached_aggregate_is_the_library_result_and_stays_live():
    curve, groups = curve_and_groups()
    pdt.assert_frame_equal(
        memo.aggregate_seeds(curve, groups), results.aggregate_seeds(curve, groups)
    )
    moved = curve.assign(value=curve["value"] + 1.0)
    pdt.assert_frame_equal(
        memo.aggregate_seeds(moved, groups), results.aggregate_seeds(moved, groups)
    )


def test_warm_imports_runs_once_in_the_background():
    thread = memo.warm_imports(("json",))
    assert thread is memo.warm_imports(("json",)) and thread.daemon
    thread.join(30)
    assert not thread.is_alive()
