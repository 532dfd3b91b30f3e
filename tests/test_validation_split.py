"""The validation split: stratified, fixed by split_seed, carved out of the training set, and
kept out of the standardisation statistics; the training loop evaluates on it.

References: the training set loaded without a validation split, mapped back to raw pixel
values; statistics recomputed with numpy from the kept raw rows; the loaders' own
standardisation applied to the kept rows first (carving before standardising); a freshly
built model evaluated by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from covnoise.config import RunConfig
from covnoise.core.losses import per_example_loss
from covnoise.core.models import build_model
from covnoise.core.train import run
from covnoise.data import Dataset, DatasetError, load_dataset
from covnoise.data.normalise import standardise_float, standardise_uint8
from covnoise.data.prepared import Prepared, split_hash
from covnoise.data.validation import hold_out, stratified_indices


def _raw(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """digits inputs back to their integer pixel values 0..16 with the dataset's record."""
    n = ds.info["normalisation"]
    raw = (x.double().numpy() * n["std"][0] + n["mean"][0]) / n["scale"]
    assert np.abs(raw - np.round(raw)).max() < 1e-3
    return np.round(raw).astype(np.int64)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_the_split_is_stratified(fraction):
    old = load_dataset("digits")
    new = load_dataset("digits", val_fraction=fraction)
    per_class = np.bincount(old.y_train.numpy(), minlength=10)
    held = np.bincount(new.y_val.numpy(), minlength=10)
    assert np.all(np.abs(held - fraction * per_class) <= 1)
    assert new.n_val == math.floor(fraction * old.n_train + 0.5) == new.info["validation"]["size"]
    assert new.n_train + new.n_val == old.n_train
    assert new.info["class_counts"]["val"] == held.tolist()
    # and on unbalanced classes (teacher with label noise)
    teacher = load_dataset("teacher", options={"n_train": 500, "n_test": 50}, val_fraction=0.3)
    whole = load_dataset("teacher", options={"n_train": 500, "n_test": 50})
    counts = np.bincount(whole.y_train.numpy())
    assert np.all(
        np.abs(np.bincount(teacher.y_val.numpy(), minlength=len(counts)) - 0.3 * counts) <= 1
    )


def test_the_split_is_fixed_by_split_seed():
    a, b = (load_dataset("digits", val_fraction=0.2, split_seed=5) for _ in range(2))
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)
    assert a.info["validation"] == b.info["validation"]
    labels = np.repeat(np.arange(4), 50)
    k0, h0 = stratified_indices(labels, 0.2, 0)
    k1, h1 = stratified_indices(labels, 0.2, 0)
    assert np.array_equal(h0, h1) and np.array_equal(k0, k1)
    assert not np.array_equal(stratified_indices(labels, 0.2, 1)[1], h0)
    # the run's training seed does not move it
    infos = []
    for seed in (0, 1):
        events: list[dict] = []
        cfg = RunConfig(width=8, depth=2, batch_size=64, steps=1, sharpness_every=0, seed=seed)
        run(cfg, events.append)
        infos.append(events[0]["dataset_info"]["validation"])
    assert infos[0] == infos[1] and infos[0]["size"] == 135


@pytest.mark.parametrize("split_seed", [0, 3])
def test_train_and_validation_are_the_old_training_set_and_disjoint_from_test(split_seed):
    old = load_dataset("digits", split_seed=split_seed)
    new = load_dataset("digits", split_seed=split_seed, val_fraction=0.15)
    kept, held = stratified_indices(old.y_train.numpy(), 0.15, split_seed)
    assert new.info["validation"]["indices_hash"] == split_hash(held)
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.union1d(kept, held), np.arange(old.n_train))
    raw_old = _raw(old, old.x_train)
    assert np.array_equal(_raw(new, new.x_train), raw_old[kept])
    assert np.array_equal(_raw(new, new.x_val), raw_old[held])
    assert torch.equal(new.y_train, old.y_train[torch.from_numpy(kept)])
    assert torch.equal(new.y_val, old.y_train[torch.from_numpy(held)])
    # the test set is the old one, rows and order (so disjoint from the old training set)
    assert np.array_equal(_raw(new, new.x_test), _raw(old, old.x_test))
    assert torch.equal(new.y_test, old.y_test)
    # rows without duplicates (continuous inputs): no validation row is a train or test row
    t = load_dataset("teacher", options={"n_train": 300, "n_test": 100}, val_fraction=0.2)
    rows = {tuple(r) for r in t.x_val.tolist()}
    assert len(rows) == 60
    assert not rows & {tuple(r) for r in torch.cat([t.x_train, t.x_test]).tolist()}


def test_no_validation_pixel_enters_the_standardisation_statistics():
    old = load_dataset("digits")
    new = load_dataset("digits", val_fraction=0.2)
    kept, held = stratified_indices(old.y_train.numpy(), 0.2, 0)
    scaled = _raw(old, old.x_train).astype(np.float64) / 16.0
    mean, std = scaled[kept].mean(), scaled[kept].std()
    norm = new.info["normalisation"]
    assert norm["mean"][0] == pytest.approx(mean, rel=1e-6)
    assert norm["std"][0] == pytest.approx(std, rel=1e-6)
    assert norm["computed_on"] == "train (validation split excluded)"
    # the statistics of the whole old training set are measurably different
    assert abs(scaled.mean() - mean) / mean > 1e-4
    for x, rows in ((new.x_train, scaled[kept]), (new.x_val, scaled[held])):
        np.testing.assert_allclose(x.double().numpy(), (rows - mean) / std, atol=1e-5)


@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_holding_out_equals_carving_before_standardising(kind):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, size=(300, 3, 4, 4), dtype=np.uint8)
    x[:, 1] //= 3  # channels with different statistics
    x_test = rng.integers(0, 256, size=(40, 3, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 5, size=300)

    def standardise(a: np.ndarray, b: np.ndarray):
        if kind == "uint8":
            return standardise_uint8(a, b)
        return standardise_float(a.astype(np.float64), b.astype(np.float64), scale=0.5)

    xtr, xte, norm = standardise(x, x_test)
    prep = Prepared(xtr, y, xte, y[:40], 5, (3, 4, 4), {"normalisation": norm})
    out, x_val, y_val = hold_out(prep, 0.2, seed=7)
    kept, held = stratified_indices(y, 0.2, 7)
    ref_train, ref_test, ref_norm = standardise(x[kept], x_test)
    _, ref_val, _ = standardise(x[kept], x[held])
    for got, ref in ((out.x_train, ref_train), (x_val, ref_val), (out.x_test, ref_test)):
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # float32 rounding
    np.testing.assert_allclose(out.info["normalisation"]["mean"], ref_norm["mean"], rtol=1e-6)
    np.testing.assert_allclose(out.info["normalisation"]["std"], ref_norm["std"], rtol=1e-6)
    assert np.array_equal(out.y_train, y[kept]) and np.array_equal(y_val, y[held])


def test_a_zero_fraction_leaves_the_split_untouched():
    old = load_dataset("digits")
    assert old.n_val == 0 and old.x_val.shape == (0, 1, 8, 8) and old.y_val.dtype == torch.int64
    assert (
        old.info["validation"]["size"] == 0 and old.info["normalisation"]["computed_on"] == "train"
    )
    xtr, xte, norm = standardise_float(np.ones((4, 1, 2)), np.ones((2, 1, 2)))
    prep = Prepared(xtr, np.arange(4) % 2, xte, np.zeros(2, dtype=np.int64), 2, (1, 2), {})
    out, x_val, _ = hold_out(prep, 0.0, seed=0)
    assert out.x_train is prep.x_train and out.x_test is prep.x_test and len(x_val) == 0
    bare = Dataset("d", xtr, torch.zeros(4, dtype=torch.int64), xte, torch.zeros(2), 2, (1, 2))
    assert bare.n_val == 0 and bare.to("meta").x_val.device.type == "meta"


@pytest.mark.parametrize("bad", [-0.1, 1.0, "0.1", True])
def test_bad_fractions_name_the_field(bad):
    with pytest.raises(DatasetError, match="val_fraction"):
        load_dataset("digits", val_fraction=bad)


def test_every_evaluation_reports_validation_loss_and_accuracy():
    cfg = RunConfig(width=8, depth=2, batch_size=128, steps=4, eval_every=2, sharpness_every=0)
    events: list[dict] = []
    run(cfg, events.append)
    metrics = [e["metrics"] for e in events if e["event"] == "metric"]
    assert len(metrics) == 3
    assert all(math.isfinite(m["val_loss"]) and 0 <= m["val_acc"] <= 1 for m in metrics)
    # at step 0: the freshly built model, evaluated by hand on the validation split
    data = load_dataset("digits", val_fraction=cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    model = build_model("mlp", data.input_shape, 10, width=8, depth=2).eval()
    with torch.no_grad():
        logits = model(data.x_val)
    assert metrics[0]["val_loss"] == pytest.approx(
        float(per_example_loss(logits, data.y_val).mean()), rel=1e-6
    )
    assert metrics[0]["val_acc"] == float((logits.argmax(1) == data.y_val).double().mean())
    assert metrics[0]["val_loss"] != metrics[0]["train_loss"]
    # without a validation split: NaN at every evaluation
    events.clear()
    run(cfg.replace(val_fraction=0.0), events.append)
    none = [e["metrics"] for e in events if e["event"] == "metric"]
    assert all(math.isnan(m["val_loss"]) and math.isnan(m["val_acc"]) for m in none)
