"""Dense per-example gradients by torch.func: the correctness reference for the recorders.

Far too slow for the training path (it materialises B×P gradients); tests and small probes
compare the hook-based statistics against it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


def per_example_grads(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    params: list[Tensor] | None = None,
) -> list[Tensor]:
    """Dense per-example gradients (B, *p.shape) of loss_fn(model(x_n), y_n) via torch.func.

    A correctness reference for tests and small probes; far too slow for the training path.
    """
    from torch.func import functional_call, grad, vmap

    named = dict(model.named_parameters())
    wanted = params if params is not None else [p for p in named.values() if p.requires_grad]
    ids = {id(p) for p in wanted}
    train = {n: p.detach() for n, p in named.items() if id(p) in ids}
    fixed = {n: p.detach() for n, p in named.items() if id(p) not in ids}
    fixed.update(dict(model.named_buffers()))
    names = [n for n, p in named.items() if id(p) in ids]
    order = {id(p): n for n, p in named.items()}

    def loss_one(tp: dict[str, Tensor], xn: Tensor, yn: Tensor) -> Tensor:
        out = functional_call(model, {**tp, **fixed}, (xn.unsqueeze(0),))
        return loss_fn(out, yn.unsqueeze(0)).sum()

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(train, x, y)
    by_name = {n: grads[n] for n in names}
    return [by_name[order[id(p)]] for p in wanted]
