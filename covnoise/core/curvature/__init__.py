"""Curvature of the training loss: Hessian-vector products and the algorithms that use them.

Operators and algorithms are kept apart. An operator (`operators`: LinearOperator,
MatrixOperator, HessianOperator) is anything with ``dim``, ``n_matvecs`` and ``matvec(v)`` on
flat 1-D tensors; the algorithms (`eigen`: Lanczos, power iteration; `trace`: Hutchinson,
Tr(HΣ)) accept any operator, so they are tested against explicit matrices and used on
Hessians of networks without change.
"""

from covnoise.core.curvature.eigen import EigResult, lanczos, power_iteration, top_eigenvalue
from covnoise.core.curvature.operators import HessianOperator, LinearOperator, MatrixOperator
from covnoise.core.curvature.trace import hutchinson_trace, trace_h_sigma

__all__ = [
    "EigResult",
    "HessianOperator",
    "LinearOperator",
    "MatrixOperator",
    "hutchinson_trace",
    "lanczos",
    "power_iteration",
    "top_eigenvalue",
    "trace_h_sigma",
]
