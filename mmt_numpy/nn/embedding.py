"""Embeddings: token lookup, positions and modality types (the input embedding of §3.1, step 1).

Self-attention treats its input as a *set*: permute the positions and the outputs permute
with them.  Order therefore has to be written into the vectors themselves, and so does
the modality when text and image tokens share one sequence (§5; the article's code adds
neither, and its closing note lists the positional encoding as missing).

* :class:`Embedding` looks rows up in a learned table (token ids -> vectors).
* :class:`SinusoidalPositionalEncoding` adds the fixed sin/cos code of Vaswani et al.
* :class:`LearnedPositionalEmbedding` adds a learned vector per position (BERT, ViT).
* :class:`GridPositionalEmbedding` adds a learned vector per row and one per column of a
  patch grid (2-D positions for image patches).
* :class:`ModalityEmbedding` adds a learned vector per modality (BERT's segment or
  "token type" embedding, VisualBERT's text/image types).
* :class:`TiedOutputProjection` reuses an :class:`Embedding`'s table as the output layer
  of a language model, ``logits = h Eᵀ`` (weight tying, Press & Wolf 2017).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import grad_output, module_input, non_negative_number, positive_int


class EmbeddingCache(NamedTuple):
    ids: np.ndarray  # the integer ids that were looked up


class PositionCache(NamedTuple):
    shape: tuple[int, ...]  # x's shape (B, L, dim); positions only add, so nothing else is needed
    dtype: np.dtype


class TiedOutputCache(NamedTuple):
    linear: ops.LinearCache


def int_ids(name: str, ids: object, high: int, what: str) -> np.ndarray:
    """Check an integer id array with values in ``[0, high)``; ``what`` names the table."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name}: expected an integer numpy array, got {type(ids).__name__}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer dtype (ids index rows of {what}), got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= high):
        raise ValueError(
            f"{name}: expected ids in [0, {high}) for {what}, got values from {ids.min()} to {ids.max()}"
        )
    return ids


def sinusoidal_table(max_len: int, dim: int) -> np.ndarray:
    """The fixed ``(max_len, dim)`` float64 code of "Attention Is All You Need" (§3.5 there).

    ``PE[pos, 2i] = sin(pos / 10000^(2i/dim))`` and ``PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))``:
    each pair of columns is a sine/cosine of one frequency, from one cycle per 2π positions
    down to one per 10000·2π, so nearby positions get similar codes and
    ``PE[pos + k]`` is a fixed rotation of ``PE[pos]`` in every pair.  An odd ``dim`` drops
    the last cosine column.
    """
    positions = np.arange(max_len, dtype=np.float64)[:, None]  # (max_len, 1)
    frequencies = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)  # (ceil(dim/2),)
    angles = positions * frequencies  # (max_len, ceil(dim/2))
    table = np.empty((max_len, dim))
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : dim // 2])
    return table


def _sequence_input(name: str, x: object, dim: int, max_len: int, dtype: np.dtype, owner: str) -> np.ndarray:
    """Check ``x (B, L, dim)`` with ``L <= max_len``."""
    module_input(name, x, dim, dtype, owner, ndim=3)
    if x.shape[1] > max_len:
        raise ValueError(
            f"{name}: sequence length {x.shape[1]} exceeds max_len={max_len} of {owner}; got shape {x.shape}"
        )
    return x


class Embedding(Module):
    """A learned lookup table: id ``i`` becomes row ``i`` of ``weight`` (``torch.nn.Embedding``).

    Parameters:
        weight: ``(num_embeddings, dim)``, initialised N(0, 1) as PyTorch.

    Args:
        num_embeddings: the number of ids (the vocabulary size).
        dim: the width of each vector.
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self, num_embeddings: int, dim: int, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.dim = positive_int("dim", dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.weight = Parameter(gen.standard_normal((self.num_embeddings, self.dim)).astype(self.dtype))

    def forward(self, ids: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
        """``ids (B, L)`` integers in ``[0, num_embeddings)`` (any shape works) -> ``(B, L, dim)``."""
        int_ids("ids", ids, self.num_embeddings, f"Embedding({self.num_embeddings}, {self.dim})")
        return self.weight.data[ids], EmbeddingCache(ids)

    def backward(self, d_out: np.ndarray, cache: EmbeddingCache) -> tuple[()]:
        """Add ``d_out (B, L, dim)`` into the rows of ``weight.grad`` that were looked up.

        Returns ``()``: the ids are integers, and nothing can be differentiated with respect
        to them.
        """
        ids = expect_cache(cache, EmbeddingCache, "Embedding").ids
        grad_output(d_out, (*ids.shape, self.dim), self.dtype)
        # out = weight[ids]  ->  row ids[b, l] of dweight collects d_out[b, l].  An id used
        # twice must collect twice: np.add.at accumulates over repeated indices, whereas
        # ``grad[ids] += d_out`` would keep only one of them (buffered fancy assignment).
        np.add.at(self.weight.grad, ids, d_out)
        return ()

    def __repr__(self) -> str:
        return f"Embedding(num_embeddings={self.num_embeddings}, dim={self.dim})"


class SinusoidalPositionalEncoding(Module):
    """``x + PE[:L]``: the fixed sinusoidal code of :func:`sinusoidal_table`, no parameters.

    The table is a constant buffer, so ``named_parameters()`` is empty and the backward
    passes the gradient straight through.

    Args:
        max_len: the longest sequence accepted.
        dim: the feature width.
        dtype: float64 (default) or float32, the dtype of the table and of accepted inputs.
    """

    def __init__(self, max_len: int, dim: int, *, dtype: object = np.float64) -> None:
        self.max_len = positive_int("max_len", max_len)
        self.dim = positive_int("dim", dim)
        self.dtype = as_float_dtype(dtype)
        self.table = sinusoidal_table(self.max_len, self.dim).astype(self.dtype)  # (max_len, dim)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PositionCache]:
        """``x (B, L, dim)`` with ``L <= max_len`` -> ``x + PE[:L]`` ``(B, L, dim)``."""
        _sequence_input("x", x, self.dim, self.max_len, self.dtype, repr(self))
        return x + self.table[: x.shape[1]], PositionCache(x.shape, x.dtype)

    def backward(self, d_out: np.ndarray, cache: PositionCache) -> tuple[np.ndarray]:
        """``d_out (B, L, dim)`` -> ``(dx,)`` with ``dx = d_out`` (out = x + constant)."""
        expect_cache(cache, PositionCache, "SinusoidalPositionalEncoding")
        return (grad_output(d_out, cache.shape, cache.dtype),)

    def __repr__(self) -> str:
        return f"SinusoidalPositionalEncoding(max_len={self.max_len}, dim={self.dim})"


class LearnedPositionalEmbedding(Module):
    """``x + weight[:L]``: one learned vector per position (BERT, ViT).

    Parameters:
        weight: ``(max_len, dim)``, initialised N(0, 0.02²) as BERT and ViT do (small next to
            the token features it is added to).

    Args:
        max_len: the number of positions learned; longer sequences are refused.
        dim: the feature width.
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(self, max_len: int, dim: int, *, dtype: object = np.float64, rng: RngLike = None) -> None:
        self.max_len = positive_int("max_len", max_len)
        self.dim = positive_int("dim", dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.weight = Parameter((0.02 * gen.standard_normal((self.max_len, self.dim))).astype(self.dtype))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PositionCache]:
        """``x (B, L, dim)`` with ``L <= max_len`` -> ``x + weight[:L]`` ``(B, L, dim)``."""
        _sequence_input("x", x, self.dim, self.max_len, self.dtype, repr(self))
        return x + self.weight.data[: x.shape[1]], PositionCache(x.shape, x.dtype)

    def backward(self, d_out: np.ndarray, cache: PositionCache) -> tuple[np.ndarray]:
        """``d_out (B, L, dim)`` -> ``(dx (B, L, dim),)``; adds into ``weight.grad[:L]``."""
        expect_cache(cache, PositionCache, "LearnedPositionalEmbedding")
        grad_output(d_out, cache.shape, cache.dtype)
        L = cache.shape[1]
        # out = x + weight[:L] (broadcast over the batch)  ->  dweight[:L] = Σ_b d_out[b],
        # dx = d_out; the rows of positions beyond L get nothing.
        self.weight.grad[:L] += d_out.sum(axis=0)
        return (d_out,)

    def __repr__(self) -> str:
        return f"LearnedPositionalEmbedding(max_len={self.max_len}, dim={self.dim})"


class GridPositionalEmbedding(Module):
    """``x + row[r] + column[c]``: 2-D positions for the patches of a ``rows x columns`` grid.

    Patch ``n`` of a sequence in reading order (as :func:`mmt_numpy.data.patchify` makes
    them) sits in row ``r = n // columns`` and column ``c = n % columns``; it gets the sum of
    a learned row vector and a learned column vector.  Every patch of one column therefore
    carries the *same* column vector, so "which column is this patch in" is one linear
    feature from the first step, where a 1-D table over reading order
    (:class:`LearnedPositionalEmbedding`) gives nine unrelated vectors and leaves the model
    to discover that patches 0, 3 and 6 share a column.  It also needs ``rows + columns``
    vectors instead of ``rows * columns``.  (The ViT paper's appendix compares a similar
    "2-D" variant that concatenates a half-width row and a half-width column embedding
    instead of adding two full-width ones.)

    Parameters:
        row: ``(rows, dim)``, column: ``(columns, dim)``, each initialised N(0, std²).

    Args:
        grid: ``(rows, columns)`` of the patch grid; inputs have ``rows * columns`` positions.
        dim: the feature width.
        std: standard deviation of the initial vectors.  Choose it near the scale of the
            features they are added to: a position code far smaller than the content is
            invisible to the model at first and has to be grown by weak gradients.
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        dim: int,
        *,
        std: float = 0.02,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if not isinstance(grid, (tuple, list)) or len(grid) != 2:
            raise TypeError(f"grid: expected a pair (rows, columns), got {grid!r}")
        self.rows = positive_int("grid[0]", grid[0])
        self.columns = positive_int("grid[1]", grid[1])
        self.dim = positive_int("dim", dim)
        std = non_negative_number("std", std)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.row = Parameter((std * gen.standard_normal((self.rows, self.dim))).astype(self.dtype))
        self.column = Parameter((std * gen.standard_normal((self.columns, self.dim))).astype(self.dtype))

    @property
    def grid(self) -> tuple[int, int]:
        return self.rows, self.columns

    def table(self) -> np.ndarray:
        """``(rows * columns, dim)``: the vector added to each patch, in reading order."""
        return (self.row.data[:, None, :] + self.column.data[None, :, :]).reshape(-1, self.dim)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, PositionCache]:
        """``x (B, rows * columns, dim)`` -> ``x + row[n // columns] + column[n % columns]``."""
        module_input("x", x, self.dim, self.dtype, repr(self), ndim=3)
        if x.shape[1] != self.rows * self.columns:
            raise ValueError(
                f"x: expected {self.rows * self.columns} patches (a {self.rows}x{self.columns} grid in "
                f"reading order) of {repr(self)}, got shape {x.shape}"
            )
        return x + self.table(), PositionCache(x.shape, x.dtype)

    def backward(self, d_out: np.ndarray, cache: PositionCache) -> tuple[np.ndarray]:
        """``d_out (B, rows * columns, dim)`` -> ``(dx,)`` with ``dx = d_out``.

        Adds into ``row.grad`` and ``column.grad``.
        """
        expect_cache(cache, PositionCache, "GridPositionalEmbedding")
        grad_output(d_out, cache.shape, cache.dtype)
        # out[b, n] = x[b, n] + row[r(n)] + column[c(n)]: dx = d_out; row r collects d_out
        # over the batch and over the patches of row r, column c over those of column c.
        d_grid = d_out.sum(axis=0).reshape(self.rows, self.columns, self.dim)
        self.row.grad += d_grid.sum(axis=1)
        self.column.grad += d_grid.sum(axis=0)
        return (d_out,)

    def __repr__(self) -> str:
        return f"GridPositionalEmbedding(grid=({self.rows}, {self.columns}), dim={self.dim})"


class ModalityEmbedding(Module):
    """``x + weight[modality]``: a learned "type" vector per modality, added to each token.

    When text tokens and image patches are concatenated into one sequence (§5), this is how
    the encoder can tell them apart, as BERT's segment embedding tells sentence A from B.

    Parameters:
        weight: ``(num_modalities, dim)``, initialised N(0, 0.02²).

    Args:
        num_modalities: the number of modalities (2 for text and image).
        dim: the feature width.
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self, num_modalities: int, dim: int, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.num_modalities = positive_int("num_modalities", num_modalities)
        self.dim = positive_int("dim", dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        init = 0.02 * gen.standard_normal((self.num_modalities, self.dim))
        self.weight = Parameter(init.astype(self.dtype))

    def forward(self, x: np.ndarray, modality: int | np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
        """Add each token's modality vector.

        Args:
            x: ``(B, L, dim)``.
            modality: which modality each token belongs to, integers in
                ``[0, num_modalities)``: one int for the whole of x, ``(L,)`` per position
                (e.g. ``[0]*Lt + [1]*Li`` for a text-then-image sequence) or ``(B, L)``.

        Returns:
            ``(B, L, dim)`` and the cache (the ids broadcast to ``(B, L)``).
        """
        owner = repr(self)
        module_input("x", x, self.dim, self.dtype, owner, ndim=3)
        if isinstance(modality, (int, np.integer)) and not isinstance(modality, bool):
            modality = np.asarray(modality)
        ids = int_ids("modality", modality, self.num_modalities, owner)
        B, L, _ = x.shape
        if ids.shape not in ((), (L,), (B, L)):
            raise ValueError(
                f"modality: expected an int, shape ({L},) or ({B}, {L}) to match x {x.shape}, "
                f"got shape {ids.shape}"
            )
        ids = np.broadcast_to(ids, (B, L))
        return x + self.weight.data[ids], EmbeddingCache(ids)

    def backward(self, d_out: np.ndarray, cache: EmbeddingCache) -> tuple[np.ndarray]:
        """``d_out (B, L, dim)`` -> ``(dx,)`` with ``dx = d_out``; adds into ``weight.grad``."""
        ids = expect_cache(cache, EmbeddingCache, "ModalityEmbedding").ids
        grad_output(d_out, (*ids.shape, self.dim), self.dtype)
        # out = x + weight[ids]  ->  dx = d_out, and row m of dweight sums d_out over every
        # token of modality m: a (num_modalities, B·L) one-hot matrix times d_out's rows.  With
        # a handful of modalities this small GEMM is ~100x faster than np.add.at(grad, ids, d_out).
        one_hot = ids.reshape(-1) == np.arange(self.num_modalities)[:, None]  # (M, B·L) bool
        self.weight.grad += one_hot.astype(d_out.dtype) @ d_out.reshape(-1, self.dim)
        return (d_out,)

    def __repr__(self) -> str:
        return f"ModalityEmbedding(num_modalities={self.num_modalities}, dim={self.dim})"


class TiedOutputProjection(Module):
    """``logits = h @ Eᵀ (+ b)``: an :class:`Embedding`'s table ``E`` reused as the output layer.

    A decoder reads token ids through ``E`` (``(vocab, dim)``) and writes scores over the same
    vocabulary; tying the two (Press & Wolf, 2017; the original Transformer) halves the
    embedding parameters and lets every output gradient train the input vectors too.  The
    Parameter is *the same object* as ``embedding.weight``: ``named_parameters()`` lists it
    once (under the embedding's name), and its ``.grad`` collects both uses, the lookup's and
    this projection's.

    Parameters:
        weight: the embedding's ``(vocab, dim)`` table, shared.
        b: ``(vocab,)`` zeros, an output bias of its own (absent with ``bias=False``).

    Args:
        embedding: the :class:`Embedding` whose table is shared.
        bias: whether to learn an output bias.
    """

    def __init__(self, embedding: Embedding, bias: bool = False) -> None:
        if not isinstance(embedding, Embedding):
            raise TypeError(f"embedding: expected an mmt_numpy.nn.Embedding, got {type(embedding).__name__}")
        self.weight = embedding.weight  # the same Parameter: one table, two uses
        self.dim, self.vocab = embedding.dim, embedding.num_embeddings
        self.dtype = embedding.dtype
        self.b = Parameter(np.zeros(self.vocab, dtype=self.dtype)) if bias else None

    def forward(self, h: np.ndarray) -> tuple[np.ndarray, TiedOutputCache]:
        """``h (..., dim)`` -> ``logits (..., vocab)`` and the cache."""
        module_input("h", h, self.dim, self.dtype, repr(self))
        # logits = h @ Eᵀ + b: the linear op with W = Eᵀ, a view (no copy of the table)
        logits, cache = ops.linear_forward(h, self.weight.data.T, None if self.b is None else self.b.data)
        return logits, TiedOutputCache(cache)

    def backward(self, d_logits: np.ndarray, cache: TiedOutputCache) -> tuple[np.ndarray]:
        """``d_logits (..., vocab)`` -> ``(dh (..., dim),)``; adds ``dWᵀ`` into the shared ``weight.grad``."""
        expect_cache(cache, TiedOutputCache, "TiedOutputProjection")
        # logits = h @ Eᵀ  ->  dh = d_logits @ E,  dE = (hᵀ d_logits)ᵀ
        dh, dW, db = ops.linear_backward(d_logits, cache.linear)
        self.weight.grad += dW.T
        if self.b is not None:
            self.b.grad += db
        return (dh,)

    def __repr__(self) -> str:
        return f"TiedOutputProjection(vocab={self.vocab}, dim={self.dim}, bias={self.b is not None})"
