"""The streaming cache (attention sinks + a sliding window, positions counted inside the cache):
its attention equals dense attention over what it holds at its slot positions, a stream read
token by token equals the position scheme's forward over the whole prefix, and its memory is flat."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy import nn, ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.nn.attention import split_heads
from mmt_numpy.nn.kv_cache import KVCache, SinksAndWindow, StreamingKVCache

B, D, H, V = 2, 8, 2, 11


def _rotation(p: int, d: int, base: float = 10000.0) -> np.ndarray:
    """The RoPE matrix R(p) ``(d, d)`` written out from its formula: 2 x 2 blocks turning pair i by p θ_i."""
    R = np.zeros((d, d))
    for i in range(d // 2):
        angle = p * base ** (-2 * i / d)
        c, s = math.cos(angle), math.sin(angle)
        R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
    return R


def _dense_over_contents(m: nn.MultiHeadAttention, x: np.ndarray, keys: np.ndarray, values: np.ndarray):
    """The new query ``x (B, 1, D)`` attends over cached ``keys, values (B, H, n, d_h)`` at slots 0 … n − 1,
    the query in the last slot, computed without the library's rope/alibi/attention code."""
    n, d_h = keys.shape[2], D // H
    q = split_heads(x @ m.W_q.data + m.b_q.data, H)[:, :, 0]  # (B, H, d_h)
    if m.position.kind == "rope":
        q = q @ _rotation(n - 1, d_h).T
        keys = np.stack([keys[:, :, j] @ _rotation(j, d_h).T for j in range(n)], axis=2)
    scores = np.einsum("bhd,bhjd->bhj", q, keys) / math.sqrt(d_h)
    if m.position.kind == "alibi":
        slopes = np.array([2.0 ** (-8 * (h + 1) / H) for h in range(H)])  # the paper's geometric slopes
        scores = scores - slopes[None, :, None] * (n - 1 - np.arange(n))
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhj,bhjd->bhd", weights, values)  # (B, H, d_h)
    return heads.reshape(B, 1, D) @ m.W_o.data + m.b_o.data, weights


@pytest.mark.parametrize("kind", ["rope", "alibi"])
@pytest.mark.parametrize(("sinks", "window"), [(2, 3), (0, 4), (1, 1)])
def test_attend_equals_dense_attention_over_the_cache_contents(kind: str, sinks: int, window: int) -> None:
    m = randomize(nn.MultiHeadAttention(D, H, rng=0, position=kind), 1)
    cache = StreamingKVCache.for_layers(1, B, H, D // H, sinks=sinks, window=window)
    tokens = randn(2, B, 12, D)
    for t in range(tokens.shape[1]):
        x = tokens[:, t : t + 1]
        out = cache.attend(0, m, x)
        keys, values = cache.keys_values(0)  # what the query just attended over, itself included
        assert keys.shape[2] == min(t + 1, sinks + window)
        expected, _ = _dense_over_contents(m, x, keys, values)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
        cache.commit()
    # the cache holds the sinks and the last window − 1 tokens, at their original positions …
    kept = list(range(sinks)) + list(range(12 - (window - 1), 12))
    assert cache.positions.tolist() == kept and cache.seen == 12
    # … but counts them by slot: the next query sits right after them
    query_positions, key_positions = (p.tolist() for p in cache.attend_positions(0))
    assert (query_positions, key_positions) == ([], list(range(len(kept))))


def _reader(position: str) -> nn.LongTextReader:
    return randomize(
        nn.LongTextReader(V, 3, position=position, d_model=D, num_heads=H, num_layers=2, rng=3), 4
    )


@pytest.mark.parametrize("position", ["rope", "alibi", "sinusoidal"])
@pytest.mark.parametrize(("sinks", "window"), [(2, 3), (0, 4), (None, None)])
def test_a_stream_equals_the_scheme_over_the_whole_prefix(position: str, sinks, window) -> None:
    """Token by token through the cache == forward on ids[:, :t+1] with PositionScheme(window, sinks)."""
    reader = _reader(position)
    ids = np.random.default_rng(5).integers(0, V, (B, 14))
    cache = reader.new_cache(B, sinks=sinks, window=window)
    streamed = [reader.step(ids[:, t : t + 1], cache) for t in range(ids.shape[1])]
    if window is not None:
        kind = "none" if position == "sinusoidal" else position
        reader.set_position(nn.PositionScheme(kind=kind, window=window, sinks=sinks))
    for t, logits in enumerate(streamed):
        np.testing.assert_allclose(logits, reader(ids[:, : t + 1]), rtol=0, atol=1e-12)


def test_a_prefill_block_then_tokens_equals_the_prefix() -> None:
    """A block of new tokens per step (a prompt) gives the same as one at a time, while it fits."""
    reader = _reader("rope")
    ids = np.random.default_rng(6).integers(0, V, (B, 9))
    cache = reader.new_cache(B, sinks=2, window=7)
    np.testing.assert_allclose(reader.step(ids[:, :5], cache), reader(ids[:, :5]), rtol=0, atol=1e-12)
    for t in range(5, 9):
        got = reader.step(ids[:, t : t + 1], cache)
        np.testing.assert_allclose(got, reader(ids[:, : t + 1]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scaling", ["interpolation", "ntk"])
def test_scaled_rope_over_a_cache_equals_the_last_row_of_forward(scaling: str) -> None:
    """The factor s = max(1, L / train_length) comes from the positions: the cached keys of one
    layer are rotated with the factor of the current length, as forward over the prefix does.
    (Across layers a length-dependent factor changes earlier rows too, which no cache can redo.)"""
    scheme = nn.PositionScheme(kind="rope", scaling=scaling, train_length=3)
    m = randomize(nn.MultiHeadAttention(D, H, rng=0, position=scheme), 1)
    x = randn(3, B, 9, D)
    cache = KVCache.for_layers(1, B, H, D // H)
    for t in range(9):
        out = cache.attend(0, m, x[:, t : t + 1])
        cache.commit()
        full = m(x[:, : t + 1], mask=ops.causal_mask(t + 1))
        np.testing.assert_allclose(out[:, 0], full[:, -1], rtol=0, atol=1e-12)


def test_streaming_past_the_trained_length_keeps_the_memory_flat() -> None:
    reader = _reader("alibi")
    sinks, window = 4, 16
    cache = reader.new_cache(1, sinks=sinks, window=window)
    ids = np.random.default_rng(7).integers(0, V, (1, 600))
    held, allocated = [], []
    for t in range(ids.shape[1]):
        logits = reader.step(ids[:, t : t + 1], cache)
        held.append(cache.nbytes)
        allocated.append(cache.allocated_bytes)
    assert np.isfinite(logits).all() and cache.seen == 600
    per_entry = 2 * 2 * 1 * D * 8  # keys and values, 2 layers, batch 1, d_model float64 numbers
    assert cache.length == sinks + window - 1
    assert max(held) == held[-1] == per_entry * (sinks + window - 1)  # flat once the window is full
    assert set(allocated) == {per_entry * (sinks + window)}  # never grown: room for one step's token
    assert cache.positions[:sinks].tolist() == list(range(sinks))  # the sinks stay


def test_an_evicting_plain_cache_uses_the_original_positions() -> None:
    """A KVCache with another policy positions its entries where they stood in the text."""
    cache = KVCache.for_layers(1, 1, H, D // H, policy=SinksAndWindow(1, 2))
    for _ in range(4):
        cache.append(0, *(randn(0, 1, H, 1, D // H),) * 2)
        cache.commit()
    cache.append(0, *(randn(0, 1, H, 1, D // H),) * 2)
    query_positions, key_positions = cache.attend_positions(0)
    assert query_positions.tolist() == [4] and key_positions.tolist() == [0, 3, 4]


@pytest.mark.parametrize(
    ("sinks", "window", "message"),
    [
        (-1, 4, r"sinks: expected an integer >= 0 .*got -1"),
        (2, 0, r"window: expected an integer >= 1 .*got 0"),
        (2, 2.5, r"window: expected an integer >= 1 .*got 2.5"),
        (True, 4, r"sinks: expected an integer >= 0 .*got True"),
    ],
)
def test_clear_errors_for_sinks_and_window(sinks, window, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamingKVCache.for_layers(2, B, H, D // H, sinks=sinks, window=window)
    with pytest.raises(ValueError, match=message):
        _reader("rope").new_cache(B, sinks=sinks, window=window)


def test_attend_with_a_scheme_needs_positions() -> None:
    m = nn.MultiHeadAttention(D, H, rng=0, position="rope")
    keys, values = m.keys_values(randn(0, B, 3, D))
    q = randn(1, B, 1, D)
    with pytest.raises(ValueError, match=r"positions: required, since this module has position="):
        m.attend(q, keys, values)
    with pytest.raises(ValueError, match=r"positions: expected key_positions of shape \(3,\)"):
        m.attend(q, keys, values, positions=(np.array([2]), np.arange(4)))
    with pytest.raises(TypeError, match=r"positions: expected a pair"):
        m.attend(q, keys, values, positions=np.arange(3))
    with pytest.raises(ValueError, match=r"sinks: needs a window"):
        _reader("rope").new_cache(B, sinks=2)
    reader = nn.LongTextReader(V, 3, position="sinusoidal", d_model=D, num_heads=H, max_len=4, rng=0)
    cache = reader.new_cache(1, sinks=1, window=2)
    reader.step(np.zeros((1, 4), dtype=int), cache)
    with pytest.raises(ValueError, match=r"ids: a sinusoidal reader covers 4 positions, this step reaches 5"):
        reader.step(np.zeros((1, 1), dtype=int), cache)
    assert "StreamingKVCache(" in repr(cache) and "sinks=1, window=2" in repr(cache)


@pytest.mark.parametrize("kind", ["rope", "alibi"])
def test_a_decoder_generating_through_the_streaming_cache_equals_its_scheme(kind: str) -> None:
    """The captioning decoder with RoPE/ALiBi self-attention, step by step over a StreamingKVCache,
    equals its forward under the causal mask with PositionScheme(kind, window, sinks)."""
    dec = randomize(nn.TransformerDecoder(D, H, 12, 2, norm_first=True, final_norm=True, rng=4), 5)
    for layer in dec.layers:
        layer.self_attn.position = nn.PositionScheme(kind=kind)
    x, memory = randn(8, B, 11, D), randn(9, B, 5, D)
    cache = dec.new_cache(memory, sinks=2, window=3)
    stepwise = np.concatenate([dec.step(x[:, t : t + 1], cache) for t in range(11)], axis=1)
    for layer in dec.layers:
        layer.self_attn.position = nn.PositionScheme(kind=kind, window=3, sinks=2)
    full = dec(x, memory, mask=ops.causal_mask(11))
    np.testing.assert_allclose(stepwise, full, rtol=0, atol=1e-12)
    assert cache.length == 4 and isinstance(cache, StreamingKVCache)
    with pytest.raises(ValueError, match=r"policy: a streaming cache"):
        dec.new_cache(memory, policy=SinksAndWindow(1, 2), window=3)
