"""Gradient checks of reuse: a module called twice before any backward, an ALBERT-style encoder
whose layers are one object, an embedding table that is also the output projection, and a
co-attention layer whose two streams share their weights.

Each is correct only if every call keeps its own cache and every backward *adds* its share
into ``.grad``: the module contract of :mod:`mmt_numpy.nn.module`.  A module that kept one
cache from its last forward would back-propagate the second call's inputs twice and fail
these checks (the tests build such a module and show that it does).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np

from mmt_numpy import nn
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module
from mmt_numpy.nn.module import Module

ORDER = 25


class TwiceCache(NamedTuple):
    first: Any
    second: Any


class UsedTwice(Module):
    """``forward(x1, x2) -> (m(x1), m(x2))`` with one module ``m``, before either backward.

    The backward runs the *second* call's backward first (as a graph whose later use is
    differentiated first would), so a module that remembered only its last call would mix
    the two up.
    """

    def __init__(self, module: Module) -> None:
        self.module = module

    def forward(self, x1: np.ndarray, x2: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], TwiceCache]:
        y1, c1 = self.module.forward(x1)
        y2, c2 = self.module.forward(x2)
        return (y1, y2), TwiceCache(c1, c2)

    def backward(
        self, d_out: tuple[np.ndarray, np.ndarray], cache: TwiceCache
    ) -> tuple[np.ndarray, np.ndarray]:
        d1, d2 = d_out
        (dx2,) = self.module.backward(d2, cache.second)  # y2 = m(x2), differentiated first
        (dx1,) = self.module.backward(d1, cache.first)  # y1 = m(x1)
        return dx1, dx2


class TiedLanguageModelCache(NamedTuple):
    embedding: Any
    hidden: Any
    output: Any


class TiedLanguageModel(Module):
    """A toy language model ``ids -> E[ids] -> Linear -> h Eᵀ``: one table ``E`` used twice."""

    def __init__(self, vocab: int, dim: int, *, rng: int) -> None:
        self.embedding = nn.Embedding(vocab, dim, rng=rng)
        self.hidden = nn.Linear(dim, dim, rng=rng + 1)
        self.output = nn.TiedOutputProjection(self.embedding, bias=True)

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, TiedLanguageModelCache]:
        x, c_emb = self.embedding.forward(ids)  # x = E[ids]
        h, c_hidden = self.hidden.forward(x)  # h = x W + b
        logits, c_out = self.output.forward(h)  # logits = h Eᵀ + b_out
        return logits, TiedLanguageModelCache(c_emb, c_hidden, c_out)

    def backward(self, d_logits: np.ndarray, cache: TiedLanguageModelCache) -> tuple[()]:
        (d_h,) = self.output.backward(d_logits, cache.output)
        (d_x,) = self.hidden.backward(d_h, cache.hidden)
        return self.embedding.backward(d_x, cache.embedding)  # () : ids are integers


def _linear_twice(same_shape: bool) -> GradcheckReport:
    m = randomize(nn.Linear(4, 3, rng=70), 71)
    x2 = randn(73, 2, 3, 4) if same_shape else randn(73, 5, 4)
    name = f"Linear used twice ({'same' if same_shape else 'different'} shapes)"
    return check_module(UsedTwice(m), {"x1": randn(72, 2, 3, 4), "x2": x2}, name=name)


def _albert() -> GradcheckReport:
    m = randomize(
        nn.TransformerEncoder(4, 2, 6, 3, norm_first=True, final_norm=True, share_layers=True, rng=74), 75
    )
    return check_module(m, {"x": randn(76, 2, 3, 4)}, name="ALBERT encoder (1 layer used 3 times)")


def _tied() -> GradcheckReport:
    m = randomize(TiedLanguageModel(6, 4, rng=77), 78)
    ids = np.array([[1, 3, 1], [0, 5, 2]])
    return check_module(m, {"ids": ids}, name="tied embedding / output projection")


def _shared_coattention() -> GradcheckReport:
    m = nn.CoAttentionLayer(4, 4, 2, 5, rng=79)
    m.image_cross_attn = m.text_cross_attn  # one attention serves both directions
    m.image_ff = m.text_ff
    randomize(m, 80)
    inputs = {"text": randn(81, 2, 3, 4), "image": randn(82, 2, 5, 4)}
    return check_module(
        m, inputs, kwargs={"image_lengths": np.array([5, 2])}, name="CoAttention, shared weights"
    )


CASES = [
    Case("Linear used twice (same shapes)", partial(_linear_twice, True)),
    Case("Linear used twice (different shapes)", partial(_linear_twice, False)),
    Case("ALBERT encoder (1 layer used 3 times)", _albert),
    Case("tied embedding / output projection", _tied),
    Case("CoAttention, shared weights", _shared_coattention),
]
