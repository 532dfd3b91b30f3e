"""The GPU script (bench/gpu.py) is kept working on the CPU: its quick mode runs every part
(step-cost grid, loop speed, SB/LB sweep through the engine) and writes the rows it promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from covnoise.runs import RunStore


@pytest.mark.slow
def test_the_gpu_script_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "rows"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    steps = (out / "steps.md").read_text()
    epoch = (out / "epoch.md").read_text()
    assert "| mlp | 128 |" in steps and "isotropic" in steps
    assert "| digits mlp B=32 |" in epoch
    for part in ("steps", "epoch", "sweep mnist1d SB", "sweep mnist1d LB"):
        assert f"| {part} | 0 |" in summary
    with RunStore(out / "sweep.sqlite") as store:
        runs = store.runs()
        configs = [store.get_run(rid)["config"] for rid in runs["run_id"]]
    assert set(runs["status"]) == {"finished"}
    assert sorted((c["batch_size"], c["noise"]) for c in configs) == [
        (64, "none"),
        (512, "diag"),
        (512, "full"),
        (512, "none"),
    ]
    assert (out / "sweep.md").read_text().count("| mnist1d |") == 4
