"""Gradient checks of the core modules (Linear, LayerNorm, MultiHeadAttention,
ArticleCrossAttention, FeedForward, TransformerEncoderLayer, TransformerEncoder): every input
and every parameter, float64, with the parameters moved away from their initial values
(biases of 0 and γ = 1 would hide a bias or γ mix-up).

The key bias ``b_k`` of every attention has an exact gradient of 0: adding ``b_k`` to each
key adds ``q_i · b_k`` to *every* score of query row i, and a softmax is unchanged when a
whole row shifts by one constant (PyTorch's ``in_proj_bias`` gradient is 0 in that slice
too).  ``check_module`` judges it against the module's gradient scale (see
``mmt_numpy.gradcheck``), so a backward that writes anything of that size into ``b_k.grad``
fails.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import nn, ops
from mmt_numpy.checks import Case, randn, randomize
from mmt_numpy.gradcheck import GradcheckReport, check_module

ORDER = 10


def _linear(bias: bool) -> GradcheckReport:
    m = randomize(nn.Linear(4, 3, bias=bias, rng=1), 2)
    return check_module(m, {"x": randn(3, 2, 3, 4)}, name=f"Linear{'' if bias else ' (no bias)'}")


def _layernorm() -> GradcheckReport:
    m = randomize(nn.LayerNorm(5), 4)
    return check_module(m, {"x": randn(5, 2, 3, 5)}, name="LayerNorm")


def _mha(kind: str) -> GradcheckReport:
    B, Lq, Lk, d_model, H = 2, 3, 5, 4, 2
    name = f"MultiHeadAttention ({kind})"
    query = randn(6, B, Lq, d_model)
    if kind == "self, padding mask":
        m = randomize(nn.MultiHeadAttention(d_model, H, rng=7), 8)
        return check_module(m, {"query": query}, kwargs={"mask": ops.padding_mask([3, 2], Lq)}, name=name)
    if kind == "causal, no bias":
        m = randomize(nn.MultiHeadAttention(d_model, H, bias=False, rng=7), 8)
        return check_module(m, {"query": query}, kwargs={"mask": ops.causal_mask(Lq)}, name=name)
    m = randomize(nn.MultiHeadAttention(d_model, H, kv_dim=6, rng=9), 10)
    inputs = {"query": query, "key_value": randn(11, B, Lk, 6)}
    if kind == "cross, kv_dim 6, Lk 5":  # Lq = 3 queries over Lk = 5 keys, with padding
        mask = ops.padding_mask([5, 2], Lk)
    else:  # cross-attention, a random mask in which query 0 of batch 0, head 0 sees no key
        mask = np.random.default_rng(12).random((B, H, Lq, Lk)) < 0.6
        mask[0, 0, 0] = False
    return check_module(m, inputs, kwargs={"mask": mask}, name=name)


def _article_cross_attention() -> GradcheckReport:
    m = randomize(nn.ArticleCrossAttention(4, d_k=3, rng=13), 14)
    inputs = {"x": randn(15, 2, 3, 4), "y": randn(16, 2, 5, 4)}
    return check_module(
        m, inputs, kwargs={"mask": ops.padding_mask([5, 3], 5)}, name="ArticleCrossAttention (§4.2, padding)"
    )


def _feedforward(activation: str) -> GradcheckReport:
    m = randomize(nn.FeedForward(4, 6, activation=activation, rng=17), 18)
    return check_module(m, {"x": randn(19, 2, 3, 4)}, name=f"FeedForward ({activation})")


def _encoder_layer(norm_first: bool, activation: str) -> GradcheckReport:
    m = randomize(
        nn.TransformerEncoderLayer(4, 2, 6, norm_first=norm_first, activation=activation, rng=20), 21
    )
    variant = "pre-LN" if norm_first else "post-LN"
    return check_module(
        m,
        {"x": randn(22, 2, 4, 4)},
        kwargs={"mask": ops.padding_mask([4, 2], 4)},
        name=f"TransformerEncoderLayer ({variant}, {activation})",
    )


def _encoder() -> GradcheckReport:
    m = randomize(nn.TransformerEncoder(4, 2, 6, num_layers=2, norm_first=True, final_norm=True, rng=23), 24)
    return check_module(
        m,
        {"x": randn(25, 2, 4, 4)},
        kwargs={"mask": ops.padding_mask([3, 4], 4)},
        name="TransformerEncoder (2 pre-LN + norm)",
    )


_MHA_KINDS = (
    "self, padding mask",
    "causal, no bias",
    "cross, kv_dim 6, Lk 5",
    "fully masked row",
)

CASES = [
    Case("Linear", partial(_linear, True)),
    Case("Linear (no bias)", partial(_linear, False)),
    Case("LayerNorm", _layernorm),
    *[Case(f"MultiHeadAttention ({kind})", partial(_mha, kind)) for kind in _MHA_KINDS],
    Case("ArticleCrossAttention (§4.2, padding)", _article_cross_attention),
    *[Case(f"FeedForward ({a})", partial(_feedforward, a)) for a in ("relu", "gelu", "gelu_tanh")],
    Case("TransformerEncoderLayer (post-LN, relu)", partial(_encoder_layer, False, "relu")),
    Case("TransformerEncoderLayer (post-LN, gelu)", partial(_encoder_layer, False, "gelu")),
    Case("TransformerEncoderLayer (pre-LN, relu)", partial(_encoder_layer, True, "relu")),
    Case("TransformerEncoder (2 pre-LN + norm)", _encoder),
]
