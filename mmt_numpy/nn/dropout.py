"""``Dropout``: inverted dropout while training, the identity in evaluation mode."""

from __future__ import annotations

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.module import Module, RngLike, as_generator, expect_cache
from mmt_numpy.validate import float_array, probability


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the survivors by ``1/(1 − p)``.

    In evaluation mode (``.eval()``) or with ``p = 0`` it is the identity, as
    ``torch.nn.Dropout``.

    Args:
        p: the drop probability, in [0, 1].
        rng: a ``np.random.Generator`` or an int seed; it draws every mask, so the same seed
            gives the same masks.  Modules that contain dropouts pass their own generator.
    """

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        self.p = probability("p", p)
        self.rng = as_generator(rng)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ops.DropoutCache]:
        """``x (...)`` -> ``(...)`` of the same shape and dtype, and the cache (the mask drawn)."""
        float_array("x", x)
        return ops.dropout_forward(x, self.p, self.rng, training=self.training)

    def backward(self, d_out: np.ndarray, cache: ops.DropoutCache) -> tuple[np.ndarray]:
        """``d_out (...)`` -> ``(dx (...),)``: the same mask and scale as that forward."""
        expect_cache(cache, ops.DropoutCache, "Dropout")
        # out = x * scaled_keep  ->  dx = d_out * scaled_keep
        return (ops.dropout_backward(d_out, cache),)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
