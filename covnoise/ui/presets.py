"""The teaching presets: named sets of Train-form values, each with a title and a sentence on
what it shows.

Home links to each preset (Train opens with ?preset=<key>) and Train offers them as buttons;
both read this one table. Values not named keep the form's current value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A teaching preset: a title, what it shows, Train-form values, and what a user should
    see when the runs finish and about how long they take on a 2-core laptop CPU (measured:
    README, "Teaching presets")."""

    title: str
    explains: str
    values: dict[str, Any] = field(default_factory=dict)
    expect: str = ""
    takes: str = ""


#: The MNIST-1D setting of the cached study (MLP 256×3, M = 32, L = 1024, η = 0.4), cut to
#: 150 epochs: by then the study's runs show the gap (SB ≈ 0.71 test accuracy, plain LB ≈
#: 0.61) and full-Fisher noise's effect.
_MNIST1D = {
    "dataset": "mnist1d",
    "model": "mlp",
    "width": 256,
    "depth": 3,
    "val_fraction": 0.1,
    "drop_last": False,
    "batch_size": 1024,
    "small_batch": 32,
    "lr": 0.4,
    "lr_scaling": "none",
    "momentum": 0.0,
    "schedule": "constant",
    "epochs": 150.0,
    "eval_every": 6,
    "sharpness_every": 5,
    "probe_size": 256,
}

PRESETS: dict[str, Preset] = {
    "gap": Preset(
        "The large-batch gap",
        "MNIST-1D: plain SGD with a large batch L = 1024 against the small batch M = 32 for "
        "the same 150 epochs and learning rate, two seeds each.",
        {**_MNIST1D, "noises": ["none"], "baseline": True, "seeds": 2, "noise_scales": "1"},
        expect="Compare, test accuracy over epochs: the small batch ends near 0.71, the large "
        "batch near 0.61 — both fit the training set.",
        takes="about a minute",
    ),
    "full-noise": Preset(
        "Noise that closes it",
        "The same large batch with isotropic and full-Fisher noise of equal trace (s = 0.5), "
        "and the small-batch baseline: only noise shaped like the gradients' helps.",
        {
            **_MNIST1D,
            "noises": ["none", "isotropic", "full"],
            "baseline": True,
            "seeds": 1,
            "noise_scales": "0.5",
        },
        expect="Compare: full-Fisher noise lifts the large batch's test accuracy well above "
        "plain LB's; isotropic noise of the same trace does not move it.",
        takes="about two minutes",
    ),
    "trace-vs-fro": Preset(
        "Equal trace, different ‖Σ‖_F",
        "All four structures at two multipliers: tr Σ is the same across structures, ‖Σ‖_F "
        "is not. Open 'Noise vs generalisation' afterwards to see which explains more.",
        {
            **_MNIST1D,
            "noises": ["none", "isotropic", "diag", "full"],
            "baseline": True,
            "seeds": 1,
            "noise_scales": "0.25, 0.5",
        },
        expect="Noise vs generalisation: at equal tr Σ the arms spread, ordered by ‖Σ‖_F "
        "(isotropic, diagonal, full); Findings has the eight-seed version of this test.",
        takes="about four minutes",
    ),
    "quick": Preset(
        "Quick look (digits, seconds)",
        "The smoke test: one short run per structure on a small MLP on digits, to see the Live "
        "page move. Digits has no large-batch gap, so it shows the mechanics, not the effect.",
        {
            "dataset": "digits",
            "noises": ["none", "full"],
            "baseline": False,
            "width": 32,
            "depth": 2,
            "batch_size": 512,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 30.0,
            "eval_every": 3,
            "sharpness_every": 1,
            "seeds": 1,
            "noise_scales": "1",
        },
        expect="Live: loss falls and λ_max, ‖Σ‖_F and tr Σ are drawn as the runs go.",
        takes="under a minute",
    ),
}


#: The guided tour of the cached MNIST-1D study for a ten-minute class: (page, link label, what
#: it shows, its URL parameters). Each view would otherwise need several hand-set filters.
STUDY_FILE = "study-mnist1d.parquet"
SHOW_ME: list[tuple[str, str, str, dict[str, str]]] = [
    (
        "pages/compare.py",
        "1 · Small batch beats large batch",
        "MNIST-1D, test accuracy over epochs: M = 32 against L = 1024 at three learning rates "
        "(equal epochs; the best large-batch rate still trails).",
        {"source": STUDY_FILE, "noise": "none", "metric": "test_acc", "group": "batch_size,lr"},
    ),
    (
        "pages/compare.py",
        "2 · Noise shaped like the small batch's closes the gap",
        "The same large batch with isotropic, diagonal-Fisher and full-Fisher noise of equal "
        "trace (s = 0.5 and 1): full-Fisher noise recovers most of the gap, isotropic none.",
        {
            "source": STUDY_FILE,
            "lr": "0.4",
            "s": "0.5,1",
            "metric": "test_acc",
            "group": "batch_size,noise,noise_scale",
        },
    ),
    (
        "pages/noise_vs_generalisation.py",
        "3 · Frobenius norm or trace?",
        "Each noisy setting's ‖Σ‖_F against its test accuracy (equal-trace and "
        "equal-Frobenius arms), with the correlations of ‖Σ‖_F and tr Σ side by side.",
        {"source": STUDY_FILE, "noisy_only": "true", "stat": "noise_fro", "measure": "test_acc"},
    ),
    (
        "pages/findings.py",
        "4 · What the study concludes",
        "The four claims, each judged from the runs with stated rules.",
        {},
    ),
    (
        "pages/quadratic.py",
        "5 · Why: the exact quadratic",
        "At equal trace the stationary loss is ordered by ‖Σ‖_F.",
        {},
    ),
    (
        "pages/geometry.py",
        "6 · What the noise looks like",
        "One step's noise clouds for the three structures on a two-weight problem.",
        {},
    ),
]
