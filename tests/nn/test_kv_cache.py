"""The KV cache: attention over cached keys equals the full forward, a decoder run step by step
equals the decoder over the whole prefix, reordering follows the rows, and eviction is exactly a
sparser causal mask."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import nn, ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.nn.kv_cache import KVCache, step_mask

B, T, Lm, D, H, F = 3, 7, 5, 8, 2, 12


@pytest.mark.parametrize("kind", ["self, causal", "cross, kv_dim 6, padding"])
def test_attend_over_projected_keys_equals_forward(kind: str) -> None:
    if kind == "self, causal":
        m = randomize(nn.MultiHeadAttention(D, H, rng=0), 1)
        query = randn(2, B, T, D)
        key_value, mask = query, ops.causal_mask(T)
        full = m(query, mask=mask)
    else:
        m = randomize(nn.MultiHeadAttention(D, H, kv_dim=6, rng=0), 1)
        query, key_value, mask = randn(2, B, T, D), randn(3, B, Lm, 6), ops.padding_mask([5, 2, 4], Lm)
        full = m(query, key_value, mask=mask)
    keys, values = m.keys_values(key_value)
    assert keys.shape == values.shape == (B, H, key_value.shape[1], D // H)
    np.testing.assert_allclose(m.attend(query, keys, values, mask), full, rtol=0, atol=1e-13)


def test_attend_refuses_keys_of_another_layout() -> None:
    m = nn.MultiHeadAttention(D, H, rng=0)
    keys, values = m.keys_values(randn(0, B, Lm, D))
    q = randn(1, B, 1, D)
    with pytest.raises(ValueError, match=r"keys: expected shape \(3, 2, Lk, 4\) .*got \(3, 5, 8\)"):
        m.attend(q, randn(2, B, Lm, D), values)
    with pytest.raises(ValueError, match=r"values: expected the shape of keys"):
        m.attend(q, keys, values[:, :, :2])
    with pytest.raises(TypeError, match=r"keys: expected dtype float64"):
        m.attend(q, keys.astype(np.float32), values)
    with pytest.raises(ValueError, match=r"mask: a 2-D mask must broadcast to \(1, 5\)"):
        m.attend(q, keys, values, ops.causal_mask(5))


def _decoder(norm_first: bool, dtype=np.float64) -> nn.TransformerDecoder:
    dec = nn.TransformerDecoder(D, H, F, 2, norm_first=norm_first, final_norm=norm_first, dtype=dtype, rng=4)
    randomize(dec, 5)
    if dtype != np.float64:
        for p in dec.parameters():
            p.data[...] = p.data.astype(dtype)
    return dec


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
@pytest.mark.parametrize("prefill", [1, 3])
def test_step_by_step_equals_the_whole_prefix(norm_first: bool, prefill: int) -> None:
    dec = _decoder(norm_first)
    x, memory = randn(6, B, T, D), randn(7, B, Lm, D)
    keep = ops.padding_mask([5, 2, 4], Lm)
    full = dec(x, memory, mask=ops.causal_mask(T), memory_mask=keep)
    cache = dec.new_cache(memory, keep, capacity=2)  # capacity 2: the buffers must grow on the way
    outs = [dec.step(x[:, :prefill], cache)]
    outs += [dec.step(x[:, t : t + 1], cache) for t in range(prefill, T)]
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=0, atol=1e-12)
    assert cache.length == cache.seen == T
    np.testing.assert_array_equal(cache.positions, np.arange(T))


def test_float32_step_equals_float32_forward() -> None:
    dec = nn.TransformerDecoder(D, H, F, 2, norm_first=True, final_norm=True, dtype=np.float32, rng=4)
    x, memory = randn(6, B, T, D).astype(np.float32), randn(7, B, Lm, D).astype(np.float32)
    full = dec(x, memory, mask=ops.causal_mask(T))
    cache = dec.new_cache(memory)
    steps = np.concatenate([dec.step(x[:, t : t + 1], cache) for t in range(T)], axis=1)
    assert steps.dtype == np.float32
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-5)


def test_the_cache_holds_what_the_layers_projected() -> None:
    dec = _decoder(False)
    x, memory = randn(8, B, 4, D), randn(9, B, Lm, D)
    cache = dec.new_cache(memory)
    dec.step(x, cache)
    layer0 = dec.layers[0]
    keys, values = cache.keys_values(0)
    expected_k, expected_v = layer0.self_attn.keys_values(x)  # post-LN: layer 0 projects x itself
    np.testing.assert_allclose(keys, expected_k, atol=1e-14)
    np.testing.assert_allclose(values, expected_v, atol=1e-14)
    cross_k, _ = cache.cross[1]
    np.testing.assert_allclose(cross_k, dec.layers[1].cross_attn.keys_values(memory)[0], atol=1e-14)
    # memory: 2 layers x (self 4 + cross Lm positions) x (keys + values) x B x D float64s
    assert cache.nbytes == 2 * 2 * (4 + Lm) * B * D * 8


def test_reorder_follows_the_rows() -> None:
    dec = _decoder(True)
    x, memory = randn(10, B, T, D), randn(11, B, Lm, D)
    keep = ops.padding_mask([5, 2, 4], Lm)
    cache = dec.new_cache(memory, keep)
    dec.step(x[:, :4], cache)
    rows = np.array([2, 2, 0, 1])  # a beam search keeps row 2 twice and reorders the rest
    cache.reorder(rows)
    out = dec.step(x[rows, 4:5], cache)
    full = dec(x[rows, :5], memory[rows], mask=ops.causal_mask(5), memory_mask=keep[rows])
    np.testing.assert_allclose(out, full[:, 4:], rtol=0, atol=1e-12)
    assert cache.batch == 4


def sinks_and_window(length: int, sinks: int = 2, window: int = 3):
    if length <= sinks + window:
        return None
    return np.r_[0:sinks, length - window : length]


def test_eviction_is_a_sparser_causal_mask() -> None:
    """Decoding with the sinks-and-window policy equals the full forward under the mask in which
    query t sees exactly the entries the cache kept before step t, and itself."""
    dec = _decoder(True)
    x, memory = randn(12, B, 10, D), randn(13, B, Lm, D)
    cache = dec.new_cache(memory, policy=sinks_and_window)
    mask = np.zeros((10, 10), dtype=bool)
    outs = []
    for t in range(10):
        mask[t, cache.positions] = True  # what is kept from before ...
        mask[t, t] = True  # ... and the query itself
        outs.append(dec.step(x[:, t : t + 1], cache))
    assert cache.positions.tolist() == [0, 1, 7, 8, 9] and cache.seen == 10 and cache.length == 5
    # query 9 saw the 5 entries kept after step 8 (2 sinks + a window of 3) and itself
    assert mask[9].nonzero()[0].tolist() == [0, 1, 6, 7, 8, 9]
    np.testing.assert_allclose(np.concatenate(outs, axis=1), dec(x, memory, mask=mask), rtol=0, atol=1e-12)
    # and it really differs from decoding without eviction
    assert np.abs(outs[-1][:, 0] - dec(x, memory, mask=ops.causal_mask(10))[:, -1]).max() > 1e-3


def test_the_docstring_example() -> None:
    assert sinks_and_window(7).tolist() == [0, 1, 4, 5, 6]
    assert sinks_and_window(5) is None


def test_step_mask() -> None:
    np.testing.assert_array_equal(step_mask(0, 3), ops.causal_mask(3))
    np.testing.assert_array_equal(step_mask(2, 2), ops.causal_mask(4)[2:])


def test_misuse_is_refused() -> None:
    dec = _decoder(False)
    memory = randn(14, B, Lm, D)
    cache = dec.new_cache(memory)
    k, v = dec.layers[0].self_attn.keys_values(randn(15, B, 2, D))
    cache.append(0, k, v)
    with pytest.raises(ValueError, match=r"layer: layer 0 already appended in this step"):
        cache.append(0, k, v)
    with pytest.raises(ValueError, match=r"keys: expected 2 new positions as the other layers, got 1"):
        cache.append(1, k[:, :, :1], v[:, :, :1])
    with pytest.raises(ValueError, match=r"commit: expected every layer to have appended"):
        cache.commit()
    with pytest.raises(ValueError, match=r"rows: cannot reorder in the middle of a step"):
        cache.reorder(np.array([0]))
    with pytest.raises(TypeError, match=r"cache: expected the KVCache that new_cache\(\) made"):
        dec.step(randn(16, B, 1, D), object())
    fresh = dec.new_cache(memory)
    with pytest.raises(ValueError, match=r"x: expected shape \(3, n >= 1, 8\)"):
        dec.step(randn(16, 2, 1, D), fresh)
    with pytest.raises(ValueError, match=r"rows: expected indices in \[0, 3\)"):
        fresh.reorder(np.array([0, 3]))
    with pytest.raises(ValueError, match=r"memory_mask: expected key padding shared by every query"):
        dec.new_cache(memory, np.ones((B, 2, Lm), dtype=bool))
    with pytest.raises(TypeError, match=r"policy: expected a callable"):
        dec.new_cache(memory, policy=3)
    bad = dec.new_cache(memory, policy=lambda n: np.array([1, 0]) if n > 1 else None)
    dec.step(randn(17, B, 1, D), bad)
    with pytest.raises(ValueError, match=r"policy: expected increasing indices in \[0, 2\), got \[1, 0\]"):
        dec.step(randn(18, B, 1, D), bad)
    with pytest.raises(ValueError, match=r"cross: expected one \(keys, values\) pair per decoder layer"):
        KVCache([])
    k, v = dec.layers[0].cross_attn.keys_values(memory)
    with pytest.raises(
        ValueError, match=r"cross: expected every layer's keys and values of shape \(3, 2, Lm, 4\)"
    ):
        KVCache([(k, v), (k[:2], v[:2])])
