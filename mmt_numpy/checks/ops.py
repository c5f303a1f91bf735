"""Gradient checks of every op in ``mmt_numpy.ops``, over shapes that exercise batch and
head dimensions, Lq != Lk, padding and causal masks, and fully masked rows."""

from __future__ import annotations

from functools import partial

import numpy as np

from mmt_numpy import ops
from mmt_numpy.checks import Case, randn
from mmt_numpy.gradcheck import GradcheckReport, check_op

ORDER = 0


def _away_from_zero(x: np.ndarray) -> np.ndarray:
    """Move values at least 0.1 away from 0, where ReLU has its kink."""
    return np.sign(x) * (0.1 + np.abs(x))


def _linear(bias: bool) -> GradcheckReport:
    inputs = {"x": randn(1, 2, 3, 4), "W": randn(2, 4, 5)}
    if bias:
        inputs["b"] = randn(3, 5)
    name = "linear" if bias else "linear (no bias)"
    return check_op(ops.linear_forward, ops.linear_backward, inputs, name=name)


def _relu() -> GradcheckReport:
    x = _away_from_zero(randn(4, 3, 7))
    return check_op(ops.relu_forward, ops.relu_backward, {"x": x}, name="relu")


def _gelu(form: str) -> GradcheckReport:
    return check_op(
        ops.gelu_forward,
        ops.gelu_backward,
        {"x": 2 * randn(5, 3, 7)},
        kwargs={"approximate": form},
        name=f"gelu ({form})",
    )


def _rows_mask(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A random keep-mask with the first row fully masked."""
    mask = np.random.default_rng(seed).random(shape) < 0.6
    mask[(0,) * (len(shape) - 1)] = False
    return mask


def _softmax(masked: bool) -> GradcheckReport:
    x = randn(6, 2, 3, 6)
    kwargs = {"mask": _rows_mask(x.shape, 7)} if masked else {}
    name = "softmax (mask, a fully masked row)" if masked else "softmax"
    return check_op(ops.softmax_forward, ops.softmax_backward, {"x": x}, kwargs=kwargs, name=name)


def _attention(kind: str) -> GradcheckReport:
    B, H, Lq, Lk, d_k, d_v = 2, 3, 4, 5, 3, 2
    if kind == "causal":
        Lk = Lq
    inputs = {"q": randn(8, B, H, Lq, d_k), "k": randn(9, B, H, Lk, d_k), "v": randn(10, B, H, Lk, d_v)}
    kwargs: dict = {}
    if kind == "padding":
        kwargs["mask"] = ops.padding_mask(np.array([Lk, 2]), Lk)
    elif kind == "causal":
        kwargs["mask"] = ops.causal_mask(Lq)
    elif kind == "fully masked row":
        kwargs["mask"] = _rows_mask((B, H, Lq, Lk), 11)
    elif kind == "scale":
        kwargs["scale"] = 0.3
    return check_op(
        ops.attention_forward,
        ops.attention_backward,
        inputs,
        kwargs=kwargs,
        name=f"attention ({kind})",
    )


def _layernorm() -> GradcheckReport:
    inputs = {"x": randn(12, 2, 3, 6), "gamma": randn(13, 6), "beta": randn(14, 6)}
    return check_op(ops.layernorm_forward, ops.layernorm_backward, inputs, name="layernorm")


def _residual() -> GradcheckReport:
    inputs = {"x": randn(15, 2, 3, 4), "fx": randn(16, 2, 3, 4)}
    return check_op(ops.residual_forward, ops.residual_backward, inputs, name="residual")


def _dropout_with_fixed_rng(x: np.ndarray, p: float) -> tuple[np.ndarray, tuple]:
    # A fresh generator per call draws the same mask each time, so the op is a fixed
    # function of x during the check.
    return ops.dropout_forward(x, p, rng=np.random.default_rng(17))


def _dropout() -> GradcheckReport:
    return check_op(
        partial(_dropout_with_fixed_rng, p=0.3),
        ops.dropout_backward,
        {"x": randn(18, 3, 8)},
        name="dropout (p=0.3)",
    )


def _cross_entropy(reduction: str) -> GradcheckReport:
    logits = randn(19, 2, 4, 7)
    targets = np.random.default_rng(20).integers(0, 7, size=(2, 4))
    targets[0, 1] = targets[1, 3] = -100  # ignored, as unmasked tokens in masked-token prediction
    return check_op(
        ops.cross_entropy_forward,
        ops.cross_entropy_backward,
        {"logits": logits},
        kwargs={"targets": targets, "reduction": reduction},
        name=f"cross_entropy ({reduction}, ignore_index)",
    )


CASES = [
    Case("linear", partial(_linear, True)),
    Case("linear (no bias)", partial(_linear, False)),
    Case("relu", _relu),
    Case("gelu (none)", partial(_gelu, "none")),
    Case("gelu (tanh)", partial(_gelu, "tanh")),
    Case("softmax", partial(_softmax, False)),
    Case("softmax (mask, a fully masked row)", partial(_softmax, True)),
    *[
        Case(f"attention ({kind})", partial(_attention, kind))
        for kind in ("no mask", "padding", "causal", "fully masked row", "scale")
    ],
    Case("layernorm", _layernorm),
    Case("residual", _residual),
    Case("dropout (p=0.3)", _dropout),
    *[
        Case(f"cross_entropy ({r}, ignore_index)", partial(_cross_entropy, r))
        for r in ("mean", "sum", "none")
    ],
]
