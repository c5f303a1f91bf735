"""Positions inside MultiHeadAttention: RoPE (plain and scaled), ALiBi, and a sliding window
with attention sinks whose positions are counted inside the cache, as StreamingLLM does.

* each scheme equals the ops composed by hand;
* the sinks + window scheme: every query's output equals attention over exactly the cache's
  contents (sinks, then the window), with the positions the cache gives them;
* finite differences accept every scheme's backward (queries and all parameters) and reject
  one that sends the sink scores' gradient through the wrong rotation;
* bad schemes raise errors that name the argument; cross-attention refuses a scheme.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import nn, ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import attention as attention_module
from mmt_numpy.nn.attention import PositionScheme, positional_attention_forward


def _heads(seed, B=2, H=2, L=11, d=4):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((B, H, L, d)) for _ in range(3))


def test_rope_and_alibi_equal_the_ops_composed_by_hand():
    q, k, v = _heads(0)
    causal = ops.causal_mask(11)
    out, _ = positional_attention_forward(q, k, v, causal, PositionScheme("rope", rope_base=500.0))
    rotated = [ops.rope_forward(x, base=500.0)[0] for x in (q, k)]
    np.testing.assert_allclose(out, ops.attention_forward(*rotated, v, causal)[0], atol=1e-13)
    out, _ = positional_attention_forward(q, k, v, causal, PositionScheme("alibi"))
    bias = ops.alibi_bias(11, 11, ops.alibi_slopes(2))
    np.testing.assert_allclose(out, ops.attention_forward(q, k, v, causal, bias=bias)[0], atol=1e-13)


def test_rope_scaling_applies_only_beyond_the_trained_length():
    q, k, v = _heads(1, L=12)
    for scaling in ("interpolation", "ntk"):
        scheme = PositionScheme("rope", scaling=scaling, train_length=4)
        out, _ = positional_attention_forward(q, k, v, None, scheme)
        rotated = [ops.rope_forward(x, scaling=scaling, factor=3.0)[0] for x in (q, k)]  # 12 / 4
        np.testing.assert_allclose(out, ops.attention_forward(*rotated, v)[0], atol=1e-13)
        at_trained, _ = positional_attention_forward(
            q, k, v, None, PositionScheme("rope", scaling=scaling, train_length=12)
        )
        plain, _ = positional_attention_forward(q, k, v, None, PositionScheme("rope"))
        np.testing.assert_array_equal(at_trained, plain)


@pytest.mark.parametrize("kind", ["rope", "alibi", "none"])
@pytest.mark.parametrize(("sinks", "window"), [(2, 3), (1, 1), (0, 4), (3, 20)])
def test_sinks_and_window_equal_attention_over_the_cache_contents(kind, sinks, window):
    L, H = 13, 2
    q, k, v = _heads(2, L=L, H=H)
    out, cache = positional_attention_forward(q, k, v, None, PositionScheme(kind, window=window, sinks=sinks))
    for i in range(L):
        # The cache after token i: every token while it fits, then the sinks and the last `window`.
        if i + 1 <= sinks + window:
            kept = np.arange(i + 1)
        else:
            kept = np.concatenate([np.arange(sinks), np.arange(i - window + 1, i + 1)])
        positions = np.arange(len(kept)) if kind != "none" else kept  # counted inside the cache
        query_position = positions[-1]
        qi, kc, vc = q[:, :, i : i + 1], k[:, :, kept], v[:, :, kept]
        bias = None
        if kind == "rope":
            qi = ops.rope_forward(qi, np.array([query_position]))[0]
            kc = ops.rope_forward(kc, positions)[0]
        elif kind == "alibi":
            bias = -ops.alibi_slopes(H)[:, None, None] * (query_position - positions)[None, None, :]
        expected, _ = ops.attention_forward(qi, kc, vc, bias=bias)
        np.testing.assert_allclose(out[:, :, i : i + 1], expected, rtol=0, atol=1e-12, err_msg=f"row {i}")
    assert cache.weights.shape == (2, H, L, L)


SCHEMES = {
    "rope": PositionScheme("rope"),
    "rope + NTK": PositionScheme("rope", scaling="ntk", train_length=3),
    "rope + interpolation": PositionScheme("rope", scaling="interpolation", train_length=3),
    "alibi": PositionScheme("alibi"),
    "rope, window 2 + 2 sinks": PositionScheme("rope", window=2, sinks=2),
    "alibi, window 2 + 1 sink": PositionScheme("alibi", window=2, sinks=1),
    "none, window 3": PositionScheme("none", window=3),
}


@pytest.mark.parametrize("name", list(SCHEMES))
def test_gradcheck_every_scheme(name):
    mha = randomize(nn.MultiHeadAttention(8, 2, position=SCHEMES[name], rng=0), 1)  # d_h = 4
    report = check_module(mha, {"query": randn(2, 2, 6, 8)}, kwargs={"mask": ops.causal_mask(6)})
    assert report.passed, str(report)


def test_gradcheck_rejects_sink_gradients_sent_through_the_ordinary_rotation(monkeypatch):
    mha = randomize(nn.MultiHeadAttention(8, 2, position=SCHEMES["rope, window 2 + 2 sinks"], rng=0), 1)
    real = attention_module.positional_attention_backward

    def broken(d_out, cache):  # as if the sink scores came from q_r like all the others
        dq, dk, dv = real(d_out, cache._replace(sink_q=None))
        return dq, dk, dv

    monkeypatch.setattr(attention_module, "positional_attention_backward", broken)
    report = check_module(mha, {"query": randn(2, 2, 6, 8)})
    assert not report.passed


def test_module_forward_and_repr():
    mha = nn.MultiHeadAttention(8, 4, position="alibi", rng=0)
    x = randn(3, 2, 5, 8)
    out, cache = mha.forward(x, mask=ops.causal_mask(5))
    assert out.shape == (2, 5, 8) and cache.weights.shape == (2, 4, 5, 5)
    assert "position=PositionScheme(kind='alibi'" in repr(mha)
    mha.position = PositionScheme("alibi", window=2, sinks=1)  # re-configured for evaluation
    assert np.all(mha.forward(x)[1].weights[:, :, 4, 1:3] == 0)  # outside the window, not a sink
    float32 = nn.MultiHeadAttention(8, 4, position="rope", dtype=np.float32, rng=0)
    assert float32(x.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "learned"}, ValueError, "position: expected one of"),
        ({"window": 0}, ValueError, "window: expected a positive integer"),
        ({"window": 3, "sinks": -1}, ValueError, "sinks: expected an integer >= 0"),
        ({"sinks": 2}, ValueError, "sinks: needs a window"),
        ({"scaling": "ntk"}, ValueError, "train_length: required with scaling"),
        ({"kind": "alibi", "scaling": "ntk", "train_length": 4}, ValueError, "scaling: 'ntk' scales RoPE"),
        ({"scaling": "yarn", "train_length": 4}, ValueError, "scaling: expected one of"),
        ({"train_length": 0}, ValueError, "train_length: expected a positive integer"),
    ],
)
def test_bad_schemes(kwargs, error, match):
    with pytest.raises(error, match=match):
        PositionScheme(**kwargs)


def test_cross_attention_refuses_a_scheme_and_bad_position_types():
    mha = nn.MultiHeadAttention(4, 2, position="rope", rng=0)
    with pytest.raises(ValueError, match="key_value: position='rope' encodes positions within one sequence"):
        mha.forward(randn(0, 1, 3, 4), randn(1, 1, 5, 4))
    with pytest.raises(TypeError, match="position: expected None, 'rope', 'alibi' or a PositionScheme"):
        nn.MultiHeadAttention(4, 2, position=3)
