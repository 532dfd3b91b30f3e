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
