"""The position-wise feed-forward network of §3.1 (step 3): ``linear2(act(linear1(x)))``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import float_array, positive_int, probability

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


class FeedForwardCache(NamedTuple):
    linear1: ops.LinearCache
    activation: ops.ReluCache | ops.GeluCache
    dropout: ops.DropoutCache
    linear2: ops.LinearCache


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

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, ops.ReluCache | ops.GeluCache]:
        """``x (...)`` -> ``(...)`` and the cache."""
        float_array("x", x)
        if self.name == "relu":
            return ops.relu_forward(x)
        return ops.gelu_forward(x, approximate="none" if self.name == "gelu" else "tanh")

    def backward(self, d_out: np.ndarray, cache: ops.ReluCache | ops.GeluCache) -> tuple[np.ndarray]:
        """``d_out (...)`` -> ``(dx (...),)``."""
        # out = act(x)  ->  dx = d_out ⊙ act'(x)
        if self.name == "relu":
            return (ops.relu_backward(d_out, expect_cache(cache, ops.ReluCache, "Activation('relu')")),)
        return (ops.gelu_backward(d_out, expect_cache(cache, ops.GeluCache, f"Activation({self.name!r})")),)

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
        dropout = probability("dropout", dropout)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.linear1 = Linear(self.d_model, self.d_ff, dtype=dtype, rng=gen)
        self.activation = Activation(activation)
        self.dropout = Dropout(dropout, rng=gen)
        self.linear2 = Linear(self.d_ff, self.d_model, dtype=dtype, rng=gen)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, FeedForwardCache]:
        """``x (B, L, d_model)`` (any leading dimensions) -> ``(B, L, d_model)`` and the cache."""
        return feed_forward(x, self.linear1, self.activation, self.dropout, self.linear2)

    def backward(self, d_out: np.ndarray, cache: FeedForwardCache) -> tuple[np.ndarray]:
        """``d_out (B, L, d_model)`` -> ``(dx (B, L, d_model),)``."""
        return (
            feed_forward_backward(d_out, cache, self.linear1, self.activation, self.dropout, self.linear2),
        )

    def __repr__(self) -> str:
        return (
            f"FeedForward(d_model={self.d_model}, d_ff={self.d_ff}, "
            f"activation={self.activation.name!r}, dropout={self.dropout.p})"
        )


def feed_forward(
    x: np.ndarray, linear1: Linear, activation: Activation, dropout: Dropout, linear2: Linear
) -> tuple[np.ndarray, FeedForwardCache]:
    """``linear2(dropout(activation(linear1(x))))`` with the given submodules, and the cache.

    The one implementation of the position-wise network: :class:`FeedForward` calls it with
    its own submodules, the encoder and decoder layers with theirs (which carry PyTorch's
    names ``linear1``, ``linear2`` on the layer itself).
    """
    hidden, c1 = linear1.forward(x)
    hidden, c_act = activation.forward(hidden)
    hidden, c_drop = dropout.forward(hidden)
    out, c2 = linear2.forward(hidden)
    return out, FeedForwardCache(c1, c_act, c_drop, c2)


def feed_forward_backward(
    d_out: np.ndarray,
    cache: FeedForwardCache,
    linear1: Linear,
    activation: Activation,
    dropout: Dropout,
    linear2: Linear,
) -> np.ndarray:
    """``dx`` of :func:`feed_forward`: its four lines, reversed."""
    expect_cache(cache, FeedForwardCache, "feed_forward")
    (d_hidden,) = linear2.backward(d_out, cache.linear2)  # out = linear2(hidden)
    (d_hidden,) = dropout.backward(d_hidden, cache.dropout)  # hidden = dropout(hidden)
    (d_hidden,) = activation.backward(d_hidden, cache.activation)  # hidden = act(hidden)
    (dx,) = linear1.backward(d_hidden, cache.linear1)  # hidden = linear1(x)
    return dx
