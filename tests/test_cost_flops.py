"""One example's forward FLOPs, counted from the layers' shapes, against torch's own counter.

`results.forward_flops` counts the matrix products and convolutions of the built model with
forward hooks, so the app's cost estimate needs no torch._dynamo (which torch's
FlopCounterMode imports). The reference here is FlopCounterMode on the same model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from covnoise import results
from covnoise.core.models import build_model

CASES = [
    ((1, 8, 8), 10, "mlp", 256, 3),
    ((1, 28, 28), 10, "mlp", 100, 5),
    ((1, 28, 28), 10, "cnn", 256, 3),
    ((1, 40), 10, "cnn", 64, 3),  # the 1-D CNN of MNIST-1D
    ((3, 32, 32), 10, "vgg", 64, 3),
    ((3, 32, 32), 100, "resnet", 32, 3),
]


def _reference(shape, classes, model, width, depth) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    net = build_model(model, shape, classes, width=width, depth=depth).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


@pytest.mark.parametrize("shape, classes, model, width, depth", CASES)
def test_forward_flops_equal_torchs_counter(shape, classes, model, width, depth):
    got = results.forward_flops(shape, classes, model, width, depth)
    assert got > 0
    assert got == _reference(shape, classes, model, width, depth)


def test_forward_flops_do_not_import_the_compiler_stack():
    code = (
        "import json, sys\n"
        "from covnoise import results\n"
        "f = results.forward_flops((1, 8, 8), 10, 'cnn', 64, 3)\n"
        "print(json.dumps([f, 'torch._dynamo' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    flops, dynamo = json.loads(out.stdout)
    assert flops > 0 and dynamo is False
