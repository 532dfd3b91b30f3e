"""Tests of the registry's default sizes, the missing-file check and CIFAR-10's binary version.

The registry's sizes are checked against what the loaders return; the files are written byte
by byte in the official formats (tests.helpers). No network is used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from covnoise.data import (
    CIFAR10_BIN_TEST_BATCH,
    CIFAR10_BIN_TRAIN_BATCHES,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    DATA_DIR_ENV,
    DATASETS,
    IDX_FILES,
    DatasetError,
    load_dataset,
    missing_files,
    read_cifar_batch,
    read_cifar_bin,
    restricted_pickle,
)
from tests.helpers import (
    cifar_bin_bytes,
    make_cifar,
    make_cifar_bin,
    make_idx_set,
    write_idx,
)

# ------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", ["digits", "mnist1d", "teacher", "mnist-5k"])
def test_registry_sizes_match_the_loaded_embedded_sets(tmp_path, name):
    spec = DATASETS[name]
    ds = load_dataset(name, data_dir=tmp_path)
    assert (ds.n_train, ds.n_test) == (spec.n_train, spec.n_test)
    assert ds.input_shape == spec.input_shape and ds.num_classes == spec.num_classes


def test_registry_sizes_of_file_backed_sets():
    for name in ("mnist", "fashion-mnist"):
        spec = DATASETS[name]
        assert (spec.n_train, spec.n_test, spec.input_shape, spec.num_classes) == (
            60000,
            10000,
            (1, 28, 28),
            10,
        )
    spec = DATASETS["cifar10"]
    assert (spec.n_train, spec.n_test, spec.input_shape, spec.num_classes) == (
        50000,
        10000,
        (3, 32, 32),
        10,
    )


# ------------------------------------------------------------------------------- missing files


def test_missing_files_of_embedded_sets_is_none(tmp_path):
    for name in ("digits", "mnist1d", "teacher", "mnist-5k"):
        assert missing_files(name, tmp_path) is None
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        missing_files("imagenet", tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_idx_files_are_named_until_written(tmp_path, name):
    msg = missing_files(name, tmp_path)
    assert msg.startswith(f"its files are not in {tmp_path / name} (missing ")
    assert all(f in msg for f in IDX_FILES.values())
    assert f"`python -m covnoise data download {name} --data-dir {tmp_path}`" in msg
    arrays = make_idx_set(tmp_path / name, np.random.default_rng(0), gz=(True, False) * 2)
    labels = tmp_path / name / "t10k-labels-idx1-ubyte"
    labels.unlink()
    msg = missing_files(name.upper(), tmp_path)
    assert msg is not None and "(missing t10k-labels-idx1-ubyte)" in msg
    write_idx(labels, arrays["t10k-labels-idx1-ubyte"], gz=True)  # as .gz this time
    assert missing_files(name, tmp_path) is None


def test_missing_cifar_files_are_named_until_written(tmp_path):
    msg = missing_files("cifar10", tmp_path)
    assert msg.startswith(f"its files are not in {tmp_path / 'cifar-10-batches-py'} (missing ")
    assert all(f in msg for f in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH))
    assert f"`python -m covnoise data download cifar10 --data-dir {tmp_path}`" in msg
    x_train, y_train, x_test, y_test = make_cifar(tmp_path, np.random.default_rng(1))
    assert missing_files("cifar10", tmp_path) is None
    # once the binary folder exists, its files are the ones needed
    (tmp_path / "cifar-10-batches-bin").mkdir()
    msg = missing_files("cifar10", tmp_path)
    assert f"not in {tmp_path / 'cifar-10-batches-bin'}" in msg
    assert all(f in msg for f in (*CIFAR10_BIN_TRAIN_BATCHES, CIFAR10_BIN_TEST_BATCH))
    make_cifar_bin(tmp_path, x_train, y_train, x_test, y_test)
    assert missing_files("cifar10", tmp_path) is None


def test_missing_files_defaults_to_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert f"not in {tmp_path / 'mnist'} " in missing_files("mnist")
    make_idx_set(tmp_path / "mnist", np.random.default_rng(2))
    assert missing_files("mnist") is None


# ---------------------------------------------------------------------------- CIFAR-10 binary


def _both_versions(tmp_path):
    """The same images as python batches under tmp/py and as binary batches under tmp/bin."""
    arrays = make_cifar(tmp_path / "py", np.random.default_rng(3))
    make_cifar_bin(tmp_path / "bin", *arrays)
    return arrays


def test_binary_batches_read_as_written_and_as_the_python_batches(tmp_path):
    x_train, y_train, x_test, y_test = _both_versions(tmp_path)
    py, bin_ = tmp_path / "py" / "cifar-10-batches-py", tmp_path / "bin" / "cifar-10-batches-bin"
    for i, (py_name, bin_name) in enumerate(
        zip(CIFAR10_TRAIN_BATCHES, CIFAR10_BIN_TRAIN_BATCHES, strict=True)
    ):
        x, y = read_cifar_bin(bin_ / bin_name)
        assert x.dtype == np.uint8 and x.shape == (4, 3, 32, 32) and y.dtype == np.int64
        assert np.array_equal(x.reshape(4, 3072), x_train[4 * i : 4 * i + 4])
        assert np.array_equal(y, y_train[4 * i : 4 * i + 4])
        x_py, y_py = read_cifar_batch(py / py_name)
        assert np.array_equal(x, x_py) and np.array_equal(y, y_py)
    x, y = read_cifar_bin(bin_ / CIFAR10_BIN_TEST_BATCH)
    assert np.array_equal(x.reshape(-1, 3072), x_test) and np.array_equal(y, y_test)
    # channel-major: the first 1024 pixel bytes of a record are the red plane, row by row
    assert np.array_equal(x[0, 0].reshape(-1), x_test[0, :1024])


def test_binary_version_loads_like_the_python_version_without_pickle(tmp_path, monkeypatch):
    _both_versions(tmp_path)
    from_py = load_dataset("cifar10", data_dir=tmp_path / "py")

    def no_pickle(*args, **kwargs):
        raise AssertionError("the binary version must not unpickle anything")

    monkeypatch.setattr(restricted_pickle, "load_path", no_pickle)
    monkeypatch.setattr(restricted_pickle, "loads", no_pickle)
    from_bin = load_dataset("cifar10", data_dir=tmp_path / "bin")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(from_bin, field), getattr(from_py, field))
    assert from_bin.info["normalisation"] == from_py.info["normalisation"]
    assert from_bin.info["source"].startswith("CIFAR-10 binary batches in ")
    assert from_py.info["source"].startswith("CIFAR-10 python batches in ")
    assert from_bin.info["split"].startswith("official (data_batch_1..5.bin for training")
    # with both versions present, the binary one is read
    make_cifar(tmp_path / "bin", np.random.default_rng(4))
    both = load_dataset("cifar10", data_dir=tmp_path / "bin")
    assert torch.equal(both.x_train, from_py.x_train)


def test_truncated_or_mislabelled_binary_batch_is_refused(tmp_path):
    _both_versions(tmp_path)
    path = tmp_path / "bin" / "cifar-10-batches-bin" / "data_batch_2.bin"
    good = path.read_bytes()
    assert len(good) == 4 * 3073
    path.write_bytes(good[:-1])
    refused = (
        r"data_batch_2\.bin holds 12291 bytes, which is not a whole number of "
        r"3073-byte records"
    )
    with pytest.raises(DatasetError, match=refused) as err:
        load_dataset("cifar10", data_dir=tmp_path / "bin")
    assert str(path) in str(err.value)
    with pytest.raises(DatasetError, match=refused):
        read_cifar_bin(path)
    path.write_bytes(cifar_bin_bytes(np.zeros((2, 3072), np.uint8), [3, 10]))
    with pytest.raises(DatasetError, match=r"data_batch_2\.bin: labels must be in 0..9"):
        load_dataset("cifar10", data_dir=tmp_path / "bin")
    path.unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "bin")
    msg = str(err.value)
    assert msg.startswith("data_dir:") and "missing: data_batch_2.bin" in msg
    assert str(tmp_path / "bin" / "cifar-10-batches-bin") in msg
    assert f"python -m covnoise data download cifar10 --data-dir {tmp_path / 'bin'}" in msg


def test_an_empty_binary_batch_is_refused(tmp_path):
    """An empty test_batch.bin would otherwise load as a test set of zero examples."""
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="is empty"):
        read_cifar_bin(path)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("digits", {"test_fraction": 0.4}),
        ("teacher", {"n_train": 300, "n_test": 50, "dim": 7, "classes": 3}),
        ("mnist1d", {"num_samples": 1000, "train_split": 0.7, "final_seq_length": 30}),
        ("mnist-5k", {"test_size": 2000}),
    ],
)
def test_sizes_and_shapes_from_options_match_the_loaded_set(tmp_path, name, options):
    """train_size / input_shape / num_classes (no loading) against what load_dataset gives."""
    from covnoise.data import input_shape, num_classes, train_size

    data = load_dataset(name, data_dir=tmp_path, options=options)
    assert train_size(name, options) == len(data.x_train)
    assert input_shape(name, options) == data.input_shape
    assert num_classes(name, options) == data.num_classes
