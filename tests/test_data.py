"""Tests of covnoise.data and covnoise.data.restricted_pickle.

References are independent of the code under test: scikit-learn's own digits arrays, a
per-example transcription of the MNIST-1D recipe (scipy interp1d / gaussian_filter, in the
recipe's order of random draws), a numpy forward pass of the teacher, IDX and pickle files
written byte by byte (tests.helpers), and a local HTTP server for downloads. No network is
used.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

from covnoise import config
from covnoise.data import (
    DATASETS,
    REMOTE_SOURCES,
    REMOTE_VARIANTS,
    Dataset,
    DatasetError,
    canonical_name,
    download,
    load_dataset,
    make_mnist1d,
    mnist1d_cache_path,
    mnist1d_templates,
    read_cifar_batch,
    read_idx,
    resolve_options,
    restricted_pickle,
    teacher_network,
)
from covnoise.data.download import RemoteFile
from tests.helpers import make_cifar, make_cifar_bin, make_idx_set, py2_batch_pickle, write_idx

# ------------------------------------------------------------------------------------ registry


def test_registry_names_kinds_and_option_validation():
    assert list(DATASETS) == [
        "digits",
        "mnist1d",
        "teacher",
        "mnist-5k",
        "mnist",
        "fashion-mnist",
        "cifar10",
    ]
    assert list(DATASETS) == list(config.DATASETS)  # the config's choices are the registry's
    embedded = {"digits", "mnist1d", "teacher", "mnist-5k"}
    assert {k for k, s in DATASETS.items() if s.embedded} == embedded
    for key, spec in DATASETS.items():
        assert spec.name == key and spec.description
        json.dumps(resolve_options(key))  # defaults validate and are JSON-serialisable
    assert canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert canonical_name("CIFAR-10") == "cifar10"
    with pytest.raises(DatasetError, match="allowed: digits, mnist1d, teacher"):
        canonical_name("imagenet")
    with pytest.raises(DatasetError, match="no option 'bogus'; allowed: test_fraction"):
        load_dataset("digits", options={"bogus": 1})
    with pytest.raises(DatasetError, match=r"options.test_fraction: .*\(0.0, 1.0\)"):
        load_dataset("digits", options={"test_fraction": 1.5})
    with pytest.raises(DatasetError, match="options.classes: teacher needs an integer >= 2"):
        load_dataset("teacher", options={"classes": 1})
    with pytest.raises(DatasetError, match="options.padding"):
        resolve_options("mnist1d", {"padding": [10]})
    with pytest.raises(DatasetError, match="split_seed"):
        load_dataset("digits", split_seed=-1)


# -------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    b = load_digits()
    return b.images.astype(np.float64), b.target.astype(np.int64)


def _unstandardise(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    n = ds.info["normalisation"]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(n["mean"]).reshape(shape)
    std = np.asarray(n["std"]).reshape(shape)
    return (x.double().numpy() * std + mean) / n["scale"]


def test_digits_shapes_split_stratification_and_standardisation(sk_digits):
    images, labels = sk_digits
    ds = load_dataset("digits", split_seed=3)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert int(ds.y_train.min()) == 0 and int(ds.y_train.max()) == 9
    assert ds.info["n_train"] == 1347 and ds.info["split_seed"] == 3
    json.dumps(ds.info)

    # standardised with the train statistics: train mean 0, std 1 (population std)
    assert abs(float(ds.x_train.double().mean())) < 1e-6
    assert abs(float(ds.x_train.double().std(unbiased=False)) - 1) < 1e-6
    # every example is an unchanged scikit-learn image with its own label, none used twice
    lookup = {img.astype(np.int64).tobytes(): i for i, img in enumerate(images)}
    used = []
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        raw = _unstandardise(ds, x)[:, 0]  # back to pixel values 0..16
        assert np.abs(raw - np.round(raw)).max() < 1e-4
        idx = np.array([lookup[r.tobytes()] for r in np.round(raw).astype(np.int64)])
        assert np.array_equal(labels[idx], y.numpy())
        used.append(idx)
    assert len(np.unique(np.concatenate(used))) == len(labels)
    # the recorded statistics are those of the train images scaled to [0, 1]
    norm = ds.info["normalisation"]
    assert norm["mean"][0] == pytest.approx(images[used[0]].mean() / 16, rel=1e-12)
    assert norm["std"][0] == pytest.approx(images[used[0]].std() / 16, rel=1e-12)

    # stratified: each class's share of the train split is its share of the data, +-1 example
    expected = np.bincount(labels) * (1347 / len(labels))
    assert np.all(np.abs(np.bincount(ds.y_train.numpy()) - expected) <= 1)


def test_digits_split_is_reproducible_per_seed():
    a, b, c = (load_dataset("digits", split_seed=s) for s in (0, 0, 1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.info["split_hash"] == b.info["split_hash"] != c.info["split_hash"]
    assert not torch.equal(a.x_test, c.x_test)
    half = load_dataset("digits", options={"test_fraction": 0.5})
    assert (half.n_train, half.n_test) == (898, 899)


def test_to_moves_every_tensor():
    ds = load_dataset("teacher", options={"n_train": 8, "n_test": 4}).to("meta")
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert t.device.type == "meta"


# ------------------------------------------------------------------------------------- mnist1d


def _recipe_reference(o: dict) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D written example by example as the recipe describes it (scipy interp1d and
    gaussian_filter, the global-seed legacy stream), without the final standardisation."""
    from scipy.interpolate import interp1d
    from scipy.ndimage import gaussian_filter

    rs = np.random.RandomState(o["seed"])

    def interp(x, n):
        return interp1d(np.linspace(0, 1, len(x)), x, kind="linear")(np.linspace(0, 1, n))

    templates = mnist1d_templates()
    low, high = o["padding"]
    xs, ys = [], []
    for label in range(10):
        for _ in range(o["num_samples"] // 10):
            x = templates[label] + 1e-8
            p = low + int(rs.rand() * (high - low + 1))
            x = interp(np.concatenate([x, np.zeros(p)]), o["template_len"] + high)
            x = x * (1 + o["scale_coeff"] * (rs.rand() - 0.5))
            k = rs.choice(o["max_translation"])
            x = np.concatenate([x[-k:], x[:-k]])
            mask = x != 0
            noise = gaussian_filter(o["corr_noise_scale"] * rs.randn(len(x)), 2)
            x = mask * x + (1 - mask) * noise
            x = x + o["iid_noise_scale"] * rs.randn(len(x))
            x = x - o["shear_scale"] * (rs.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))
            xs.append(interp(x, o["final_seq_length"]))
            ys.append(label)
    perm = rs.permutation(len(ys))
    return np.stack(xs)[perm], np.asarray(ys)[perm]


def test_mnist1d_templates_follow_the_recipe():
    t = mnist1d_templates()
    assert t.shape == (10, 12)
    assert np.allclose(t[:, 0], 0)  # each signal starts at zero
    assert np.allclose(t.std(axis=1), 1 / 6)  # whitened, then divided by 6
    assert len({tuple(np.round(r, 6)) for r in t}) == 10


@pytest.mark.parametrize(
    "overrides",
    [{}, {"seed": 7, "padding": [20, 50], "max_translation": 30, "shear_scale": 2.0}],
)
def test_mnist1d_generator_matches_recipe_reference(overrides):
    o = resolve_options("mnist1d", {"num_samples": 300, **overrides})
    x_ref, y_ref = _recipe_reference(o)
    d = make_mnist1d(o)
    assert np.array_equal(np.concatenate([d["y"], d["y_test"]]), y_ref)
    assert np.abs(np.concatenate([d["x"], d["x_test"]]) - x_ref).max() < 1e-12
    assert len(d["y"]) == int(300 * o["train_split"])


def test_mnist1d_dataset_shapes_balance_cache_and_determinism(tmp_path):
    ds = load_dataset("mnist1d", data_dir=tmp_path / "a")
    assert ds.input_shape == (1, 40) and ds.x_train.shape == (4000, 1, 40)
    assert ds.x_test.shape == (1000, 1, 40)
    counts = np.bincount(torch.cat([ds.y_train, ds.y_test]).numpy(), minlength=10)
    assert np.array_equal(counts, np.full(10, 500))  # num_samples // 10 per class
    assert abs(float(ds.x_train.double().mean())) < 1e-6
    assert abs(float(ds.x_train.double().std(unbiased=False)) - 1) < 1e-5

    cache = mnist1d_cache_path(tmp_path / "a")
    assert cache.is_file() and ds.info["cache_hit"] is False
    again = load_dataset("mnist1d", data_dir=tmp_path / "a")
    assert again.info["cache_hit"] is True
    elsewhere = load_dataset("mnist1d", data_dir=tmp_path / "b")  # generated afresh
    for other in (again, elsewhere):
        assert torch.equal(ds.x_train, other.x_train) and torch.equal(ds.y_test, other.y_test)
    # the cache is keyed by the options
    assert mnist1d_cache_path(tmp_path, {"seed": 1}) != cache.relative_to(tmp_path / "a")
    small = load_dataset("mnist1d", data_dir=tmp_path / "a", options={"num_samples": 200})
    assert small.n_train == 160 and len(list(cache.parent.glob("*.npz"))) == 2

    # a corrupt cache file is regenerated, not trusted
    cache.write_bytes(b"not an npz")
    assert torch.equal(load_dataset("mnist1d", data_dir=tmp_path / "a").x_train, ds.x_train)


def _knn_accuracy(x_tr, y_tr, x_te, y_te, k=5):
    d = (x_te**2).sum(1)[:, None] + (x_tr**2).sum(1)[None, :] - 2 * x_te @ x_tr.T
    nearest = y_tr[np.argpartition(d, k, axis=1)[:, :k]]
    votes = np.apply_along_axis(np.bincount, 1, nearest, minlength=10)
    return float((votes.argmax(1) == y_te).mean())


def test_mnist1d_classes_are_distinguishable(tmp_path):
    """5-NN gets about 60% on the test split (chance 10%, standard error about 1.5%); with
    the train labels permuted the same classifier is at chance, so the check has teeth."""
    ds = load_dataset("mnist1d", data_dir=tmp_path)
    x_tr, x_te = ds.x_train.flatten(1).double().numpy(), ds.x_test.flatten(1).double().numpy()
    y_tr, y_te = ds.y_train.numpy(), ds.y_test.numpy()
    assert _knn_accuracy(x_tr, y_tr, x_te, y_te) > 0.45
    shuffled = np.random.default_rng(0).permutation(y_tr)
    assert _knn_accuracy(x_tr, shuffled, x_te, y_te) < 0.16


# ------------------------------------------------------------------------------------- teacher


def _teacher_argmax(x: np.ndarray, net: dict) -> np.ndarray:
    logits = np.tanh(x.astype(np.float64) @ net["w1"].T) @ net["w2"].T
    return (logits + net["b2"]).argmax(axis=1)


def test_teacher_labels_are_the_teacher_argmax():
    opts = {"n_train": 3000, "n_test": 1000, "dim": 12, "hidden": 24, "classes": 7, "seed": 5}
    ds = load_dataset("teacher", options=opts)
    net = teacher_network(opts)
    assert net["w1"].shape == (24, 12) and net["w2"].shape == (7, 24)
    assert ds.input_shape == (12,) and ds.x_train.shape == (3000, 12) and ds.num_classes == 7
    assert np.array_equal(_teacher_argmax(ds.x_train.numpy(), net), ds.y_train.numpy())
    assert np.array_equal(_teacher_argmax(ds.x_test.numpy(), net), ds.y_test.numpy())
    # the inputs are standard normal (mean 0, variance 1 within 5 standard errors)
    x = ds.x_train.double()
    assert abs(float(x.mean())) < 5 / np.sqrt(x.numel())
    assert abs(float(x.var()) - 1) < 5 * np.sqrt(2 / x.numel())
    # classes are balanced: 4000 draws, 1/7 each (sd of a count ~22); allow +-25% of 571
    counts = np.bincount(torch.cat([ds.y_train, ds.y_test]).numpy(), minlength=7)
    assert np.all(np.abs(counts / 4000 * 7 - 1) < 0.25), counts


def test_teacher_label_noise_fraction_and_split_seed():
    opts = {"n_train": 2000, "n_test": 500, "label_noise": 0.3, "seed": 1}
    ds = load_dataset("teacher", options=opts, split_seed=0)
    net = teacher_network(opts)
    clean_train = _teacher_argmax(ds.x_train.numpy(), net)
    flipped = clean_train != ds.y_train.numpy()
    assert flipped.sum() == 600 == ds.info["label_noise"]["n_flipped"]
    assert np.array_equal(_teacher_argmax(ds.x_test.numpy(), net), ds.y_test.numpy())
    # a flipped label is a uniformly random other class: offsets 1..9 about 600/9 each
    offsets = (ds.y_train.numpy()[flipped] - clean_train[flipped]) % 10
    counts = np.bincount(offsets, minlength=10)
    chi2 = ((counts[1:] - 600 / 9) ** 2 / (600 / 9)).sum()
    assert counts[0] == 0 and chi2 < 26.1  # chi-square, 8 dof, p = 0.001

    other = load_dataset("teacher", options=opts, split_seed=1)
    assert not torch.equal(ds.x_test, other.x_test)
    pool = np.sort(torch.cat([ds.x_train, ds.x_test]).numpy(), axis=0)
    pool_other = np.sort(torch.cat([other.x_train, other.x_test]).numpy(), axis=0)
    assert np.array_equal(pool, pool_other)  # the same i.i.d. pool, split differently


# ----------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_datasets_load_the_written_values(tmp_path, name):
    arrays = make_idx_set(tmp_path / name, np.random.default_rng(1))
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.x_train.shape == (12, 1, 28, 28)
    assert np.array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    train = arrays["train-images-idx3-ubyte"].astype(np.float64)
    norm = ds.info["normalisation"]
    assert norm["mean"][0] == pytest.approx(train.mean() / 255, rel=1e-12)
    assert norm["std"][0] == pytest.approx(train.std() / 255, rel=1e-12)
    assert np.allclose(_unstandardise(ds, ds.x_train)[:, 0], train, atol=2e-4)
    assert np.allclose(
        _unstandardise(ds, ds.x_test)[:, 0], arrays["t10k-images-idx3-ubyte"], atol=2e-4
    )
    assert ds.info["split"].startswith("official")


def test_read_idx_types_and_byte_order(tmp_path):
    a = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    b = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, gz=False)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", b, gz=True)), b)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"\x01" + d[1:], "magic"),
        (lambda d: d[:2] + b"\x07" + d[3:], "unknown IDX data type 0x07"),
        (lambda d: d[:-5], "holds 3915 bytes of data"),  # 5*28*28 = 3920 declared
        (lambda d: d + b"\x00", "holds 3921 bytes"),
        (lambda d: d[:6], "truncated IDX header"),
    ],
)
def test_malformed_idx_is_refused(tmp_path, mutate, message):
    make_idx_set(tmp_path / "mnist", np.random.default_rng(2), gz=(False,) * 4)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_idx_label_problems_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    make_idx_set(tmp_path / "mnist", rng)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="5 images but .* 4 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", np.full(5, 10, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="label 10; allowed: 0..9"):
        load_dataset("mnist", data_dir=tmp_path)
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DatasetError, match="corrupt gzip"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize(
    "name, folder",
    [("mnist", "mnist"), ("fashion-mnist", "fashion-mnist"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_files_name_the_path_and_the_download_command(tmp_path, name, folder):
    with pytest.raises(DatasetError) as err:
        load_dataset(name, data_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith("data_dir:") and str(tmp_path / folder) in msg
    assert f"python -m covnoise data download {name} --data-dir {tmp_path}" in msg


# --------------------------------------------------------------------------------------- CIFAR


def test_py2_format_pickle_is_what_numpy_would_rebuild():
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    blob = py2_batch_pickle(data, [3, 300])
    ref = pickle.loads(blob, encoding="bytes")  # the unrestricted loader as the reference
    got = restricted_pickle.loads(blob)
    assert got.keys() == ref.keys() == {b"batch_label", b"data", b"labels"}
    assert np.array_equal(got[b"data"], data) and got[b"data"].dtype == np.uint8
    assert got[b"labels"] == [3, 300]


def test_cifar10_loads_batches_and_standardises_per_channel(tmp_path):
    x_train, y_train, x_test, y_test = make_cifar(tmp_path, np.random.default_rng(4))
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.x_train.shape == (20, 3, 32, 32)
    assert ds.x_test.shape == (3, 3, 32, 32)
    assert np.array_equal(ds.y_train.numpy(), y_train)
    assert np.array_equal(ds.y_test.numpy(), y_test)
    imgs = x_train.reshape(-1, 3, 32, 32).astype(np.float64)
    norm = ds.info["normalisation"]
    assert np.allclose(norm["mean"], imgs.mean(axis=(0, 2, 3)) / 255, rtol=1e-12)
    assert np.allclose(norm["std"], imgs.std(axis=(0, 2, 3)) / 255, rtol=1e-12)
    per_channel = ds.x_train.double().transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert np.allclose(_unstandardise(ds, ds.x_train), imgs, atol=2e-4)
    assert np.allclose(_unstandardise(ds, ds.x_test), x_test.reshape(-1, 3, 32, 32), atol=2e-4)


class _OpenFile:
    """Unpickling this calls open(path, "w"): a live payload that leaves a visible trace."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _Plain:
    """An ordinary class instance: not plain data."""

    def __init__(self):
        self.value = 1


def test_restricted_pickle_round_trips_plain_data():
    obj = {
        "a": [1, 2.5, True, None, "s", b"b", (3, (4,))],
        b"k": np.eye(3),
        "u8": np.arange(5, dtype=np.uint8),
        "nested": {"x": [np.float32(1.5).item()]},
    }
    got = restricted_pickle.loads(pickle.dumps(obj, protocol=4))
    assert got.keys() == obj.keys() and got["a"] == obj["a"] and got["nested"] == obj["nested"]
    assert np.array_equal(got[b"k"], obj[b"k"]) and np.array_equal(got["u8"], obj["u8"])


def test_cifar_batch_with_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    blob = pickle.dumps(
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"extra": _OpenFile(str(marker))},
        protocol=4,
    )
    # control: the unrestricted loader really runs the payload
    pickle.loads(blob)
    assert marker.exists()
    marker.unlink()

    make_cifar(tmp_path, np.random.default_rng(5))
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    evil.write_bytes(blob)
    refused = r"refused to load .*data_batch_3.*global (io|builtins)\.open"
    with pytest.raises(DatasetError, match=refused):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()

    with open(evil, "wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Plain()]}, fh)
    with pytest.raises(DatasetError, match=r"global tests\.test_data\._Plain"):
        read_cifar_batch(evil)
    evil.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")  # protocol 0 os.system call
    with pytest.raises(DatasetError, match=r"global os\.system"):
        read_cifar_batch(evil)


def test_cifar_batch_with_wrong_structure_is_refused(tmp_path):
    path = tmp_path / "b"
    for obj, message in [
        ([1, 2], "must hold a dict"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "no 'labels' entry"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "must be 2 integers"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "0..9"),
    ]:
        path.write_bytes(pickle.dumps(obj, protocol=4))
        with pytest.raises(DatasetError, match=message):
            read_cifar_batch(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        read_cifar_batch(path)


# ------------------------------------------------------------------------------------ download


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over a folder; yields (folder, base_url, list of request paths)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):  # noqa: N802 - the http.server hook name
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/mirror", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_download_idx_verifies_checksums_and_loads(server, tmp_path):
    served, base, requests = server
    arrays = make_idx_set(served / "src", np.random.default_rng(6), gz=(True,) * 4)
    (served / "mirror").mkdir()
    sums = {}
    for f in (served / "src").iterdir():
        (served / "mirror" / f.name).write_bytes(f.read_bytes())
        sums[f.name] = _md5(f.read_bytes())
    data_dir = tmp_path / "data"

    # the built-in table holds the official checksums, which these tiny files do not match
    with pytest.raises(DatasetError, match="checksum mismatch .* the file was discarded"):
        download("mnist", data_dir, base_url=base, progress=False)
    assert not list((data_dir / "mnist").iterdir())  # nothing kept, no partial files

    wrong = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "sha256:" + "0" * 64})
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: expected sha256"):
        download("mnist", data_dir, base_url=base, progress=False, checksums=wrong)
    assert not (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()

    paths = download("mnist", data_dir, base_url=base, progress=False, checksums=sums)
    assert sorted(p.name for p in paths) == sorted(sums)
    assert all(p.parent == data_dir / "mnist" for p in paths)
    ds = load_dataset("mnist", data_dir=data_dir)
    assert np.array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])

    n_requests = len(requests)
    download("mnist", data_dir, base_url=base, progress=False, checksums=sums)
    assert len(requests) == n_requests  # verified files are not fetched again


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_download_cifar_extracts_archive(server, tmp_path):
    served, base, _ = server
    src = tmp_path / "src"
    _, y_train, _, _ = make_cifar(src, np.random.default_rng(7))
    members = {
        f"cifar-10-batches-py/{f.name}": f.read_bytes()
        for f in sorted((src / "cifar-10-batches-py").iterdir())
    }
    archive = _tar_gz(members)
    (served / "mirror").mkdir()
    (served / "mirror" / "cifar-10-python.tar.gz").write_bytes(archive)
    data_dir = tmp_path / "data"
    paths = download(
        "cifar10",
        data_dir,
        base_url=base + "/",
        progress=False,
        checksums={"cifar-10-python.tar.gz": _md5(archive)},
    )
    assert {p.name for p in paths} == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch"}
    assert np.array_equal(load_dataset("cifar10", data_dir=data_dir).y_train.numpy(), y_train)


def test_download_cifar_binary_variant(server, tmp_path):
    assert REMOTE_SOURCES["cifar10"].files[0].filename == "cifar-10-python.tar.gz"  # default
    binary = REMOTE_VARIANTS["cifar10"]["binary"]
    assert binary.base_url == "https://www.cs.toronto.edu/~kriz/"
    assert binary.files == (
        RemoteFile("cifar-10-binary.tar.gz", "md5:c32a1d4ab5d03f1284b67883e8d87530"),
    )
    served, base, _ = server
    src = tmp_path / "src"
    arrays = make_cifar(src, np.random.default_rng(8))
    folder = make_cifar_bin(src, *arrays)
    archive = _tar_gz(
        {f"cifar-10-batches-bin/{f.name}": f.read_bytes() for f in sorted(folder.iterdir())}
    )
    (served / "mirror").mkdir()
    (served / "mirror" / "cifar-10-binary.tar.gz").write_bytes(archive)
    data_dir = tmp_path / "data"
    paths = download(
        "cifar10",
        data_dir,
        base_url=base,
        progress=False,
        variant="binary",
        checksums={"cifar-10-binary.tar.gz": _md5(archive)},
    )
    assert {p.name for p in paths} == {f"data_batch_{i}.bin" for i in range(1, 6)} | {
        "test_batch.bin"
    }
    assert all(p.parent == data_dir / "cifar-10-batches-bin" for p in paths)
    ds = load_dataset("cifar10", data_dir=data_dir)
    assert ds.info["source"].startswith("CIFAR-10 binary batches")
    assert np.array_equal(ds.y_train.numpy(), arrays[1])
    with pytest.raises(
        DatasetError, match="variant: cifar10 has no variant 'png'; allowed: 'binary'"
    ):
        download("cifar10", data_dir, variant="png")
    with pytest.raises(DatasetError, match="variant: mnist has no variant 'binary'"):
        download("mnist", data_dir, variant="binary")


def test_download_refuses_archive_escaping_its_folder(server, tmp_path):
    served, base, _ = server
    archive = _tar_gz({"cifar-10-batches-py/test_batch": b"x", "../escaped": b"boom"})
    (served / "mirror").mkdir()
    (served / "mirror" / "cifar-10-python.tar.gz").write_bytes(archive)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="'../escaped'.*refusing to extract"):
        download(
            "cifar10",
            data_dir,
            base_url=base,
            progress=False,
            checksums={"cifar-10-python.tar.gz": _md5(archive)},
        )
    assert not (tmp_path / "escaped").exists()
    assert not (data_dir / "cifar-10-batches-py" / "test_batch").exists()


def test_download_errors_and_embedded_datasets(server, tmp_path):
    _, base, _ = server
    with pytest.raises(DatasetError, match="could not fetch .*train-images-idx3-ubyte.gz"):
        download("fashion-mnist", tmp_path, base_url=base, progress=False)  # 404
    with pytest.raises(DatasetError, match="base_url: must start with https:// or http://"):
        download("mnist", tmp_path, base_url="ftp://example.org/")
    with pytest.raises(DatasetError, match="checksums: mnist has no file 'x.gz'"):
        download("mnist", tmp_path, base_url=base, checksums={"x.gz": "0" * 32})
    assert download("digits", tmp_path) == [] and download("teacher", tmp_path) == []
    assert download("mnist1d", tmp_path) == [mnist1d_cache_path(tmp_path)]
    assert mnist1d_cache_path(tmp_path).is_file()
