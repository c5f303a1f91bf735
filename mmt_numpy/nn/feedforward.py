"""The position-wise feed-forward network of §3.1 (step 3): ``linear2(act(linear1(x)))``."""

from __future__ import annotations

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator
from mmt_numpy.validate import float_array, positive_int

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


class Activation(Module):
    """An element-wise activation without parameters, chosen by name.

    Args:
        name: ``"relu"``; ``"gelu"``, the exact form ``x Φ(x)`` (``nn.GELU()``); or
            ``"gelu_tanh"``, the tanh approximation (``nn.GELU(approximate="tanh")``).
    """

    def __init__(self, name: str = "relu") -> None:
        if name not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {name!r}")
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (...)`` -> ``(...)``."""
        float_array("x", x)
        if self.name == "relu":
            out, cache = ops.relu_forward(x)
        else:
            out, cache = ops.gelu_forward(x, approximate="none" if self.name == "gelu" else "tanh")
        self._cache = cache
        return out

    def backward(self, d_out: np.ndarray) -> np.ndarray:
        """``d_out (...)`` -> ``dx (...)``."""
        cache = self._saved()
        # out = act(x)  ->  dx = d_out ⊙ act'(x)
        if self.name == "relu":
            return ops.relu_backward(d_out, cache)
        return ops.gelu_backward(d_out, cache)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


class FeedForward(Module):
    """``out = linear2(dropout(act(linear1(x))))``, applied to every position independently.

    The same two-layer MLP as inside ``torch.nn.TransformerEncoderLayer`` (§3.1, step 3):
    widen to ``d_ff`` (usually 4·d_model), apply the non-linearity, project back.

    Submodules: ``linear1`` ``Linear(d_model, d_ff)``, ``activation``, ``dropout``,
    ``linear2`` ``Linear(d_ff, d_model)``.

    Args:
        d_model: input and output width.
        d_ff: hidden width.
        activation: ``"relu"``, ``"gelu"`` (exact erf form) or ``"gelu_tanh"``.
        dropout: drop probability after the activation (0 = none).
        dtype, rng: parameter dtype and the generator for initialisation and dropout masks.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        dropout: float = 0.0,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.linear1 = Linear(self.d_model, self.d_ff, dtype=dtype, rng=gen)
        self.activation = Activation(activation)
        self.dropout = Dropout(dropout, rng=gen)
        self.linear2 = Linear(self.d_ff, self.d_model, dtype=dtype, rng=gen)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (B, L, d_model)`` (any leading dimensions) -> ``(B, L, d_model)``."""
        hidden = self.linear1.forward(x)
        hidden = self.activation.forward(hidden)
        hidden = self.dropout.forward(hidden)
        self._cache = True  # the submodules keep their own caches
        return self.linear2.forward(hidden)

    def backward(self, d_out: np.ndarray) -> np.ndarray:
        """``d_out (B, L, d_model)`` -> ``dx (B, L, d_model)``; the four lines of forward, reversed."""
        self._saved()
        d_hidden = self.linear2.backward(d_out)  # out = linear2(hidden)
        d_hidden = self.dropout.backward(d_hidden)  # hidden = dropout(hidden)
        d_hidden = self.activation.backward(d_hidden)  # hidden = act(hidden)
        return self.linear1.backward(d_hidden)  # hidden = linear1(x)

    def __repr__(self) -> str:
        return (
            f"FeedForward(d_model={self.d_model}, d_ff={self.d_ff}, "
            f"activation={self.activation.name!r}, dropout={self.dropout.p})"
        )
