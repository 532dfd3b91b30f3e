"""teacher: Gaussian inputs labelled by a fixed random tanh-MLP, with optional label noise.

A synthetic task whose difficulty and size are set by its options; the teacher's weights,
the inputs and the label noise each come from their own stream of the option ``seed``, and
only the train/test split depends on ``split_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from covnoise.data.prepared import Prepared, split_hash
from covnoise.data.registry import resolve_options

_TEACHER_BALANCE_SAMPLES = 10000
_TEACHER_BALANCE_STEPS = 100


def teacher_logits(x: np.ndarray, net: Mapping[str, np.ndarray]) -> np.ndarray:
    """Teacher logits ``tanh(x W1^T) W2^T + b2`` for inputs ``x`` of shape (N, dim)."""
    h = np.tanh(np.asarray(x, dtype=np.float64) @ net["w1"].T)
    return h @ net["w2"].T + net["b2"]


def teacher_network(options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The teacher's weights for these options (they depend on seed, dim, hidden, classes).

    ``w1`` (hidden, dim) ~ N(0, 1/dim), ``w2`` (classes, hidden) ~ N(0, 1/hidden); the output
    bias ``b2`` is tuned on a reference sample so that each class takes about 1/classes of the
    input distribution (a random MLP's argmax is otherwise very unbalanced).
    """
    o = resolve_options("teacher", options)
    net_seq = np.random.SeedSequence(o["seed"]).spawn(3)[0]
    rng = np.random.default_rng(net_seq)
    k = o["classes"]
    w1 = rng.standard_normal((o["hidden"], o["dim"])) / math.sqrt(o["dim"])
    w2 = rng.standard_normal((k, o["hidden"])) / math.sqrt(o["hidden"])
    reference = rng.standard_normal((_TEACHER_BALANCE_SAMPLES, o["dim"]))
    logits = np.tanh(reference @ w1.T) @ w2.T
    b2 = np.zeros(k)
    for _ in range(_TEACHER_BALANCE_STEPS):
        freq = np.bincount((logits + b2).argmax(axis=1), minlength=k) / len(reference)
        b2 -= 0.1 * (np.log(freq + 1e-3) - math.log(1.0 / k))
    return {"w1": w1, "w2": w2, "b2": b2}


def prepare_teacher(root: Path, split_seed: int, o: dict) -> Prepared:
    """The teacher task for options ``o``: one i.i.d. pool split by ``split_seed``, label
    noise on the train split only."""
    net = teacher_network(o)
    _, data_seq, noise_seq = np.random.SeedSequence(o["seed"]).spawn(3)
    n_total = o["n_train"] + o["n_test"]
    x = np.random.default_rng(data_seq).standard_normal((n_total, o["dim"])).astype(np.float32)
    y = teacher_logits(x, net).argmax(axis=1).astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(n_total)
    train_idx, test_idx = order[: o["n_train"]], order[o["n_train"] :]
    y_train = y[train_idx].copy()
    rng = np.random.default_rng(noise_seq)
    n_noisy = int(round(o["label_noise"] * o["n_train"]))
    noisy = rng.choice(o["n_train"], size=n_noisy, replace=False)
    # a uniformly random *different* class, so exactly n_noisy labels disagree with the teacher
    y_train[noisy] = (y_train[noisy] + rng.integers(1, o["classes"], size=n_noisy)) % o["classes"]
    return Prepared(
        torch.from_numpy(x[train_idx]),
        y_train,
        torch.from_numpy(x[test_idx]),
        y[test_idx],
        o["classes"],
        (o["dim"],),
        {
            "source": "synthetic: x ~ N(0, I_dim); y = argmax of a fixed random tanh-MLP "
            "teacher (covnoise.data.teacher_network)",
            "split": "random permutation of one i.i.d. pool by split_seed",
            "split_hash": split_hash(test_idx),
            "label_noise": {
                "fraction": o["label_noise"],
                "n_flipped": n_noisy,
                "applied_to": "train",
            },
            "normalisation": {"formula": "none (inputs are standard normal by construction)"},
        },
    )
