"""``Linear``: the learned affine map ``y = x W + b`` (the projections of §4.1).

``W`` is stored as ``(d_in, d_out)`` so the code reads as the article's ``X W^Q``;
``torch.nn.Linear.weight`` is the transpose, ``(d_out, d_in)``.
"""

from __future__ import annotations

import math

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import module_input, positive_int


class Linear(Module):
    """``y = x W + b`` applied to the last axis of x.

    Parameters:
        W: ``(d_in, d_out)``, initialised uniform in ``±1/√d_in`` (PyTorch's default).
        b: ``(d_out,)``, same initialisation; absent (``None``) when ``bias=False``.

    Args:
        d_in: width of the input features.
        d_out: width of the output features.
        bias: whether to learn ``b``.
        dtype: float64 (default) or float32, the dtype of the parameters and of the inputs
            the module accepts.
        rng: a ``np.random.Generator`` or an int seed for the initialisation.
    """

    def __init__(
        self, d_in: int, d_out: int, bias: bool = True, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.d_in = positive_int("d_in", d_in)
        self.d_out = positive_int("d_out", d_out)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        bound = 1.0 / math.sqrt(self.d_in)
        self.W = Parameter(gen.uniform(-bound, bound, (self.d_in, self.d_out)).astype(self.dtype))
        self.b = Parameter(gen.uniform(-bound, bound, self.d_out).astype(self.dtype)) if bias else None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ops.LinearCache]:
        """``x (..., d_in)`` -> ``(..., d_out)``, e.g. ``(B, L, d_in) -> (B, L, d_out)``, and the cache."""
        module_input("x", x, self.d_in, self.dtype, f"Linear({self.d_in}, {self.d_out})")
        return ops.linear_forward(x, self.W.data, None if self.b is None else self.b.data)

    def backward(self, d_out: np.ndarray, cache: ops.LinearCache) -> tuple[np.ndarray]:
        """``d_out (..., d_out)`` -> ``(dx (..., d_in),)``; adds into ``W.grad`` and ``b.grad``."""
        expect_cache(cache, ops.LinearCache, "Linear")
        # out = x @ W + b  (the op's backward gives all three gradients)
        dx, dW, db = ops.linear_backward(d_out, cache)
        self.W.grad += dW
        if self.b is not None:
            self.b.grad += db
        return (dx,)

    def __repr__(self) -> str:
        return f"Linear(d_in={self.d_in}, d_out={self.d_out}, bias={self.b is not None})"
