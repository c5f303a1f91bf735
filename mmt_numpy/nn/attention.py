"""Multi-head attention (§4.1) and the article's own cross-attention (§4.2).

``MultiHeadAttention`` is what ``torch.nn.MultiheadAttention`` computes: project, split
into heads, scaled dot-product attention in every head at once, merge, project again.
Called with one sequence it is self-attention; with a second sequence (``key_value``) it
is cross-attention, e.g. text queries over image features.

Positions inside attention (``MultiHeadAttention(position=...)``, self-attention only):
RoPE rotates q and k, ALiBi adds a distance penalty to the scores, and either may run with a
causal sliding window plus attention sinks (StreamingLLM), with the positions counted as a
streaming cache counts them.  See :class:`PositionScheme` at the end of this file.

``ArticleCrossAttention`` is §4.2 taken literally, with its quirks: no value or output
projection and a built-in residual.  It is here so a reader can run the formula as
printed and compare it with the usual form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.masks import module_mask
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.ops.activations import SoftmaxCache, softmax_backward, softmax_forward
from mmt_numpy.ops.alibi import alibi_distance_bias
from mmt_numpy.ops.rope import ROPE_SCALINGS
from mmt_numpy.validate import module_input, positive_int


class MultiHeadAttentionCache(NamedTuple):
    """The caches of the four projections and of the attention; ``weights`` for plotting."""

    self_attention: bool  # key_value was None: the query served as keys and values too
    q: ops.LinearCache
    k: ops.LinearCache
    v: ops.LinearCache
    attn: ops.AttentionCache
    o: ops.LinearCache

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, Lq, Lk)``: softmax(QKᵀ/√d_h) of every head, 0 where masked."""
        return self.attn.weights


class ArticleCrossAttentionCache(NamedTuple):
    q: ops.LinearCache
    k: ops.LinearCache
    attn: ops.AttentionCache
    residual: ops.ResidualCache

    @property
    def weights(self) -> np.ndarray:
        """``(B, 1, Lx, Ly)``: the one head's weights."""
        return self.attn.weights


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """``(B, L, D)`` -> ``(B, H, L, D/H)``: head h takes features ``h·D/H … (h+1)·D/H − 1``."""
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, D // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """``(B, H, L, D/H)`` -> ``(B, L, D)``, the inverse of :func:`split_heads` (the Concat of §4.1)."""
    B, H, L, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, H * Dh)


def _xavier_uniform(gen: np.random.Generator, d_in: int, d_out: int, dtype: np.dtype) -> np.ndarray:
    """Glorot/Xavier uniform ``(d_in, d_out)``: bound √(6 / (d_in + d_out))."""
    bound = math.sqrt(6.0 / (d_in + d_out))
    return gen.uniform(-bound, bound, (d_in, d_out)).astype(dtype)


class MultiHeadAttention(Module):
    """Multi-head attention, self or cross.

    With ``H = num_heads`` and ``d_h = d_model / H``::

        Q = query W_q + b_q            (B, Lq, d_model)
        K = key_value W_k + b_k        (B, Lk, d_model)
        V = key_value W_v + b_v        (B, Lk, d_model)
        head_h = softmax(Q_h K_hᵀ / √d_h) V_h, all heads in one batched matmul (B, H, Lq, d_h)
        out = Concat(head_1 … head_H) W_o + b_o          (B, Lq, d_model)

    §4.1 writes the projections twice (``Q = X W^Q``, then ``head_i = Attention(Q W_i^Q, …)``);
    one projection per input is what implementations do, and a product of two matrices is
    just another matrix.

    Parameters (PyTorch stores every weight transposed and stacks the three input
    projections; :mod:`mmt_numpy.torch_bridge` writes the mapping out):
        W_q ``(d_model, d_model)``, W_k and W_v ``(kv_dim, d_model)``, W_o
        ``(d_model, d_model)``, Xavier-uniform as PyTorch; b_q, b_k, b_v, b_o ``(d_model,)``,
        zeros (absent with ``bias=False``).

    Args:
        d_model: width of the queries and of the output.
        num_heads: must divide ``d_model``.
        bias: whether to learn the four biases.
        kv_dim: width of ``key_value`` when it differs from ``d_model`` (PyTorch's
            ``kdim``/``vdim``), e.g. image features of width 768 attended by text of width 512.
        dtype, rng: parameter dtype (float64 or float32) and the initialisation's generator.
        position: None (positions, if any, were added to the inputs), ``"rope"``, ``"alibi"``,
            or a :class:`PositionScheme` (RoPE scaling, a sliding window with sinks).  Only
            for self-attention.  The attribute ``position`` may be replaced after training,
            e.g. to evaluate a RoPE model with NTK scaling.

    One fact worth seeing in the gradients: ``b_k`` always gets a zero gradient.  It adds
    ``q_i · b_k`` to every score of query row i, and a softmax ignores a shift shared by a
    whole row, so the key bias cannot change the output (PyTorch keeps it all the same).

    PyTorch's ``dropout=`` on the attention weights is not implemented: the module has no
    dropout, so it matches ``nn.MultiheadAttention(dropout=0.0)``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        bias: bool = True,
        *,
        kv_dim: int | None = None,
        dtype: object = np.float64,
        rng: RngLike = None,
        position: PositionScheme | str | None = None,
    ) -> None:
        self.position = as_position_scheme(position)
        self.d_model = positive_int("d_model", d_model)
        self.num_heads = positive_int("num_heads", num_heads)
        if self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of d_model={self.d_model} (each head gets "
                f"d_model/num_heads features), got {self.num_heads}"
            )
        self.kv_dim = self.d_model if kv_dim is None else positive_int("kv_dim", kv_dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        D, E = self.d_model, self.kv_dim
        if E == D:
            # PyTorch draws its three stacked input projections (3D, D) as one Xavier matrix, so each
            # projection gets the bound √(6 / 4D); we draw the same and split the columns.
            W_qkv = _xavier_uniform(gen, D, 3 * D, self.dtype)
            W_q, W_k, W_v = W_qkv[:, :D], W_qkv[:, D : 2 * D], W_qkv[:, 2 * D :]
        else:  # separate q/k/v_proj_weight in PyTorch, each its own Xavier matrix
            W_q, W_k, W_v = (_xavier_uniform(gen, n, D, self.dtype) for n in (D, E, E))
        self.W_q, self.W_k, self.W_v = Parameter(W_q), Parameter(W_k), Parameter(W_v)
        # PyTorch initialises out_proj as an nn.Linear: uniform in ±1/√d_model.
        self.W_o = Parameter(gen.uniform(-1 / math.sqrt(D), 1 / math.sqrt(D), (D, D)).astype(self.dtype))
        # Biases start at zero, as PyTorch's in_proj_bias and out_proj.bias.
        self.b_q = Parameter(np.zeros(D, dtype=self.dtype)) if bias else None
        self.b_k = Parameter(np.zeros(D, dtype=self.dtype)) if bias else None
        self.b_v = Parameter(np.zeros(D, dtype=self.dtype)) if bias else None
        self.b_o = Parameter(np.zeros(D, dtype=self.dtype)) if bias else None

    def _bias(self, p: Parameter | None) -> np.ndarray | None:
        return None if p is None else p.data

    def _project(self, name: str, x: np.ndarray) -> tuple[np.ndarray, ops.LinearCache]:
        """``x @ W_name + b_name`` for ``name`` in q, k, v, o: the one place a projection is applied,
        by :meth:`forward` and by the cached inference path (:meth:`keys_values`, :meth:`attend`)."""
        return ops.linear_forward(x, getattr(self, f"W_{name}").data, self._bias(getattr(self, f"b_{name}")))

    def forward(
        self, query: np.ndarray, key_value: np.ndarray | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, MultiHeadAttentionCache]:
        """Attend from ``query`` to ``key_value`` (or to ``query`` itself).

        Args:
            query: ``(B, Lq, d_model)``.
            key_value: ``(B, Lk, kv_dim)``, or None for self-attention (then Lk = Lq).  Lk may
                be 0 (no keys at all: the attention output is zeros, so the output is ``b_o``).
            mask: bool, True = may attend, by the module rule of :mod:`mmt_numpy.nn.masks`:
                ``(Lq, Lk)`` shared by the batch (``ops.causal_mask(Lq)``), ``(B, Lq, Lk)``
                one per batch row, or 4-D broadcastable to ``(B, H, Lq, Lk)``
                (``ops.padding_mask(lengths, Lk)``, ``(B, 1, 1, Lk)``).  A query row with
                every key masked gets a zero attention output, so its output row is ``b_o``
                (never NaN).

        Returns:
            ``(B, Lq, d_model)`` and the cache; ``cache.weights`` holds the attention weights
            ``(B, H, Lq, Lk)``.
        """
        owner = f"MultiHeadAttention(d_model={self.d_model})"
        module_input("query", query, self.d_model, self.dtype, owner, ndim=3)
        self_attention = key_value is None
        if self_attention:
            if self.kv_dim != self.d_model:
                raise ValueError(
                    f"key_value: required, since kv_dim={self.kv_dim} differs from "
                    f"d_model={self.d_model} (self-attention needs kv_dim == d_model)"
                )
            key_value = query
        elif self.position is not None:
            raise ValueError(
                f"key_value: position={self.position.kind!r} encodes positions within one sequence, "
                "so it is for self-attention only; got a key_value (cross-attention)"
            )
        else:
            module_input(
                "key_value",
                key_value,
                self.kv_dim,
                self.dtype,
                f"MultiHeadAttention(kv_dim={self.kv_dim})",
                ndim=3,
            )
            if key_value.shape[0] != query.shape[0]:
                raise ValueError(
                    f"key_value: expected batch size {query.shape[0]} (as query {query.shape}), "
                    f"got shape {key_value.shape}"
                )
        B, Lq, _ = query.shape
        Lk = key_value.shape[1]
        H = self.num_heads
        mask = module_mask("mask", mask, B, H, Lq, Lk)

        q, cache_q = self._project("q", query)
        k, cache_k = self._project("k", key_value)
        v, cache_v = self._project("v", key_value)
        attention = ops.attention_forward if self.position is None else self.position.attention_forward
        heads, cache_attn = attention(split_heads(q, H), split_heads(k, H), split_heads(v, H), mask)
        out, cache_o = self._project("o", merge_heads(heads))
        return out, MultiHeadAttentionCache(self_attention, cache_q, cache_k, cache_v, cache_attn, cache_o)

    def backward(
        self, d_out: np.ndarray, cache: MultiHeadAttentionCache
    ) -> tuple[np.ndarray] | tuple[np.ndarray, np.ndarray]:
        """Backward of :meth:`forward`; adds into every parameter's ``.grad``.

        Args:
            d_out: ``(B, Lq, d_model)``.
            cache: what that forward returned.

        Returns:
            self-attention: ``(d_query (B, Lq, d_model),)`` (the sum of its three uses, as
            query, key and value); cross-attention: ``(d_query (B, Lq, d_model),
            d_key_value (B, Lk, kv_dim))``.
        """
        expect_cache(cache, MultiHeadAttentionCache, "MultiHeadAttention")
        H = self.num_heads
        # out = merge_heads(heads) @ W_o + b_o
        d_merged, dW_o, db_o = ops.linear_backward(d_out, cache.o)
        # heads = attention(split(q), split(k), split(v)); split/merge are reshapes, so their
        # backward is the inverse reshape.
        backward = positional_attention_backward if self.position is not None else ops.attention_backward
        dq_h, dk_h, dv_h = backward(split_heads(d_merged, H), cache.attn)
        # q = query @ W_q + b_q,  k = key_value @ W_k + b_k,  v = key_value @ W_v + b_v
        d_query, dW_q, db_q = ops.linear_backward(merge_heads(dq_h), cache.q)
        d_kv_from_k, dW_k, db_k = ops.linear_backward(merge_heads(dk_h), cache.k)
        d_kv_from_v, dW_v, db_v = ops.linear_backward(merge_heads(dv_h), cache.v)
        for p, g in (
            (self.W_q, dW_q),
            (self.W_k, dW_k),
            (self.W_v, dW_v),
            (self.W_o, dW_o),
            (self.b_q, db_q),
            (self.b_k, db_k),
            (self.b_v, db_v),
            (self.b_o, db_o),
        ):
            if p is not None:
                p.grad += g
        # key_value feeds k and v: the two gradients add (in place: both arrays are ours).
        d_key_value = d_kv_from_k
        d_key_value += d_kv_from_v
        if cache.self_attention:
            # key_value was query: the three paths meet again.
            d_query += d_key_value
            return (d_query,)
        return d_query, d_key_value

    # ------------------------------------------------------------ inference over cached keys and values
    #
    # Generation with a KV cache (§6.2, nn.kv_cache) splits forward in two: the keys and values of
    # every position are projected once, when that position arrives, and kept; each new query
    # block then attends over everything kept.  The two methods below are that split, inference
    # only (no cache for a backward).  forward(query, kv, mask)[0] equals
    # attend(query, *keys_values(kv), mask): the same projections (_project), the same attention op.

    def keys_values(self, key_value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-head keys and values of ``key_value``, as a KV cache stores them.

        Args:
            key_value: ``(B, Lk, kv_dim)``.

        Returns:
            ``keys, values``, each ``(B, H, Lk, d_h)``: the projections ``key_value W_k + b_k`` and
            ``key_value W_v + b_v`` split into heads, before anything position-dependent is
            applied to them (so a cache can re-position what it keeps).
        """
        owner = f"MultiHeadAttention(kv_dim={self.kv_dim})"
        module_input("key_value", key_value, self.kv_dim, self.dtype, owner, ndim=3)
        k, _ = self._project("k", key_value)
        v, _ = self._project("v", key_value)
        return split_heads(k, self.num_heads), split_heads(v, self.num_heads)

    def attend(
        self,
        query: np.ndarray,
        keys: np.ndarray,
        values: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        positions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Inference: ``query`` attends over keys and values that were projected earlier.

        Args:
            query: ``(B, Lq, d_model)``, e.g. the one new position of a decoding step.
            keys, values: ``(B, H, Lk, d_h)`` from :meth:`keys_values` (possibly several calls'
                worth, concatenated along Lk, as a KV cache holds them).
            mask: bool, True = may attend, by the module rule of :mod:`mmt_numpy.nn.masks`
                (``(Lq, Lk)``, ``(B, Lq, Lk)`` or 4-D).
            positions: ``(query_positions (Lq,), key_positions (Lk,))`` integers, required when
                the module has a position scheme (cached keys are stored unrotated and carry
                no positions), ignored without one.  A KV cache supplies them
                (``cache.attend_positions(layer)``); :func:`cached_positional_attention`
                says what the scheme does with them.

        Returns:
            ``(B, Lq, d_model)``: what :meth:`forward` returns for the same query, keys and mask
            (with a scheme: what its forward gives rows at those positions).
        """
        owner = f"MultiHeadAttention(d_model={self.d_model})"
        if self.position is not None and positions is None:
            raise ValueError(
                f"positions: required, since this module has position={self.position!r} and cached "
                "keys carry no positions; pass (query_positions, key_positions), e.g. "
                "cache.attend_positions(layer)"
            )
        module_input("query", query, self.d_model, self.dtype, owner, ndim=3)
        B, Lq, _ = query.shape
        H, d_h = self.num_heads, self.d_model // self.num_heads
        for name, a in (("keys", keys), ("values", values)):
            if not isinstance(a, np.ndarray) or a.ndim != 4 or a.shape[:2] != (B, H) or a.shape[3] != d_h:
                raise ValueError(
                    f"{name}: expected shape ({B}, {H}, Lk, {d_h}) (batch, heads, keys, d_model/H), "
                    f"as keys_values returns, got {getattr(a, 'shape', type(a).__name__)}"
                )
            if a.dtype != self.dtype:
                raise TypeError(f"{name}: expected dtype {self.dtype} (the parameters'), got {a.dtype}")
        if keys.shape != values.shape:
            raise ValueError(f"values: expected the shape of keys {keys.shape}, got {values.shape}")
        mask = module_mask("mask", mask, B, H, Lq, keys.shape[2])
        q, _ = self._project("q", query)
        if self.position is None:
            heads, _ = ops.attention_forward(split_heads(q, H), keys, values, mask)
        else:
            query_positions, key_positions = _positions(positions, Lq, keys.shape[2])
            heads = cached_positional_attention(
                split_heads(q, H), keys, values, mask, self.position, query_positions, key_positions
            )
        out, _ = self._project("o", merge_heads(heads))
        return out

    def __repr__(self) -> str:
        kv = "" if self.kv_dim == self.d_model else f", kv_dim={self.kv_dim}"
        position = "" if self.position is None else f", position={self.position!r}"
        return f"MultiHeadAttention(d_model={self.d_model}, num_heads={self.num_heads}{kv}{position})"


class ArticleCrossAttention(Module):
    """Cross-attention exactly as §4.2 prints it (one head, no value/output projection)::

        Q = X W^Q          (B, Lx, d_k)
        K = Y W^K          (B, Ly, d_k)
        X' = X + softmax(Q Kᵀ / √d_k) Y          (B, Lx, d_model)

    The values are the raw features ``Y`` (V = Y), and the result is added to ``X``.  Both
    force ``Y`` to have the width of ``X``: text of width 512 cannot attend over image
    features of width 768 this way, which is why :class:`MultiHeadAttention` (with
    ``kv_dim``) projects the values and the output.  A ``y`` of another width is refused.

    Parameters:
        W_q ``(d_model, d_k)``, W_k ``(d_model, d_k)``, Xavier-uniform; no biases (the
        article has none).

    Args:
        d_model: the width of both X and Y.
        d_k: the width of queries and keys (default ``d_model``).
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self, d_model: int, d_k: int | None = None, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_k = self.d_model if d_k is None else positive_int("d_k", d_k)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.W_q = Parameter(_xavier_uniform(gen, self.d_model, self.d_k, self.dtype))
        self.W_k = Parameter(_xavier_uniform(gen, self.d_model, self.d_k, self.dtype))

    def forward(
        self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, ArticleCrossAttentionCache]:
        """``X' = X + Attention(X W^Q, Y W^K, Y)``.

        Args:
            x: ``(B, Lx, d_model)`` the modality being updated (the queries).
            y: ``(B, Ly, d_model)`` the other modality (keys and values).
            mask: bool, True = may attend, by the module rule of :mod:`mmt_numpy.nn.masks`
                (one head): ``(Lx, Ly)``, ``(B, Lx, Ly)`` or 4-D broadcastable to ``(B, 1, Lx, Ly)``.

        Returns:
            ``(B, Lx, d_model)`` and the cache; ``cache.weights`` is ``(B, 1, Lx, Ly)``.
        """
        owner = f"ArticleCrossAttention(d_model={self.d_model})"
        module_input("x", x, self.d_model, self.dtype, owner, ndim=3)
        if isinstance(y, np.ndarray) and y.ndim == 3 and y.shape[-1] != self.d_model:
            raise ValueError(
                f"y: expected last dimension {self.d_model} (as x): §4.2 uses V = Y and adds the "
                f"result to X, so Y must have X's width; got shape {y.shape}. Project y first, "
                "or use MultiHeadAttention(..., kv_dim=...)"
            )
        module_input("y", y, self.d_model, self.dtype, owner, ndim=3)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y: expected batch size {x.shape[0]} (as x {x.shape}), got shape {y.shape}")
        B, Lx, _ = x.shape
        mask = module_mask("mask", mask, B, 1, Lx, y.shape[1])
        q, cache_q = ops.linear_forward(x, self.W_q.data)
        k, cache_k = ops.linear_forward(y, self.W_k.data)
        # One head: (B, L, ·) -> (B, 1, L, ·), so masks and weights have the multi-head layout.
        attended, cache_attn = ops.attention_forward(q[:, None], k[:, None], y[:, None], mask)
        out, cache_res = ops.residual_forward(x, attended[:, 0])
        return out, ArticleCrossAttentionCache(cache_q, cache_k, cache_attn, cache_res)

    def backward(self, d_out: np.ndarray, cache: ArticleCrossAttentionCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, Lx, d_model)`` -> ``(dx (B, Lx, d_model), dy (B, Ly, d_model))``."""
        expect_cache(cache, ArticleCrossAttentionCache, "ArticleCrossAttention")
        cache_q, cache_k, cache_attn, cache_res = cache.q, cache.k, cache.attn, cache.residual
        # X' = X + attended  ->  X gets d_out directly (the residual path)
        dx_residual, d_attended = ops.residual_backward(d_out, cache_res)
        # attended = Attention(q, k, Y)  ->  dq, dk and dV = the value path into Y
        dq, dk, dy_value = ops.attention_backward(d_attended[:, None], cache_attn)
        # q = X W^Q,  k = Y W^K
        dx_query, dW_q, _ = ops.linear_backward(dq[:, 0], cache_q)
        dy_key, dW_k, _ = ops.linear_backward(dk[:, 0], cache_k)
        self.W_q.grad += dW_q
        self.W_k.grad += dW_k
        # X is used twice (residual, query); Y twice (key, value).
        return dx_residual + dx_query, dy_key + dy_value[:, 0]

    def __repr__(self) -> str:
        return f"ArticleCrossAttention(d_model={self.d_model}, d_k={self.d_k})"


# ----------------------------------------------------------------------------- position schemes

POSITION_KINDS = ("rope", "alibi", "none")


@dataclass(frozen=True)
class PositionScheme:
    """How :class:`MultiHeadAttention` puts positions into self-attention.

    ``kind``:
        ``"rope"``: rotate q and k by their positions (``ops.rope_forward``), optionally
        scaled for lengths beyond ``train_length`` (``scaling="interpolation"`` or
        ``"ntk"``, factor s = max(1, L / train_length), so at the trained length nothing
        changes); ``"alibi"``: add ``− m_h |i − j|`` to the scores (``ops.alibi_slopes``);
        ``"none"``: nothing in attention (absolute positions were added to the inputs), but a
        window and sinks may still apply.
    ``window``, ``sinks``: query i sees only keys i − window < j <= i and the first
        ``sinks`` keys (causal; StreamingLLM's cache of sinks + a sliding window, over a
        whole sequence at once).  Positions are counted *inside the cache*, as StreamingLLM
        does: once tokens have been evicted (i >= sinks + window), the cache holds the
        sinks at positions 0 … sinks − 1 and the window right after them, so query i sits
        at position sinks + window − 1 and sink j at position j; window keys keep their
        true distance i − j.  RoPE rotates the query a second time (at
        ``min(i, sinks + window − 1)``) for its scores against the sinks; ALiBi uses the
        same cache distance.  With ``"none"`` the absolute positions cannot be re-counted.
    """

    kind: str = "rope"
    rope_base: float = 10000.0
    scaling: str | None = None
    train_length: int | None = None
    window: int | None = None
    sinks: int = 0

    def __post_init__(self) -> None:
        if self.kind not in POSITION_KINDS:
            raise ValueError(f"position: expected one of {POSITION_KINDS}, got kind={self.kind!r}")
        if self.scaling not in ROPE_SCALINGS:
            raise ValueError(f"scaling: expected one of {ROPE_SCALINGS}, got {self.scaling!r}")
        if self.scaling is not None:
            if self.kind != "rope":
                raise ValueError(f"scaling: {self.scaling!r} scales RoPE, but kind={self.kind!r}")
            if self.train_length is None:
                raise ValueError("train_length: required with scaling (the factor is L / train_length)")
        if self.train_length is not None:
            positive_int("train_length", self.train_length)
        if self.window is not None:
            positive_int("window", self.window)
        if isinstance(self.sinks, bool) or not isinstance(self.sinks, (int, np.integer)) or self.sinks < 0:
            raise ValueError(f"sinks: expected an integer >= 0, got {self.sinks!r}")
        if self.sinks and self.window is None:
            raise ValueError(
                f"sinks: needs a window (without one every key is visible), got sinks={self.sinks}"
            )

    def attention_forward(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, PositionalAttentionCache]:
        """Attention of heads ``q, k, v (B, H, L, d_h)`` with this scheme's positions 0 … L − 1."""
        return positional_attention_forward(q, k, v, mask, self)


def as_position_scheme(position: object) -> PositionScheme | None:
    if position is None or isinstance(position, PositionScheme):
        return position
    if isinstance(position, str):
        return PositionScheme(kind=position)
    raise TypeError(
        f"position: expected None, 'rope', 'alibi' or a PositionScheme, got {type(position).__name__}"
    )


class PositionalAttentionCache(NamedTuple):
    scheme: PositionScheme
    attn: ops.AttentionCache  # q and k here are the rotated ones (RoPE)
    rope_q: ops.RopeCache | None
    rope_k: ops.RopeCache | None
    rope_sink_q: ops.RopeCache | None  # the queries rotated at their cache position, for the sinks
    sink_q: np.ndarray | None  # (B, H, L, d_h) those rotated queries

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, L, L)`` attention weights, 0 where masked."""
        return self.attn.weights


def _cache_query_position(L: int, scheme: PositionScheme) -> np.ndarray:
    """Where query i sits in a sinks + window cache: i until tokens are evicted, then sinks + window − 1."""
    i = np.arange(L)
    return np.minimum(i, scheme.sinks + scheme.window - 1) if scheme.sinks else i


def positional_attention_forward(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, scheme: PositionScheme
) -> tuple[np.ndarray, PositionalAttentionCache]:
    """Self-attention of heads ``q, k, v (B, H, L, d_h)`` with the positions of ``scheme``.

    ``mask`` broadcastable to ``(B, H, L, L)`` (True = may attend) is combined with the
    scheme's window.  Returns ``(B, H, L, d_h)`` and the cache.
    """
    B, H, L, d_h = q.shape
    i = np.arange(L)
    s = scheme.sinks
    if scheme.window is not None:
        window_mask = ops.flash_attention_mask(L, L, causal=True, window=scheme.window, sinks=s)
        mask = window_mask if mask is None else mask & window_mask
    rope_q = rope_k = rope_sink_q = sink_q = None
    bias = None
    if scheme.kind == "rope":
        factor = max(1.0, L / scheme.train_length) if scheme.scaling else 1.0
        rope = {"base": scheme.rope_base, "scaling": scheme.scaling, "factor": factor}
        if s:  # sink_q = R(cache position of i) q, for the scores against the sinks
            sink_q, rope_sink_q = ops.rope_forward(q, _cache_query_position(L, scheme), **rope)
        q, rope_q = ops.rope_forward(q, i, **rope)  # q_r = R(i) q
        k, rope_k = ops.rope_forward(k, i, **rope)  # k_r = R(j) k
    elif scheme.kind == "alibi":
        distance = np.abs(i[:, None] - i[None, :]).astype(q.dtype)  # (L, L) |i − j|
        if s:  # the sinks as seen from the cache: query at its cache position, sink j at j
            distance[:, :s] = _cache_query_position(L, scheme)[:, None] - i[None, :s]
        bias = -ops.alibi_slopes(H).astype(q.dtype)[:, None, None] * distance  # (H, L, L)
    if sink_q is None:
        out, attn = ops.attention_forward(q, k, v, mask, bias=bias)
    else:
        scale = 1.0 / math.sqrt(d_h)
        scores = (q * scale) @ k.swapaxes(-1, -2)  # q_r · k_r: true distances i − j
        scores[..., :s] = (sink_q * scale) @ k[..., :s, :].swapaxes(-1, -2)  # the sinks at cache distance
        weights, _ = softmax_forward(scores, mask, out=scores)
        out = weights @ v
        attn = ops.AttentionCache(q, k, v, weights, scale)
    return out, PositionalAttentionCache(scheme, attn, rope_q, rope_k, rope_sink_q, sink_q)


def positional_attention_backward(
    d_out: np.ndarray, cache: PositionalAttentionCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``d_out (B, H, L, d_h)`` -> ``(dq, dk, dv)``, each ``(B, H, L, d_h)``."""
    expect_cache(cache, PositionalAttentionCache, "positional attention")
    s = cache.scheme.sinks
    if cache.sink_q is None:
        dq, dk, dv = ops.attention_backward(d_out, cache.attn)
    else:
        q, k, v, weights, scale = cache.attn
        # out = weights @ v
        d_weights = d_out @ v.swapaxes(-1, -2)
        dv = weights.swapaxes(-1, -2) @ d_out
        # weights = softmax(scores)
        d_scores = softmax_backward(d_weights, SoftmaxCache(weights), out=d_weights)
        # scores[..., :s] = (sink_q · scale) k_rᵀ[:s]: those columns go to sink_q, not to q_r
        d_sink = d_scores[..., :s].copy()
        d_scores[..., :s] = 0.0
        # scores = (q_r · scale) k_rᵀ elsewhere
        dq = (d_scores @ k) * scale
        dk = (d_scores.swapaxes(-1, -2) @ q) * scale
        dk[..., :s, :] += (d_sink.swapaxes(-1, -2) @ cache.sink_q) * scale
        d_sink_q = (d_sink @ k[..., :s, :]) * scale
    if cache.rope_q is not None:
        # q_r = R(i) q, k_r = R(j) k (and sink_q = R(cache position) q): rotate the gradients back
        dq = ops.rope_backward(dq, cache.rope_q)
        dk = ops.rope_backward(dk, cache.rope_k)
        if cache.sink_q is not None:
            dq += ops.rope_backward(d_sink_q, cache.rope_sink_q)
    return dq, dk, dv


# ----------------------------------------------------------------------- positions over a KV cache


def _positions(positions: object, Lq: int, Lk: int) -> tuple[np.ndarray, np.ndarray]:
    """Check ``positions = (query_positions (Lq,), key_positions (Lk,))``, non-negative integers."""
    if not isinstance(positions, tuple) or len(positions) != 2:
        raise TypeError(
            f"positions: expected a pair (query_positions, key_positions), got {type(positions).__name__}"
        )
    checked = []
    for name, p, n in (("query_positions", positions[0], Lq), ("key_positions", positions[1], Lk)):
        p = np.asarray(p)
        if not np.issubdtype(p.dtype, np.integer) or p.shape != (n,):
            raise ValueError(
                f"positions: expected {name} of shape ({n},) and integer dtype, got {p.dtype} {p.shape}"
            )
        if n and p.min() < 0:
            raise ValueError(f"positions: expected {name} >= 0, got {p.min()}")
        checked.append(p.astype(np.int64))
    return checked[0], checked[1]


def cached_positional_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    scheme: PositionScheme,
    query_positions: np.ndarray,
    key_positions: np.ndarray,
) -> np.ndarray:
    """Inference attention of heads ``q (B, H, Lq, d_h)`` over unrotated cached ``k, v (B, H, Lk, d_h)``.

    Dense attention with ``scheme``'s positions applied at the given ones, p_i for query i and
    p_j for key j (a streaming cache passes its slots, :class:`~mmt_numpy.nn.kv_cache.StreamingKVCache`):

    * RoPE: ``score_ij = (R(p_i) q_i) · (R(p_j) k_j) / √d_h``, with the scheme's scaling and
      factor s = max(1, (max p + 1) / train_length), as its forward computes s from L;
    * ALiBi: ``score_ij = q_i · k_j / √d_h − m_h |p_i − p_j|``;
    * a window (and sinks): key j is visible iff ``0 <= p_i − p_j < window`` or ``p_j < sinks``,
      combined with ``mask``.

    Over a whole sequence with p = 0 … L − 1 this is what :func:`positional_attention_forward`
    gives while nothing has left the window.  Returns ``(B, H, Lq, d_h)``.
    """
    if scheme.window is not None:
        distance = query_positions[:, None] - key_positions[None, :]  # (Lq, Lk)
        visible = (distance >= 0) & ((distance < scheme.window) | (key_positions[None, :] < scheme.sinks))
        mask = visible if mask is None else mask & visible
    bias = None
    if scheme.kind == "rope":
        length = int(max(query_positions.max(initial=0), key_positions.max(initial=0))) + 1
        factor = max(1.0, length / scheme.train_length) if scheme.scaling else 1.0
        rope = {"base": scheme.rope_base, "scaling": scheme.scaling, "factor": factor}
        q, _ = ops.rope_forward(q, query_positions, **rope)  # R(p_i) q_i
        k, _ = ops.rope_forward(k, key_positions, **rope)  # R(p_j) k_j: the cache keeps k unrotated
    elif scheme.kind == "alibi":
        slopes = ops.alibi_slopes(q.shape[1])
        bias = alibi_distance_bias(slopes, query_positions, key_positions, q.dtype)  # (H, Lq, Lk)
    out, _ = ops.attention_forward(q, k, v, mask, bias=bias)
    return out
