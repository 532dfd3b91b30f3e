"""The embedded MNIST-1D generator against the published `mnist1d` package (an oracle only:
the package seeds numpy's global RNG and caches with pickle, so the product keeps its own).

The product leaves out the recipe's final whole-data-set standardisation (load_dataset
standardises with training statistics only), so the oracle's arrays are compared with ours
after that same global standardisation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from covnoise.data import make_mnist1d

oracle = pytest.importorskip("mnist1d.data")


@pytest.fixture
def global_rng_restored():
    """The oracle reseeds numpy's and Python's global generators: put them back after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.mark.parametrize(
    ("num_samples", "seed", "shuffle_seq"), [(1000, 42, False), (5000, 42, False), (2000, 7, True)]
)
def test_the_generator_reproduces_the_published_package(
    num_samples, seed, shuffle_seq, global_rng_restored
):
    ours = make_mnist1d({"num_samples": num_samples, "seed": seed, "shuffle_seq": shuffle_seq})
    args = oracle.get_dataset_args()
    args.num_samples, args.seed, args.shuffle_seq = num_samples, seed, shuffle_seq
    ref = oracle.make_dataset(args)
    whole = np.concatenate([ours["x"], ours["x_test"]])
    mean, std = whole.mean(), whole.std()
    for key in ("x", "x_test"):
        assert ours[key].shape == ref[key].shape
        np.testing.assert_allclose((ours[key] - mean) / std, ref[key], rtol=0, atol=1e-12)
    for key in ("y", "y_test"):
        np.testing.assert_array_equal(ours[key], ref[key])
