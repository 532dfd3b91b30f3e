"""Numbers that pass the old checks but cannot run are refused up front: one line naming the
field and the bound, exit 2, nothing trained and nothing stored."""

from __future__ import annotations

import time

import pytest

from covnoise.cli.main import main
from covnoise.config import (
    MAX_DEPTH,
    MAX_LANCZOS_ITERS,
    MAX_NOISE_SAMPLES,
    MAX_PARAMETERS,
    MAX_SEED,
    MAX_SPLIT_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    ConfigError,
    RunConfig,
    field_info,
)
from covnoise.runs.checks import parameter_count, training_size

# digits: 1347 training examples, 135 held out at the default val_fraction 0.1
DIGITS_FIT = 1347 - 135


def _refused(argv: list[str], capsys) -> str:
    """Run the CLI, assert exit 2 and one stderr line, return that line (argparse's own
    errors leave main through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "flags, field, bound",
    [
        (["--epochs", "1e308"], "epochs", "1e+08"),
        (["--seed", "12345678901234567890123"], "seed", str(MAX_SEED)),
        (["--seed", str(MAX_SEED + 1)], "seed", str(MAX_SEED)),
        (["--split-seed", str(MAX_SPLIT_SEED + 1)], "split_seed", str(MAX_SPLIT_SEED)),
        (["--width", "1e12"], "width", str(MAX_WIDTH)),
        (["--width", "1000000000000"], "width", str(MAX_WIDTH)),
        (["--depth", "1000"], "depth", str(MAX_DEPTH)),
        (["--steps", "1e14"], "steps", str(MAX_STEPS)),
        (["--noise-samples", "1e9"], "noise_samples", str(MAX_NOISE_SAMPLES)),
        (["--lanczos-iters", "5000"], "lanczos_iters", str(MAX_LANCZOS_ITERS)),
        (["--warmup-epochs", "1e300"], "warmup_epochs", "1e+08"),
        (["--eval-every", "1e30"], "eval_every", str(2**63 - 1)),
    ],
)
def test_numbers_past_their_bound_are_one_line_and_exit_2(flags, field, bound, capsys):
    line = _refused(["train", *flags], capsys)
    assert line.startswith(f"error: {field}: "), line
    assert bound in line, line


@pytest.mark.parametrize(
    "flags, field, bound",
    [
        # 1e7 epochs at batch 1 are 1.2e10 steps
        (["--epochs", "1e7", "--batch-size", "1", "--small-batch", "1"], "epochs", "100000000"),
        (["--probe-size", "5000"], "probe_size", str(DIGITS_FIT)),
        (["--batch-size", "5000"], "batch_size", str(DIGITS_FIT)),
        # width at its cap passes the field check, but a 3-layer MLP has 4.3e9 parameters
        (["--width", str(MAX_WIDTH)], "width", f"{MAX_PARAMETERS:.0e}"),
    ],
)
def test_numbers_too_large_for_the_data_set_are_refused(flags, field, bound, capsys):
    line = _refused(["train", "--dataset", "digits", *flags], capsys)
    assert line.startswith(f"error: {field}: "), line
    assert bound in line, line


def test_a_non_integer_in_float_notation_is_named(capsys):
    line = _refused(["train", "--width", "2.5"], capsys)
    assert "--width" in line and "not an integer" in line


def test_every_default_and_every_widget_maximum_is_valid():
    """The app's form offers values up to `high`: each must pass validation."""
    RunConfig().validate(n_train=DIGITS_FIT)
    for name in ("width", "depth", "epochs", "warmup_epochs", "lanczos_iters", "seed"):
        info = field_info(name)
        assert info.max is not None and (info.high is None or info.high <= info.max), name
    with pytest.raises(ConfigError, match=r"seed: .* 0 to 9223372036854775807"):
        RunConfig(seed=2**63).validate()
    RunConfig(seed=MAX_SEED, steps=MAX_STEPS, epochs=None).validate()


def test_epochs_bound_follows_the_training_set_size():
    per_epoch = DIGITS_FIT / 16
    ok = RunConfig(batch_size=16, small_batch=8, epochs=MAX_STEPS / per_epoch)
    ok.validate(n_train=DIGITS_FIT)
    with pytest.raises(ConfigError, match=r"epochs: .* at most 100000000 steps"):
        ok.replace(epochs=MAX_STEPS / per_epoch * 1.01).validate(n_train=DIGITS_FIT)


def test_sizes_come_from_the_registry_and_options_without_loading():
    assert training_size(RunConfig(dataset="digits")) == DIGITS_FIT
    teacher = RunConfig(dataset="teacher", dataset_options={"n_train": 300, "dim": 7, "classes": 3})
    assert training_size(teacher) == 270
    # 7·256+256 + 256·256+256 + 256·3+3
    assert parameter_count(teacher) == 68611


def test_sweep_checks_every_config_against_the_data_set_before_storing(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    argv = ["sweep", "--dataset", "digits", "--batch-sizes", "64,5000", "--steps", "2"]
    line = _refused([*argv, "--store", str(store), "--no-progress"], capsys)
    assert line.startswith("error: batch_size: 5000"), line
    assert f"1..{DIGITS_FIT}" in line
    assert not store.exists()


def test_sweep_refuses_a_grid_too_long_for_the_data_set(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    argv = ["sweep", "--batch-sizes", "1", "--small-batch", "1", "--epochs", "1e6"]
    line = _refused([*argv, "--store", str(store), "--no-progress"], capsys)
    assert line.startswith("error: epochs: ") and "100000000 steps" in line
    assert not store.exists()


@pytest.mark.ray
def test_a_dead_ray_address_fails_within_the_timeout(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    from covnoise.runs.engine.ray_engine import CONNECT_TIMEOUT

    if ray.is_initialized():
        pytest.skip("a Ray cluster is already connected in this process")
    start = time.monotonic()
    argv = ["sweep", "--engine", "ray", "--address", "127.0.0.1:1", "--steps", "2"]
    line = _refused([*argv, "--store", str(tmp_path / "s.sqlite"), "--no-progress"], capsys)
    assert time.monotonic() - start < CONNECT_TIMEOUT + 10
    assert line.startswith("error: address: ") and "127.0.0.1:1" in line
    assert f"{CONNECT_TIMEOUT:g} s" in line
    assert not ray.is_initialized()
    assert not (tmp_path / "s.sqlite").exists()  # nothing left behind


def test_an_address_that_is_not_a_ray_cluster_is_refused_and_a_grpc_server_passes():
    """A TCP listener that never speaks gRPC made ray.init hang for minutes; a real gRPC
    server (what Ray's GCS is) passes the check."""
    pytest.importorskip("ray")
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from covnoise.runs.engine.ray_engine import check_address

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    start = time.monotonic()
    with pytest.raises(ConfigError, match="accepts connections but is not a Ray cluster"):
        check_address(f"127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
    assert time.monotonic() - start < 5
    listener.close()
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_address(f"127.0.0.1:{port}", timeout=5.0)
        check_address(f"ray://127.0.0.1:{port}", timeout=5.0)
    finally:
        server.stop(None)


def test_a_malformed_ray_address_is_named():
    pytest.importorskip("ray")
    from covnoise.runs.engine.ray_engine import check_address

    with pytest.raises(ConfigError, match="address: 'nowhere' is not host:port"):
        check_address("nowhere")


def test_the_engine_refuses_a_config_that_cannot_run_and_stores_nothing(tmp_path):
    from covnoise.runs import RunStore
    from covnoise.runs.engine import LocalEngine

    store = RunStore(tmp_path / "runs.sqlite")
    good = RunConfig(dataset="digits", steps=5, epochs=None)
    too_big = good.replace(batch_size=DIGITS_FIT + 1)
    engine = LocalEngine(store, workers=1, spares=0, start=False)
    try:
        with pytest.raises(ConfigError, match="batch_size"):
            engine.submit(too_big)
        with pytest.raises(ConfigError, match="batch_size"):
            engine.sweep(good, batch_sizes=[64, DIGITS_FIT + 1])  # one bad grid point
        assert store.runs().empty
        assert engine.submit(good.replace(batch_size=DIGITS_FIT)) in store.runs()["run_id"].tolist()
    finally:
        engine.close()
        store.close()
