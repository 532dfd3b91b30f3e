"""covnoise.study: the study grids are what the sweep command runs, and the GPU study's code
path (CIFAR-10 files, VGG, every structure) trains on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from covnoise import study
from covnoise.train import run
from tests.helpers import make_cifar


@pytest.mark.parametrize("name", sorted(study.ALL_STUDIES))
def test_a_study_has_every_arm_with_its_seeds(name):
    s = study.ALL_STUDIES[name]
    configs = s.configs()
    arms = {}
    for cfg in configs:
        key = (cfg.batch_size, cfg.noise, cfg.noise_scale if cfg.noise != "none" else None, cfg.lr)
        arms.setdefault(key, set()).add(cfg.seed)
        assert cfg.dataset == s.dataset and cfg.small_batch == s.small_batch
        assert cfg.epochs == s.epochs and cfg.name.startswith(f"study {s.name} (")
    expected = {(s.small_batch, "none", None, s.base_lr)}
    expected |= {(s.large_batch, "none", None, lr) for lr in (s.base_lr, *s.tuned_lrs)}
    expected |= {(s.large_batch, n, sc, s.base_lr) for n in study.NOISY for sc in s.scales}
    assert set(arms) == expected
    assert all(seeds == set(s.seeds) for seeds in arms.values())
    assert len(configs) == len({c.run_id() for c in configs})


def test_sweep_argv_records_how_each_run_was_made():
    s = study.STUDIES["digits"]
    label, args = s.sweeps()[0]
    argv = study.sweep_argv(s, args, "/tmp/x.sqlite", label)
    assert argv[1:4] == ["-m", "covnoise", "sweep"]
    assert argv[argv.index("--name") + 1] == s.run_name(label)
    assert s.command in s.run_name(label)


def test_show_prints_the_sweep_commands(capsys):
    assert study.main(["show", "mnist1d"]) == 0
    out = capsys.readouterr().out
    assert out.count("python -m covnoise sweep") == 3


def test_unknown_study_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        study.main(["run", "imagenet"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_gpu_study_trains_on_the_cpu_on_tiny_cifar_files(tmp_path, one_thread):
    make_cifar(tmp_path, np.random.default_rng(0), per_batch=8, n_test=4)
    s = study.GPU_STUDIES["cifar10"]
    seen = set()
    for cfg in s.configs():
        key = (cfg.batch_size, cfg.noise)
        if key in seen or cfg.seed or cfg.lr != s.base_lr:
            continue
        seen.add(key)
        small = cfg.replace(
            device="cpu", data_dir=str(tmp_path), width=16, epochs=None, steps=2, eval_every=1,
            batch_size=16 if cfg.batch_size == s.large_batch else 4, small_batch=4,
            probe_size=8, lanczos_iters=3, noise_samples=2, warmup_epochs=0.1,
        )  # fmt: skip
        events = []
        summary = run(small, emit=events.append)
        assert summary["status"] == "finished", summary["message"]
        first = [e for e in events if e["event"] == "metric"][0]["metrics"]
        assert math.isfinite(first["sharpness"]) and first["sharpness_hvps"] >= 1
        if cfg.noise != "none":
            assert first["noise_fro"] > 0 and first["noise_trace"] > 0
    assert seen == {(s.small_batch, "none"), (s.large_batch, "none"),
                    *((s.large_batch, n) for n in study.NOISY)}
