"""The fast paths behind ``benchmarks/encoder_layer.py``, and the benchmark's own bookkeeping.

The optimisations (in-place softmax, folded linear rows, the one-hot modality gradient,
in-place gradient sums) must not change a result, must not write into an array the caller
still holds, and must keep float32 float32 all the way through (a float64 temporary would
be both a silent promotion and a 2x slowdown).  The benchmark must count FLOPs as the
docstring says and must compare ours and PyTorch on the same computation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.nn import ModalityEmbedding, MultimodalTransformer

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "encoder_layer.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("encoder_layer_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- softmax's out=


@pytest.mark.parametrize("with_mask", [False, True], ids=["no mask", "mask"])
def test_softmax_out_writes_the_same_numbers_in_place(with_mask: bool) -> None:
    x = randn(1, 2, 3, 5)
    mask = np.array([True, False, True, True, False]) if with_mask else None
    expected, _ = ops.softmax_forward(x, mask)
    buffer = x.copy()
    out, cache = ops.softmax_forward(buffer, mask, out=buffer)
    assert out is buffer
    np.testing.assert_array_equal(out, expected)

    d_out = randn(2, *x.shape)
    expected_dx = ops.softmax_backward(d_out, cache)
    d_buffer = d_out.copy()
    dx = ops.softmax_backward(d_buffer, cache, out=d_buffer)
    assert dx is d_buffer
    np.testing.assert_array_equal(dx, expected_dx)


def test_softmax_refuses_an_out_of_another_shape_or_dtype() -> None:
    x = randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"out: expected None or an array of x's dtype and shape"):
        ops.softmax_forward(x, out=np.empty((2, 5)))
    _, cache = ops.softmax_forward(x)
    with pytest.raises(ValueError, match=r"out: expected None or an array of d_out's dtype and shape"):
        ops.softmax_backward(x, cache, out=np.empty((2, 4), np.float32))


def test_ops_leave_their_inputs_alone() -> None:
    """The ops work in place only on arrays they made themselves."""
    q, k, v = randn(4, 2, 3, 5, 4), randn(5, 2, 3, 6, 4), randn(6, 2, 3, 6, 4)
    mask = ops.padding_mask([6, 2], 6)
    d_out = randn(7, 2, 3, 5, 4)
    x, gamma, beta = randn(8, 2, 5, 4), randn(9, 4), randn(10, 4)
    inputs = [q, k, v, d_out, x, gamma, beta]
    before = [a.copy() for a in inputs]
    _, cache = ops.attention_forward(q, k, v, mask)
    ops.attention_backward(d_out, cache)
    _, cache = ops.layernorm_forward(x, gamma, beta)
    ops.layernorm_backward(x, cache)
    _, cache = ops.softmax_forward(x)
    ops.softmax_backward(x, cache)
    for a, b in zip(inputs, before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- linear with folded rows


@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4), (2, 2, 3, 4)], ids=["1-D", "2-D", "3-D", "4-D"])
def test_linear_folds_any_leading_dimensions(shape: tuple[int, ...]) -> None:
    x, W, b, d_out = randn(1, *shape), randn(2, 4, 5), randn(3, 5), randn(4, *shape[:-1], 5)
    out, cache = ops.linear_forward(x, W, b)
    np.testing.assert_allclose(out, np.matmul(x, W) + b, rtol=1e-13, atol=1e-13)
    dx, dW, db = ops.linear_backward(d_out, cache)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, np.matmul(d_out, W.T), rtol=1e-13, atol=1e-13)
    x_rows, d_rows = x.reshape(-1, 4), d_out.reshape(-1, 5)
    np.testing.assert_allclose(
        dW, sum(np.outer(a, g) for a, g in zip(x_rows, d_rows, strict=True)), rtol=1e-13, atol=1e-13
    )
    np.testing.assert_allclose(db, d_rows.sum(0), rtol=1e-13, atol=1e-13)


def test_linear_takes_a_strided_view() -> None:
    base = randn(1, 3, 4, 10)
    x = base[:, :, ::2]  # (3, 4, 5), not contiguous
    W = randn(2, 5, 2)
    out, cache = ops.linear_forward(x, W)
    np.testing.assert_allclose(out, x @ W, rtol=1e-13, atol=1e-13)
    dx, _, _ = ops.linear_backward(np.ones_like(out), cache)
    np.testing.assert_allclose(dx, np.ones_like(out) @ W.T, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- the modality gradient


@pytest.mark.parametrize(
    "modality",
    [1, np.array([0, 0, 2, 1]), np.array([[0, 1, 1, 2], [2, 2, 0, 0]])],
    ids=["int", "(L,)", "(B, L)"],
)
def test_modality_embedding_gradient_equals_add_at(modality) -> None:
    m = randomize(ModalityEmbedding(3, 5, rng=0), 1)
    x, d_out = randn(2, 2, 4, 5), randn(3, 2, 4, 5)
    _, cache = m.forward(x, modality)
    m.backward(d_out, cache)
    expected = np.zeros((3, 5))
    np.add.at(expected, np.broadcast_to(modality, (2, 4)), d_out)
    np.testing.assert_allclose(m.weight.grad, expected, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- float32 stays float32


def arrays_in(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in arrays_in(v)]
    return []


def test_float32_model_keeps_every_array_float32() -> None:
    """Output, input gradients, parameter gradients and every cached intermediate."""
    model = MultimodalTransformer(
        6, 7, 8, 2, 2, 3, d_ff=16, max_len=8, positional="learned", dtype=np.float32, rng=0
    )
    text, image = randn(1, 2, 4, 6).astype(np.float32), randn(2, 2, 5, 7).astype(np.float32)
    out, cache = model.forward(text, image, text_lengths=np.array([4, 2]))
    d_text, d_image = model.backward(np.ones_like(out), cache)
    floats = [out, d_text, d_image] + [p.grad for p in model.parameters()]
    floats += [a for a in arrays_in(cache) if a.dtype.kind == "f"]
    assert len(floats) > 50
    assert {a.dtype for a in floats} == {np.dtype(np.float32)}


# ---------------------------------------------------------------- the benchmark's bookkeeping


def test_benchmark_counts_three_times_the_forward_matmul_flops() -> None:
    bench = load_benchmark()
    B, L, D, H, F = 2, 6, 8, 2, 12
    forward = 2 * B * L * D * D * 4 + 2 * 2 * B * H * L * L * (D // H) + 2 * 2 * B * L * D * F
    assert bench.flops(bench.layer_products(B, L, D, H, F)) == 3 * forward
    Lt, Li, text_dim, image_dim, out = 3, 4, 5, 7, 9
    embed_and_output = 2 * B * Lt * text_dim * D + 2 * B * Li * image_dim * D + 2 * B * (Lt + Li) * D * out
    two_layers = 2 * bench.flops(bench.layer_products(B, Lt + Li, D, H, F))
    model = bench.model_products(B, Lt, Li, text_dim, image_dim, D, H, 2, F, out)
    assert bench.flops(model) == 3 * embed_and_output + two_layers
    bench.roofline_fn(bench.layer_products(B, L, D, H, F), np.float32)()  # runs, shapes consistent


@pytest.mark.parametrize("case", ["build_layer", "build_model"])
def test_benchmark_compares_ours_and_torch_on_the_same_computation(case: str) -> None:
    pytest.importorskip("torch")
    bench = load_benchmark()
    # The benchmark's own shapes, scaled down so that the test takes milliseconds.
    bench.LAYER = dict(B=2, L=6, D=16, H=4, F=24)
    bench.MODEL = dict(B=3, Lt=4, Li=5, text_dim=7, image_dim=9, D=16, H=4, layers=2, F=24, out=5)
    prepared = bench.prepare(getattr(bench, case), np.float64)  # raises when they disagree
    assert prepared["check"] < 1e-9
    assert set(prepared["steps"]) == {"ours", "roofline", "torch"}
