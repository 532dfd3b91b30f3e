"""Models: shapes, parameter placement, ghost batch norm against per-group batch norm."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from covnoise.core.models import GhostNorm, build_model, count_parameters

SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "vgg": (3, 32, 32), "resnet": (3, 32, 32)}


@pytest.mark.parametrize("name, shape", [*SHAPES.items(), ("cnn", (1, 40)), ("mlp", (20,))])
@pytest.mark.parametrize("ghost_bn", [0, 4])
def test_output_shape_and_all_params_in_linear_or_conv(name, shape, ghost_bn):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, width=32, depth=3, ghost_bn=ghost_bn)
    out = model(torch.randn(8, *shape))
    assert out.shape == (8, 10)
    owned = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
        for p in m.parameters(recurse=False)
    )
    assert owned == count_parameters(model) > 0


def test_ghost_norm_matches_batch_norm_per_group():
    torch.manual_seed(0)
    x = torch.randn(12, 5, 3, 3)
    gn = GhostNorm(5, group=4).train()
    ref = torch.cat([F.batch_norm(c, None, None, training=True) for c in x.split(4)])
    torch.testing.assert_close(gn(x), ref, atol=1e-5, rtol=1e-5)
    gn.eval()
    mean, var = gn.running_mean.view(1, -1, 1, 1), gn.running_var.view(1, -1, 1, 1)
    torch.testing.assert_close(gn(x), (x - mean) / torch.sqrt(var + gn.eps))


def test_unknown_model_names_the_field():
    with pytest.raises(ValueError, match="model: 'transformer' is not one of"):
        build_model("transformer", (1, 8, 8), 10)
