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
    """A teaching preset: a title, what it shows, and Train-form values."""

    title: str
    explains: str
    values: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "gap": Preset(
        "The large-batch gap",
        "Plain SGD with a large batch L = 1024 against the small batch M = 32 for the same "
        "epochs: compare how far each fits the training set and how it does on the test set.",
        {
            "noises": ["none"],
            "baseline": True,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1",
        },
    ),
    "diag-full": Preset(
        "Diagonal vs full noise",
        "The same large batch with noise of equal trace but the diagonal or the full Fisher "
        "structure: full noise has a far larger Frobenius norm and follows the curvature.",
        {
            "noises": ["diag", "full"],
            "baseline": False,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1",
        },
    ),
    "trace-vs-fro": Preset(
        "Equal trace, different ‖Σ‖_F",
        "All four structures at two multipliers: tr Σ is the same across structures, ‖Σ‖_F "
        "is not. Open 'Noise vs generalisation' afterwards to see which explains more.",
        {
            "noises": ["none", "isotropic", "diag", "full"],
            "baseline": True,
            "batch_size": 1024,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 80.0,
            "eval_every": 8,
            "seeds": 2,
            "noise_scales": "1, 4",
        },
    ),
    "quick": Preset(
        "Quick look (about a minute)",
        "One short run per structure on a small MLP, to see the Live page move.",
        {
            "noises": ["none", "full"],
            "baseline": False,
            "width": 32,
            "batch_size": 512,
            "small_batch": 32,
            "lr": 0.5,
            "epochs": 30.0,
            "eval_every": 3,
            "seeds": 1,
            "noise_scales": "1",
        },
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
        "Each noisy setting's ‖Σ‖_F against its test accuracy, with the correlations of ‖Σ‖_F "
        "and tr Σ side by side.",
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
