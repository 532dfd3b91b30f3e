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

RATIOS = {"isotropic": 35.0, "diag": 6.5, "full": 1.0}


@pytest.mark.parametrize("name", sorted(results.ALL_STUDIES))
def test_a_study_has_every_arm_with_its_seeds(name):
    s = results.ALL_STUDIES[name]
    configs = s.configs(RATIOS)
    arms, pilot = {}, {}
    for cfg in configs:
        key = (cfg.batch_size, cfg.noise, cfg.noise_scale if cfg.noise != "none" else None, cfg.lr)
        assert cfg.dataset == s.dataset and cfg.small_batch == s.small_batch
        assert cfg.name.startswith(f"study {s.name} (")
        if cfg.name.endswith(f"sweep: {results.PILOT}"):
            assert cfg.epochs == s.pilot_epochs and cfg.sharpness_every == 1
            pilot.setdefault(key, set()).add(cfg.seed)
            continue
        assert cfg.epochs == s.epochs
        arms.setdefault((*key, cfg.noise_source), set()).add(cfg.seed)
    seeds, tuned = set(s.seeds), set(s.tuned_seeds or s.seeds)
    expected = {(s.small_batch, "none", None, s.base_lr, "batch"): seeds}
    expected[(s.large_batch, "none", None, s.base_lr, "batch")] = seeds
    expected |= {(s.large_batch, "none", None, lr, "batch"): tuned for lr in s.tuned_lrs}
    expected |= {
        (s.large_batch, n, sc, s.base_lr, "batch"): seeds for n in results.NOISY for sc in s.scales
    }
    for n in ("isotropic", "diag") if s.matched_scales else ():
        for sc in s.matched_scales:
            expected[
                (s.large_batch, n, results.matched_scale(sc, RATIOS[n]), s.base_lr, "batch")
            ] = seeds
    for source in s.sources:
        expected |= {(s.large_batch, n, 1.0, s.base_lr, source): seeds for n in ("diag", "full")}
    assert arms == expected
    if s.matched_scales:
        assert pilot == {
            (s.large_batch, n, 1.0, s.base_lr): set(s.pilot_seeds) for n in results.NOISY
        }
    else:
        assert not pilot
    assert len(configs) == len({c.run_id() for c in configs})


@pytest.mark.parametrize("name", sorted(results.ALL_STUDIES))
def test_the_rendered_sweep_commands_make_exactly_the_studys_configs(name):
    """Study data and its shell rendering agree: the CLI's sweep parser, given each rendered
    command, expands to the same configs (ids and recorded names) as the study itself."""
    s = results.ALL_STUDIES[name]
    parser = build_parser()
    from_commands = []
    for label, command in s.commands(RATIOS):
        argv = shlex.split(command)
        assert argv[:2] == ["covnoise", "sweep"]
        assert argv[argv.index("--name") + 1] == s.run_name(label)
        from_commands += sweep_configs(parser.parse_args(argv[1:]))
    assert [c.to_dict() for c in from_commands] == [c.to_dict() for c in s.configs(RATIOS)]
    assert all((s.made_by or s.command) in c.name for c in s.configs(RATIOS))


def test_show_prints_the_sweep_commands(capsys, monkeypatch, tmp_path):
    """With the cached file, the equal-Frobenius sweeps carry the multipliers its pilot
    gives; without it, a note says how they are chosen."""
    s = results.STUDIES["mnist1d"]
    assert main(["study", "show", "mnist1d"]) == 0
    out = capsys.readouterr().out
    assert out.count("covnoise sweep") == len(s.commands({"isotropic": 1.0, "diag": 1.0})) == 8
    assert "sweep: equal Frobenius, diag" in out
    monkeypatch.chdir(tmp_path)  # no cached_runs/ here
    assert main(["study", "show", "mnist1d"]) == 0
    out = capsys.readouterr().out
    assert (
        out.count("covnoise sweep") == 6 and "# equal Frobenius: isotropic and diag at s·r" in out
    )


def test_unknown_study_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "run", "imagenet"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_a_study_runs_through_the_engine_and_exports_what_it_ran(tmp_path):
    """run_study runs the pilot first on the local engine (no subprocess CLI), takes the
    equal-Frobenius multipliers from the pilot's logged ‖Σ‖_F, and exports exactly the
    study's configs; the ratios recomputed from the exported pilot give the same configs."""
    from covnoise.results.tables import sweep_label
    from covnoise.runs import read_runs_parquet

    tiny = results.Study(
        name="tiny",
        dataset="digits",
        small_batch=8,
        large_batch=64,
        base_lr=0.1,
        tuned_lrs=(0.2,),
        epochs=0.1,
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
        matched_scales=(0.5,),
        sources=("fisher",),
        pilot_epochs=0.1,
        pilot_seeds=(0,),
        description="a tiny study for the test",
    )
    out = tmp_path / "tiny.parquet"
    lines: list[str] = []
    n = results.run_study(tiny, out, workers=1, report=lines.append)
    runs, metrics = read_runs_parquet(out)
    pilot = runs[runs["name"].map(sweep_label) == results.PILOT]
    ratios = results.pilot_ratios(pilot, metrics)
    assert ratios["full"] == 1.0 and ratios["diag"] > 1 and ratios["isotropic"] > 1
    configs = tiny.configs(ratios)
    assert n == len(runs) == len(configs) == 3 + 3 + 2 + 2 + 3
    assert set(runs["run_id"]) == {c.run_id() for c in configs}
    assert set(runs["status"]) == {"finished"}
    frob = {c.noise: c.noise_scale for c in configs if results.EQUAL_FROBENIUS in c.name}
    assert frob == {k: results.matched_scale(0.5, ratios[k]) for k in ("isotropic", "diag")}
    assert any("pilot: 3/3 done" in line for line in lines)
    assert any("‖K_full‖_F/‖K‖_F" in line for line in lines)


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
