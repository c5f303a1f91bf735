"""Rotary position embeddings: a rotation whose scores depend only on relative position.

* q·k after RoPE depends only on n − m (shifting every position changes nothing, and the
  score equals q · R(n − m) k);
* attention with RoPE is unchanged when the whole sequence is shifted;
* the forward equals the complex-number form z·e^{ipθ}, keeps norms, is the identity at 0;
* the backward is the inverse rotation; finite differences accept it and reject the
  backward that rotates the wrong way;
* bad arguments raise errors that name the argument; float32 stays float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.gradcheck import check_op


def _scores(q, k, q_pos, k_pos, base=10000.0):
    q_rot, _ = ops.rope_forward(q, q_pos, base)
    k_rot, _ = ops.rope_forward(k, k_pos, base)
    return q_rot @ k_rot.swapaxes(-1, -2)


def test_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(0)
    L, d = 9, 8
    q, k = rng.standard_normal((2, L, d)), rng.standard_normal((2, L, d))
    pos = np.arange(L)
    reference = _scores(q, k, pos, pos)
    for shift in (1, 7, 1000, 123456.5):
        np.testing.assert_allclose(_scores(q, k, pos + shift, pos + shift), reference, rtol=1e-9, atol=1e-9)
    # And directly: (R(m) q)·(R(n) k) = q·(R(n − m) k) for every pair (m, n).
    for m in range(L):
        for n in range(L):
            k_rel, _ = ops.rope_forward(k[:, n : n + 1], np.array([n - m]))
            np.testing.assert_allclose(
                reference[:, m, n],
                (q[:, m : m + 1] @ k_rel.swapaxes(-1, -2))[:, 0, 0],
                rtol=1e-10,
                atol=1e-12,
            )
    # Without RoPE position does not enter at all; with it, the same q and k give scores
    # that change with the distance (so the check above is not vacuous).
    same_q = np.broadcast_to(q[:1, :1], (1, L, d))
    same_k = np.broadcast_to(k[:1, :1], (1, L, d))
    rotated = _scores(same_q, same_k, pos, pos)[0]
    assert np.ptp(np.diagonal(rotated, offset=2)) < 1e-12  # constant along each diagonal
    assert np.ptp(rotated[0]) > 1e-3  # but different for different distances


def test_attention_with_rope_is_shift_invariant():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 10, 6)) for _ in range(3))

    def attend(offset):
        pos = np.arange(10) + offset
        out, _ = ops.flash_attention_forward(
            ops.rope_forward(q, pos)[0], ops.rope_forward(k, pos)[0], v, causal=True, window=4, block_size=3
        )
        return out

    np.testing.assert_allclose(attend(500), attend(0), rtol=1e-9, atol=1e-9)


def test_matches_the_complex_number_form():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 6))
    positions = np.array([[0.0, 1.0, 2.5, 10.0, 11.0], [3.0, 4.0, 5.0, 6.0, 7.0]])[:, None, :]
    out, _ = ops.rope_forward(x, positions, base=500.0)
    theta = 500.0 ** (-np.arange(3) * 2 / 6)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * positions[..., None] * theta)
    np.testing.assert_allclose(out[..., 0::2], z.real, atol=1e-13)
    np.testing.assert_allclose(out[..., 1::2], z.imag, atol=1e-13)


def test_rotation_properties():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 7, 10))
    out, cache = ops.rope_forward(x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13)
    np.testing.assert_array_equal(out[:, 0], x[:, 0])  # position 0: angle 0
    assert not np.allclose(out[:, 1:], x[:, 1:])
    # The backward is the inverse rotation: applied to the output it gives x back.
    np.testing.assert_allclose(ops.rope_backward(out, cache), x, atol=1e-13)


def test_gradcheck_passes_and_rejects_the_wrong_rotation():
    x = np.random.default_rng(4).standard_normal((2, 5, 6))
    report = check_op(ops.rope_forward, ops.rope_backward, {"x": x})
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-6

    def backward_rotating_forward(d_out, cache):
        # R d_out instead of Rᵀ d_out: a sign error on sin, the easy mistake.
        return ops.rope_backward(d_out, cache._replace(sin=-cache.sin))

    assert not check_op(ops.rope_forward, backward_rotating_forward, {"x": x}).passed


def test_float32_in_float32_out():
    x = np.random.default_rng(5).standard_normal((3, 8, 4))
    out32, cache = ops.rope_forward(x.astype(np.float32), np.arange(8) + 5000)
    dx32 = ops.rope_backward(np.ones_like(out32), cache)
    out64, _ = ops.rope_forward(x, np.arange(8) + 5000)
    assert out32.dtype == np.float32 and dx32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=1e-5)


def test_bad_arguments():
    x = np.zeros((2, 5, 6))
    with pytest.raises(ValueError, match=r"x: expected an even last dimension .* \(2, 5, 7\)"):
        ops.rope_forward(np.zeros((2, 5, 7)))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
        ops.rope_forward(np.zeros((2, 5, 6), dtype=int))
    with pytest.raises(ValueError, match=r"positions: expected a shape that broadcasts to \(2, 5\)"):
        ops.rope_forward(x, np.arange(4))
    with pytest.raises(TypeError, match="positions: expected integer or float positions, got dtype bool"):
        ops.rope_forward(x, np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="base: expected a positive number, got 0.0"):
        ops.rope_forward(x, base=0.0)
    with pytest.raises(TypeError, match="base"):
        ops.rope_forward(x, base="10000")
    _, cache = ops.rope_forward(x)
    with pytest.raises(
        ValueError, match=r"d_out: expected shape \(2, 5, 6\) \(the forward output's\), got \(2, 5, 4\)"
    ):
        ops.rope_backward(np.zeros((2, 5, 4)), cache)
