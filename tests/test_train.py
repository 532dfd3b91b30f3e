"""The training loop and the CLI end to end on tiny configs."""

import json
import math
import subprocess
import sys

import pytest
import torch

from covnoise.config import RunConfig
from covnoise.core.train import learning_rate, run

TINY = dict(
    dataset="digits",
    model="mlp",
    width=32,
    depth=2,
    batch_size=256,
    small_batch=16,
    lr=0.2,
    steps=12,
    eval_every=4,
    probe_size=64,
    lanczos_iters=10,
    noise_samples=2,
)


def _events(config):
    events = []
    summary = run(config, emit=events.append)
    return events, summary


@pytest.mark.parametrize("noise", ["none", "isotropic", "diag", "full"])
def test_run_emits_start_metrics_summary(noise):
    events, summary = _events(RunConfig(noise=noise, **TINY))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    metrics = [e for e in events if e["event"] == "metric"]
    assert [e["step"] for e in metrics] == [0, 4, 8, 12]
    m = metrics[-1]["metrics"]
    for key in (
        "train_loss",
        "test_loss",
        "train_acc",
        "test_acc",
        "sharpness",
        "sharpness_residual",
        "sharpness_converged",
        "val_loss",
        "val_acc",
        "noise_trace",
        "noise_fro",
        "noise_trace_hsigma",
        "grad_norm",
        "dist_init",
        "lr",
    ):
        assert key in m, key
    assert summary["status"] == "finished" and summary["steps"] == 12
    assert summary["examples_seen"] == 12 * 256
    assert metrics[-1]["examples_seen"] == 12 * 256
    # training makes progress
    assert m["train_loss"] < metrics[0]["metrics"]["train_loss"]
    # the noise statistics are zero exactly when there is no noise
    assert (m["noise_trace"] == 0.0) == (noise == "none")
    json.dumps(events)  # JSON-ready


@pytest.mark.parametrize(
    "batch_size, stats_every, expected",
    [(64, 4, 32), (256, 4, 8), (256, 3, 3)],  # default schedule stretched at small B; as given
)
def test_runs_log_how_often_the_noise_statistics_refresh(batch_size, stats_every, expected):
    """diag runs log the refresh interval they really use (the default 128 rows every 4 steps
    is stretched to 4·(512/B), and to at least 8 at small B·P; other schedules are used as
    given): it equals the spacing of the refreshes the run's noise state counted."""
    import time

    from covnoise.core.train import Training

    cfg = RunConfig(
        noise="diag",
        **{**TINY, "batch_size": batch_size, "steps": 40, "stats_every": stats_every},
    )
    events = []
    training = Training(cfg, events.append, time.perf_counter())
    assert training.loop(None) == ("finished", None)
    logged = {e["metrics"]["stats_refresh_every"] for e in events if e["event"] == "metric"}
    assert logged == {float(expected)}
    assert training.state.refreshes == math.ceil(40 / expected)
    assert training.state.stats_interval == expected
    events, _ = _events(RunConfig(noise="full", **TINY))
    assert all("stats_refresh_every" not in e["metrics"] for e in events if e["event"] == "metric")


def test_sharpness_converged_follows_lanczos_stopping_rule():
    """Logged at every sharpness evaluation and only there: 0 when Lanczos spent its whole
    budget (lanczos_iters + 1 Hessian-vector products with the residual check) without
    meeting its tolerance, 1 when it stopped on the tolerance."""
    for iters, expect in ((2, 0.0), (20, 1.0)):
        cfg = RunConfig(**{**TINY, "width": 8, "lanczos_iters": iters, "sharpness_every": 2})
        events, _ = _events(cfg)
        metrics = [e["metrics"] for e in events if e["event"] == "metric"]
        assert ["sharpness_converged" in m for m in metrics] == [True, False, True, False]
        measured = [m for m in metrics if "sharpness" in m]
        assert [m["sharpness_converged"] for m in measured] == [expect, expect]
        for m in measured:  # unconverged ⇔ the budget was spent (here)
            assert (m["sharpness_hvps"] == iters + 1) == (m["sharpness_converged"] == 0.0)


def test_run_is_bit_for_bit_reproducible_on_cpu():
    cfg = RunConfig(noise="diag", device="cpu", **TINY)
    a, sa = _events(cfg)
    b, sb = _events(cfg)
    ma = [(e["step"], e["metrics"]) for e in a if e["event"] == "metric"]
    mb = [(e["step"], e["metrics"]) for e in b if e["event"] == "metric"]
    assert ma == mb  # every float compared exactly
    assert sa["final"] == sb["final"]
    # and a different seed gives a different run
    c, _ = _events(cfg.replace(seed=1))
    assert [(e["step"], e["metrics"]) for e in c if e["event"] == "metric"] != ma


def test_diverging_run_ends_diverged_and_names_the_step():
    cfg = RunConfig(noise="none", **{**TINY, "lr": 1e8, "steps": 30})
    events, summary = _events(cfg)
    assert summary["status"] == "diverged"
    assert "at step" in summary["message"]
    step = int(summary["message"].rsplit(" ", 1)[1])
    assert summary["steps"] == step < 30


def test_a_blown_up_but_finite_loss_ends_diverged():
    """A loss past 1e6 × the initial training loss ends the run, before it overflows."""
    from covnoise.core.train import BLOW_UP_FACTOR

    cfg = RunConfig(noise="none", **{**TINY, "lr": 300.0, "steps": 30, "eval_every": 1})
    events, summary = _events(cfg)
    metrics = [e["metrics"] for e in events if e["event"] == "metric"]
    initial = metrics[0]["train_loss"]
    assert summary["status"] == "diverged" and "exceeded" in summary["message"]
    step = int(summary["message"].rsplit(" ", 1)[1])
    assert summary["steps"] == step < 30
    loss = float(summary["message"].split()[2])
    assert loss > BLOW_UP_FACTOR * initial and all(math.isfinite(m["train_loss"]) for m in metrics)
    # every evaluation before the end was under the bound
    assert all(m["train_loss"] <= BLOW_UP_FACTOR * initial for m in metrics[:-1])


def test_cancel_between_steps():
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    summary = run(RunConfig(**TINY), should_stop=stop)
    assert summary["status"] == "cancelled" and summary["steps"] == 3


def test_schedules():
    cfg = RunConfig(lr=1.0, schedule="warmup_cosine", warmup_epochs=2.0, epochs=10.0)
    lrs = [learning_rate(cfg, s, 10, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.05) and lrs[19] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(1.0) and lrs[-1] < 1e-3
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False))
    step = RunConfig(lr=1.0, schedule="step", step_every_epochs=3.0, step_gamma=0.5)
    assert [learning_rate(step, s, 10, 100) for s in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "covnoise", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, field",
    [
        (["--dataset", "imagenet"], "dataset"),
        (["--batch-size", "4096"], "batch_size"),
        (["--noise", "diag", "--small-batch", "2048", "--batch-size", "1024"], "small_batch"),
        (["--lr", "-1"], "lr"),
        (["--lr", "abc"], "--lr"),
        (["--device", "tpu"], "device"),
    ],
)
def test_cli_bad_config_exits_2_with_one_line(args, field):
    out = _cli("train", *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in out.stderr


def test_cli_json_events_and_diverged_exit_code():
    out = _cli(
        "train",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--width",
        "16",
        "--depth",
        "2",
        "--batch-size",
        "128",
        "--noise",
        "full",
        "--probe-size",
        "32",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "metric", "metric", "metric", "summary"]
    s = events[-1]
    for key in ("final", "steps", "examples_seen", "wall_time", "device", "versions"):
        assert key in s
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "sharpness", "noise_fro"} <= set(
        s["final"]
    )
    bad = _cli(
        "train",
        "--steps",
        "20",
        "--lr",
        "1e8",
        "--width",
        "16",
        "--depth",
        "2",
        "--batch-size",
        "128",
        "--sharpness-every",
        "0",
        "--json",
    )
    assert bad.returncode == 3
    assert json.loads(bad.stdout.splitlines()[-1])["status"] == "diverged"


def test_cuda_path_when_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine; the GPU path is checked on a GPU machine")
    _, summary = _events(RunConfig(noise="diag", device="cuda", **TINY))
    assert summary["status"] == "finished" and summary["device"].startswith("cuda")


@pytest.mark.parametrize("noise, stats_rows", [("full", None), ("diag", 4), ("isotropic", 4)])
def test_training_step_injects_the_target_covariance(noise, stats_rows):
    """The real step (noisy_step with plain SGD, lr 1) moves θ by −(ḡ + ξ); over many steps
    from the same θ, Cov(ξ) must equal c·K built from torch.func per-example gradients."""
    from covnoise.core.noise import make_structure
    from covnoise.core.train import noisy_step
    from tests.test_noise import batch, cov_z_scores, dense_sigma, flat_grads, tiny

    model, (x, y) = tiny(3), batch(12, 4, 5)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    c, S = 0.3, 6000
    structure = make_structure(noise, c, stats_rows=stats_rows, stats_every=1)
    state = structure.init(params)
    opt = torch.optim.SGD(params, lr=1.0)
    gen = torch.Generator().manual_seed(0)
    G = flat_grads(model, x, y)
    mean_grad = G.mean(0)
    steps = []
    for _ in range(S):
        _, state = noisy_step(model, params, opt, structure, state, x, y, gen)
        with torch.no_grad():
            steps.append(
                torch.cat([(p0 - p).flatten() for p, p0 in zip(params, start, strict=True)])
            )
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
    xi = torch.stack(steps) - mean_grad
    z = cov_z_scores(xi, dense_sigma(noise, c, G))
    assert z.abs().max() < 5, float(z.abs().max())
    assert bool((xi.mean(0).abs() < 5 * xi.std(0) / S**0.5).all())  # unbiased: E[ξ] = 0
    # and the test can tell the structures apart
    wrong = "diag" if noise == "full" else "full"
    assert cov_z_scores(xi, dense_sigma(wrong, c, G)).abs().max() > 10


def test_runs_record_the_checkouts_code_revision():
    """code_revision finds the repository from the package's own location."""
    import subprocess
    from pathlib import Path

    from covnoise.core.train import code_revision

    here = Path(__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert code_revision().removesuffix("-dirty") == head.stdout.strip()


def test_the_faces_keep_the_names_other_layers_import():
    """The engine imports run by its dotted path; the CLI, bench and tests use these names."""
    import importlib

    import covnoise.core as core
    from covnoise.core import provenance, step, train
    from covnoise.core.losses import per_example_loss

    module, _, name = "covnoise.core.train.run".rpartition(".")
    assert getattr(importlib.import_module(module), name) is run is core.run
    assert train.code_revision is provenance.code_revision is core.code_revision
    assert train.noisy_step is step.noisy_step is core.noisy_step
    assert train.per_example_loss is per_example_loss is core.per_example_loss
    assert train.resolve_device is core.resolve_device
    assert str(train.resolve_device("cpu")) == "cpu"
    assert train.describe_device(torch.device("cpu")).startswith("cpu (")
    assert set(train.versions()) == {"python", "torch", "numpy", "covnoise", "cpu_draw"}
