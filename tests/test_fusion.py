"""Fusion strategies of §2.1.1: values, gradient checks (and broken backwards they reject),
float32, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.checks import randn
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import FeatureFusion, TensorFusion, VectorFusion


def test_feature_fusion_is_concatenation_along_the_sequence():
    a, b = randn(0, 2, 3, 4), randn(1, 2, 5, 4)
    m = FeatureFusion()
    out, cache = m.forward(a, b)
    assert out.shape == (2, 8, 4)
    np.testing.assert_array_equal(out[:, :3], a)
    np.testing.assert_array_equal(out[:, 3:], b)
    d_a, d_b = m.backward(np.arange(out.size, dtype=np.float64).reshape(out.shape), cache)
    assert d_a.shape == a.shape and d_b.shape == b.shape
    assert d_b[0, 0, 0] == 3 * 4  # first element of b's gradient is element (0, 3, 0) of d_out


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("concat", lambda v1, v2: np.concatenate([v1, v2], axis=1)),
        ("sum", lambda v1, v2: v1 + v2),
        ("product", lambda v1, v2: v1 * v2),
    ],
)
def test_vector_fusion_values_and_gradients(mode, expected):
    v1, v2 = randn(2, 3, 4), randn(3, 3, 4)
    m = VectorFusion(mode)
    np.testing.assert_array_equal(m(v1, v2), expected(v1, v2))
    assert m.out_dim(4, 4) == m(v1, v2).shape[1]
    report = check_module(m, {"v1": v1, "v2": v2})
    assert report.passed, str(report)


def test_tensor_fusion_holds_unimodal_features_and_all_products():
    v1, v2 = randn(4, 2, 3), randn(5, 2, 2)
    z = TensorFusion(3, 2)(v1, v2).reshape(2, 4, 3)  # (B, d1+1, d2+1)
    np.testing.assert_allclose(z[:, :3, :2], v1[:, :, None] * v2[:, None, :])
    np.testing.assert_allclose(z[:, :3, 2], v1)  # v1 times the appended 1
    np.testing.assert_allclose(z[:, 3, :2], v2)
    np.testing.assert_array_equal(z[:, 3, 2], 1.0)


@pytest.mark.parametrize("d_out", [None, 3])
def test_tensor_fusion_gradcheck(d_out):
    m = TensorFusion(3, 4, d_out, rng=0)
    report = check_module(m, {"v1": randn(6, 2, 3), "v2": randn(7, 2, 4)})
    assert report.passed, str(report)
    assert len(report.tensors) == (2 if d_out is None else 4)


class SwappedProduct(VectorFusion):
    """Broken: each factor gets its own value instead of the other's."""

    def backward(self, d_out, cache):
        return d_out * cache.a, d_out * cache.b


class TensorFusionWithoutConstant(TensorFusion):
    """Broken: drops the term coming from the appended 1 (the unimodal part of z)."""

    def backward(self, d_out, cache):
        u1, u2 = cache.u1, cache.u2
        B = u1.shape[0]
        d_outer = d_out.reshape(B, u1.shape[1], u2.shape[1])
        d_v1 = np.einsum("bij,bj->bi", d_outer[:, :-1, :-1], u2[:, :-1])
        d_v2 = np.einsum("bij,bi->bj", d_outer[:, :-1, :-1], u1[:, :-1])
        return d_v1, d_v2


def test_gradcheck_rejects_broken_fusions():
    product = check_module(SwappedProduct("product"), {"v1": randn(8, 3, 4), "v2": randn(9, 3, 4)})
    tensor = check_module(TensorFusionWithoutConstant(3, 2), {"v1": randn(10, 2, 3), "v2": randn(11, 2, 2)})
    assert not product.passed
    assert not tensor.passed


def test_float32_in_float32_out():
    v1, v2 = randn(12, 2, 3).astype(np.float32), randn(13, 2, 3).astype(np.float32)
    m = TensorFusion(3, 3, 5, dtype=np.float32, rng=1)
    out, cache = m.forward(v1, v2)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in m.backward(np.ones((2, 5), np.float32), cache))
    for mode in ("concat", "sum", "product"):
        assert VectorFusion(mode)(v1, v2).dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match="mode: expected one of"):
        VectorFusion("bilinear")
    with pytest.raises(ValueError, match="v2: mode 'sum' needs the shape of v1"):
        VectorFusion("sum")(randn(14, 2, 3), randn(15, 2, 4))
    with pytest.raises(ValueError, match="v2: expected batch size 2"):
        VectorFusion("concat")(randn(14, 2, 3), randn(15, 3, 4))
    with pytest.raises(ValueError, match="v1: expected shape \\(B, 3\\)"):
        TensorFusion(3, 2)(randn(16, 2, 4), randn(17, 2, 2))
    with pytest.raises(TypeError, match="v1: expected dtype float64"):
        TensorFusion(3, 2)(randn(16, 2, 3).astype(np.float32), randn(17, 2, 2))
    with pytest.raises(ValueError, match="b: expected shape \\(2, Lb, 4\\)"):
        FeatureFusion()(randn(18, 2, 3, 4), randn(19, 2, 3, 5))
    with pytest.raises(TypeError, match="one dtype"):
        FeatureFusion()(randn(18, 2, 3, 4), randn(19, 2, 3, 4).astype(np.float32))
    with pytest.raises(
        TypeError, match="cache: expected the TensorFusionCache that TensorFusion.forward returned"
    ):
        TensorFusion(3, 2).backward(np.ones((2, 12)), None)
    m = TensorFusion(3, 2)
    _, cache = m.forward(randn(16, 2, 3), randn(17, 2, 2))
    with pytest.raises(ValueError, match=r"d_out: expected shape \(2, 12\)"):
        m.backward(np.ones((2, 11)), cache)
