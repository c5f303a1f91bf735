"""``LayerNorm``: normalise each feature vector, then scale by γ and shift by β (§3.1, step 5)."""

from __future__ import annotations

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.module import Module, Parameter, as_float_dtype, expect_cache
from mmt_numpy.validate import module_input, positive_int, positive_number


class LayerNorm(Module):
    """Layer normalisation over the last axis, as ``torch.nn.LayerNorm(d)``.

    ``out = γ ⊙ (x − mean(x)) / √(var(x) + eps) + β`` with the biased variance (divide by d).

    Parameters:
        gamma: ``(d,)`` scale, initialised to ones.
        beta: ``(d,)`` shift, initialised to zeros.

    Args:
        d: the width of the last axis that is normalised.
        eps: added to the variance before the square root.
        dtype: float64 (default) or float32.
    """

    def __init__(self, d: int, eps: float = 1e-5, *, dtype: object = np.float64) -> None:
        self.d = positive_int("d", d)
        self.eps = positive_number("eps", eps)
        self.dtype = as_float_dtype(dtype)
        self.gamma = Parameter(np.ones(self.d, dtype=self.dtype))
        self.beta = Parameter(np.zeros(self.d, dtype=self.dtype))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ops.LayerNormCache]:
        """``x (..., d)`` -> ``(..., d)``, e.g. ``(B, L, d)``, and the cache."""
        module_input("x", x, self.d, self.dtype, f"LayerNorm({self.d})")
        return ops.layernorm_forward(x, self.gamma.data, self.beta.data, self.eps)

    def backward(self, d_out: np.ndarray, cache: ops.LayerNormCache) -> tuple[np.ndarray]:
        """``d_out (..., d)`` -> ``(dx (..., d),)``; adds into ``gamma.grad`` and ``beta.grad``."""
        expect_cache(cache, ops.LayerNormCache, "LayerNorm")
        # out = γ ⊙ x̂ + β with x̂ = (x − μ)/√(σ² + ε)  (derivation in ops/layernorm.py)
        dx, dgamma, dbeta = ops.layernorm_backward(d_out, cache)
        self.gamma.grad += dgamma
        self.beta.grad += dbeta
        return (dx,)

    def __repr__(self) -> str:
        return f"LayerNorm(d={self.d}, eps={self.eps})"
