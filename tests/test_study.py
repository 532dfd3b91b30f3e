"""covnoise.results.study: the study grids are what the sweep commands run, and the GPU study's code
path (CIFAR-10 files, VGG, every structure) trains on the CPU."""

from __future__ import annotations

import math
import shlex

import numpy as np
import pytest

from covnoise import results
from covnoise.cli.main import build_parser, main
from covnoise.cli.sweep import sweep_configs
from covnoise.core.train import run
from tests.helpers import make_cifar


@pytest.mark.parametrize("name", sorted(results.ALL_STUDIES))
def test_a_study_has_every_arm_with_its_seeds(name):
    s = results.ALL_STUDIES[name]
    configs = s.configs()
    arms = {}
    for cfg in configs:
        key = (cfg.batch_size, cfg.noise, cfg.noise_scale if cfg.noise != "none" else None, cfg.lr)
        arms.setdefault(key, set()).add(cfg.seed)
        assert cfg.dataset == s.dataset and cfg.small_batch == s.small_batch
        assert cfg.epochs == s.epochs and cfg.name.startswith(f"study {s.name} (")
    expected = {(s.small_batch, "none", None, s.base_lr)}
    expected |= {(s.large_batch, "none", None, lr) for lr in (s.base_lr, *s.tuned_lrs)}
    expected |= {(s.large_batch, n, sc, s.base_lr) for n in results.NOISY for sc in s.scales}
    assert set(arms) == expected
    assert all(seeds == set(s.seeds) for seeds in arms.values())
    assert len(configs) == len({c.run_id() for c in configs})


@pytest.mark.parametrize("name", sorted(results.ALL_STUDIES))
def test_the_rendered_sweep_commands_make_exactly_the_studys_configs(name):
    """Study data and its shell rendering agree: the CLI's sweep parser, given each rendered
    command, expands to the same configs (ids and recorded names) as the study itself."""
    s = results.ALL_STUDIES[name]
    parser = build_parser()
    from_commands = []
    for label, command in s.commands():
        argv = shlex.split(command)
        assert argv[:2] == ["covnoise", "sweep"]
        assert argv[argv.index("--name") + 1] == s.run_name(label)
        from_commands += sweep_configs(parser.parse_args(argv[1:]))
    assert [c.to_dict() for c in from_commands] == [c.to_dict() for c in s.configs()]
    assert all((s.made_by or s.command) in c.name for c in s.configs())


def test_show_prints_the_sweep_commands(capsys):
    assert main(["study", "show", "mnist1d"]) == 0
    out = capsys.readouterr().out
    assert out.count("covnoise sweep") == 3


def test_unknown_study_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "run", "imagenet"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_study_runs_through_the_engine_and_exports_what_it_ran(tmp_path):
    """run_study submits each sweep to the local engine (no subprocess CLI) and exports
    exactly the study's configs, with their recorded names."""
    from covnoise.runs import read_runs_parquet

    tiny = results.Study(
        name="tiny",
        dataset="digits",
        small_batch=8,
        large_batch=64,
        base_lr=0.1,
        tuned_lrs=(),
        epochs=0.05,
        target_train_loss=1.0,
        common={
            "dataset": "digits",
            "model": "mlp",
            "width": 8,
            "depth": 1,
            "sharpness_every": 0,
            "probe_size": 16,
            "device": "cpu",
        },
        small_eval_every=4,
        large_eval_every=1,
        seeds=(0,),
        scales=(1.0,),
        description="a tiny study for the test",
    )
    out = tmp_path / "tiny.parquet"
    lines: list[str] = []
    n = results.run_study(tiny, out, workers=1, report=lines.append)
    runs, _ = read_runs_parquet(out)
    assert n == len(runs) == len(tiny.configs()) == 5
    assert set(runs["run_id"]) == {c.run_id() for c in tiny.configs()}
    assert set(runs["status"]) == {"finished"}
    assert any("large batch + noise: 3/3 done" in line for line in lines)


def test_the_gpu_study_trains_on_the_cpu_on_tiny_cifar_files(tmp_path, one_thread):
    make_cifar(tmp_path, np.random.default_rng(0), per_batch=8, n_test=4)
    s = results.GPU_STUDIES["cifar10"]
    seen = set()
    for cfg in s.configs():
        key = (cfg.batch_size, cfg.noise)
        if key in seen or cfg.seed or cfg.lr != s.base_lr:
            continue
        seen.add(key)
        small = cfg.replace(
            device="cpu",
            data_dir=str(tmp_path),
            width=16,
            epochs=None,
            steps=2,
            eval_every=1,
            batch_size=16 if cfg.batch_size == s.large_batch else 4,
            small_batch=4,
            probe_size=8,
            lanczos_iters=3,
            noise_samples=2,
            warmup_epochs=0.1,
        )
        events = []
        summary = run(small, emit=events.append)
        assert summary["status"] == "finished", summary["message"]
        first = [e for e in events if e["event"] == "metric"][0]["metrics"]
        assert math.isfinite(first["sharpness"]) and first["sharpness_hvps"] >= 1
        if cfg.noise != "none":
            assert first["noise_fro"] > 0 and first["noise_trace"] > 0
    assert seen == {
        (s.small_batch, "none"),
        (s.large_batch, "none"),
        *((s.large_batch, n) for n in results.NOISY),
    }
