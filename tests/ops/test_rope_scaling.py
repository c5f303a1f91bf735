"""RoPE scaling for reading past the trained length: position interpolation and NTK-aware base.

* interpolation by s equals plain RoPE at positions p / s; NTK equals plain RoPE with the
  base multiplied by s^(d/(d−2));
* NTK keeps the fastest frequency and divides the slowest by exactly s; interpolation keeps
  every angle at length s·L inside the range seen at length L;
* both stay rotations: relative positions only; finite differences accept the backward
  and reject a backward that rotates back by the unscaled angles;
* bad options raise errors that name the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.gradcheck import check_op
from mmt_numpy.ops.rope import rope_angles, scaled_rope


def test_interpolation_is_rope_at_squeezed_positions():
    x = np.random.default_rng(0).standard_normal((2, 12, 8))
    scaled, _ = ops.rope_forward(x, scaling="interpolation", factor=4.0)
    plain, _ = ops.rope_forward(x, np.arange(12) / 4.0)
    np.testing.assert_allclose(scaled, plain, rtol=0, atol=1e-15)


def test_ntk_is_rope_with_a_larger_base():
    x = np.random.default_rng(1).standard_normal((2, 12, 8))
    scaled, _ = ops.rope_forward(x, base=500.0, scaling="ntk", factor=3.0)
    plain, _ = ops.rope_forward(x, base=500.0 * 3.0 ** (8 / 6))
    np.testing.assert_allclose(scaled, plain, rtol=0, atol=1e-15)


def test_ntk_keeps_the_fastest_pair_and_interpolates_the_slowest():
    d, s = 16, 8.0
    positions, base = scaled_rope(np.array([1.0]), d, 10000.0, "ntk", s)
    plain = rope_angles(np.array([1.0]), d)[0]
    ntk = rope_angles(positions, d, base)[0]
    assert ntk[0] == plain[0]  # θ_0 = 1 whatever the base
    np.testing.assert_allclose(ntk[-1], plain[-1] / s, rtol=1e-12)  # the slowest pair: exactly / s
    assert np.all(np.diff(ntk / plain) < 0)  # stretched more and more towards the slow pairs


def test_interpolated_angles_at_the_long_length_stay_in_the_trained_range():
    d, L_train, s = 8, 128, 8
    trained = rope_angles(np.arange(L_train), d)
    positions, base = scaled_rope(np.arange(L_train * s, dtype=float), d, 10000.0, "interpolation", s)
    long = rope_angles(positions, d, base)
    # p / s < L_train: every angle below L_train θ_i, the edge of what training saw
    assert np.all(long.max(axis=0) < rope_angles(np.array([L_train]), d)[0])
    assert np.any(
        rope_angles(np.arange(L_train * s), d).max(axis=0) > 4 * trained.max(axis=0)
    )  # unscaled: far out


@pytest.mark.parametrize("scaling", ["interpolation", "ntk"])
def test_scores_still_depend_only_on_relative_position(scaling):
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((9, 6)), rng.standard_normal((9, 6))

    def scores(offset):
        pos = np.arange(9) + offset
        qr, _ = ops.rope_forward(q, pos, scaling=scaling, factor=2.5)
        kr, _ = ops.rope_forward(k, pos, scaling=scaling, factor=2.5)
        return qr @ kr.T

    np.testing.assert_allclose(scores(300), scores(0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scaling", ["interpolation", "ntk"])
def test_gradcheck_passes_and_rejects_a_backward_with_unscaled_angles(scaling):
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 6))
    kwargs = {"scaling": scaling, "factor": 3.0}
    report = check_op(ops.rope_forward, ops.rope_backward, {"x": x}, kwargs=kwargs)
    assert report.passed, str(report)

    def backward_with_unscaled_angles(d_out, cache):
        _, plain = ops.rope_forward(x)  # cos and sin of the unscaled angles
        return ops.rope_backward(d_out, plain)

    assert not check_op(ops.rope_forward, backward_with_unscaled_angles, {"x": x}, kwargs=kwargs).passed


def test_factor_one_changes_nothing_and_float32_stays_float32():
    x = np.random.default_rng(4).standard_normal((3, 10, 4)).astype(np.float32)
    plain, _ = ops.rope_forward(x)
    for scaling in ("interpolation", "ntk"):
        out, _ = ops.rope_forward(x, scaling=scaling, factor=1.0)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, plain)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scaling": "yarn", "factor": 2.0}, ValueError, "scaling: expected one of"),
        ({"scaling": "ntk", "factor": 0.0}, ValueError, "factor: expected a positive number"),
        ({"scaling": "ntk", "factor": "2"}, TypeError, "factor: expected a positive number"),
        ({"factor": 2.0}, ValueError, "factor: 2.0 has no effect without scaling"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.rope_forward(np.zeros((3, 4)), **kwargs)
