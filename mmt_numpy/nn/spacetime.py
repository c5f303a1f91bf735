"""Attention over space and time: a clip of T frames of N patches each (§6.3).

A clip cut into patches is a grid of tokens ``x (B, T, N, D)``: T frames, N patches a frame.
There are two standard ways to let them attend:

* **joint** space-time attention: flatten to one sequence of ``T·N`` tokens and let every
  token attend to every other (ViViT's model 1).  Scores cost ``(T·N)²`` per head, so
  doubling the clip length quadruples them.
* **divided** space-time attention (TimeSformer): first each patch position attends over
  time, to the same position in every frame (N sequences of length T), then each frame
  attends over space (T sequences of length N).  Scores cost ``T·N·(T + N)``: linear in T
  at a fixed frame size.  A token still reaches every other token, in two steps: from
  ``(t', n')`` over time to ``(t, n')``, then over space to ``(t, n)``.

Attention does not know where or when a token is, so :class:`SpaceTimePositionalEmbedding`
adds a grid position (a row vector plus a column vector, as for still images) and a time
position (one vector per frame, learned or sinusoidal) to every patch.

Every module here takes and returns ``(B, T, N, D)`` and is built on
:class:`~mmt_numpy.nn.MultiHeadAttention`; the reshapes between the layouts are views or
one copy each, and every head, frame and batch row is computed in the same batched matmul.
Padded frames (clips shorter than T in a batch) are masked as keys by ``frame_lengths``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.attention import MultiHeadAttention, MultiHeadAttentionCache
from mmt_numpy.nn.embedding import GridPositionalEmbedding, PositionCache, sinusoidal_table
from mmt_numpy.nn.masks import lengths_mask
from mmt_numpy.nn.module import Module, Parameter, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import grad_output, module_input, positive_int

TIME_POSITIONS = ("learned", "sinusoidal", "none")


def clip_tokens(name: str, x: object, dim: int, dtype: np.dtype, owner: str) -> np.ndarray:
    """Check ``x (B, T, N, dim)`` with T >= 1 frames and N >= 1 patches."""
    module_input(name, x, dim, dtype, owner, ndim=4)
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(
            f"{name}: expected at least one frame and one patch, (B, T >= 1, N >= 1, {dim}), "
            f"got shape {x.shape}"
        )
    return x


def frame_keep(frame_lengths: object, batch: int, frames: int) -> np.ndarray | None:
    """``(B, T)`` bool, True for the first ``frame_lengths[b]`` frames of clip b (None: all frames)."""
    if frame_lengths is None:
        return None
    return lengths_mask("frame_lengths", frame_lengths, batch, frames)[:, 0, 0, :]


# ---------------------------------------------------------------------- positions


class SpaceTimePositionCache(NamedTuple):
    grid: PositionCache  # of the (B*T, N, D) view
    shape: tuple[int, ...]  # x's shape (B, T, N, D)
    dtype: np.dtype


class SpaceTimePositionalEmbedding(Module):
    """``x[b, t, n] + row[n // columns] + column[n % columns] + time[t]``.

    The grid part is a :class:`~mmt_numpy.nn.GridPositionalEmbedding` (the same for every
    frame); the time part is one vector per frame, the same for every patch of that frame:

    * ``"learned"``: a Parameter ``time (max_frames, dim)``, initialised N(0, std²);
    * ``"sinusoidal"``: the fixed table of :func:`~mmt_numpy.nn.embedding.sinusoidal_table`,
      scaled by ``std·√2`` so that its entries have the learned table's spread (a sine's rms
      is 1/√2); a constant, no parameter;
    * ``"none"``: no time position at all.  The frames are then an unordered set: the
      model can tell which tokens share a frame (attention sees that), never which frame
      came first.  The ablation of :mod:`mmt_numpy.tasks.video` uses it.

    Submodules and parameters: ``grid`` (``grid.row``, ``grid.column``) and, when learned,
    ``time``.

    Args:
        grid: ``(rows, columns)`` of each frame's patch grid, ``N = rows * columns``.
        max_frames: the most frames accepted (T <= max_frames).
        dim: the feature width.
        time: ``"learned"``, ``"sinusoidal"`` or ``"none"``.
        std: standard deviation of the initial vectors (see ``GridPositionalEmbedding``).
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        max_frames: int,
        dim: int,
        *,
        time: str = "learned",
        std: float = 0.02,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if time not in TIME_POSITIONS:
            raise ValueError(f"time: expected one of {TIME_POSITIONS}, got {time!r}")
        self.max_frames = positive_int("max_frames", max_frames)
        self.dim = positive_int("dim", dim)
        self.time_kind = time
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.grid = GridPositionalEmbedding(grid, self.dim, std=std, dtype=self.dtype, rng=gen)
        self.time: Parameter | None = None
        self.time_table: np.ndarray | None = None
        if time == "learned":
            self.time = Parameter((std * gen.standard_normal((self.max_frames, self.dim))).astype(self.dtype))
        elif time == "sinusoidal":
            table = std * np.sqrt(2.0) * sinusoidal_table(self.max_frames, self.dim)
            self.time_table = table.astype(self.dtype)

    @property
    def num_patches(self) -> int:
        return self.grid.rows * self.grid.columns

    def time_vectors(self, frames: int) -> np.ndarray | None:
        """``(frames, dim)`` the vector added to each frame, or None for ``time="none"``."""
        if self.time is not None:
            return self.time.data[:frames]
        if self.time_table is not None:
            return self.time_table[:frames]
        return None

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, SpaceTimePositionCache]:
        """``x (B, T, N, dim)`` with ``T <= max_frames``, ``N = rows * columns`` -> the same shape."""
        clip_tokens("x", x, self.dim, self.dtype, repr(self))
        B, T, N, D = x.shape
        if T > self.max_frames:
            raise ValueError(
                f"x: {T} frames exceed max_frames={self.max_frames} of {self!r}; got shape {x.shape}"
            )
        if N != self.num_patches:
            raise ValueError(
                f"x: expected {self.num_patches} patches a frame "
                f"(a {self.grid.rows}x{self.grid.columns} grid) "
                f"for {self!r}, got shape {x.shape}"
            )
        # out = x + grid[n]: the grid module over every frame at once, (B*T, N, D)
        out, grid_cache = self.grid.forward(x.reshape(B * T, N, D))
        out = out.reshape(B, T, N, D)
        time = self.time_vectors(T)
        if time is not None:
            out += time[None, :, None, :]  # out += time[t], the same for every patch of frame t
        return out, SpaceTimePositionCache(grid_cache, x.shape, x.dtype)

    def backward(self, d_out: np.ndarray, cache: SpaceTimePositionCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, dim)`` -> ``(dx,)``, ``dx = d_out``; adds into the grid's and time's grads."""
        expect_cache(cache, SpaceTimePositionCache, "SpaceTimePositionalEmbedding")
        grad_output(d_out, cache.shape, cache.dtype)
        B, T, N, D = cache.shape
        if self.time is not None:
            # out += time[t] (broadcast over batch and patches) -> dtime[t] = Σ_b Σ_n d_out[b, t, n]
            self.time.grad[:T] += d_out.sum(axis=(0, 2))
        # out = x + grid[n] -> dx = d_out (the grid module adds its own gradients)
        self.grid.backward(d_out.reshape(B * T, N, D), cache.grid)
        return (d_out,)

    def __repr__(self) -> str:
        return (
            f"SpaceTimePositionalEmbedding(grid=({self.grid.rows}, {self.grid.columns}), "
            f"max_frames={self.max_frames}, dim={self.dim}, time={self.time_kind!r})"
        )


# ---------------------------------------------------------------------- attention


class JointAttentionCache(NamedTuple):
    shape: tuple[int, ...]  # (B, T, N, D)
    attn: MultiHeadAttentionCache  # over the (B, T*N, D) sequence

    @property
    def weights(self) -> np.ndarray:
        """``(B, H, T*N, T*N)``; token ``t*N + n`` is patch n of frame t."""
        return self.attn.weights


class TimeAttentionCache(NamedTuple):
    shape: tuple[int, ...]
    attn: MultiHeadAttentionCache  # over (B*N, T, D): sequence b*N + n is patch n through time

    @property
    def weights(self) -> np.ndarray:
        """``(B, N, H, T, T)``: patch position n's attention from frame t to frame t'."""
        B, T, N, _ = self.shape
        return self.attn.weights.reshape(B, N, -1, T, T)


class SpaceAttentionCache(NamedTuple):
    shape: tuple[int, ...]
    attn: MultiHeadAttentionCache  # over (B*T, N, D): sequence b*T + t is frame t

    @property
    def weights(self) -> np.ndarray:
        """``(B, T, H, N, N)``: frame t's attention from patch n to patch n'."""
        B, T, N, _ = self.shape
        return self.attn.weights.reshape(B, T, -1, N, N)


class DividedAttentionCache(NamedTuple):
    time: TimeAttentionCache
    space: SpaceAttentionCache

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(time (B, N, H, T, T), space (B, T, H, N, N))``."""
        return self.time.weights, self.space.weights


class _ClipAttention(Module):
    """The shared part: one :class:`MultiHeadAttention` named ``attn``, and the input check."""

    def __init__(
        self, d_model: int, num_heads: int, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.attn = MultiHeadAttention(d_model, num_heads, dtype=dtype, rng=rng)

    @property
    def d_model(self) -> int:
        return self.attn.d_model

    @property
    def num_heads(self) -> int:
        return self.attn.num_heads

    def _check(self, x: np.ndarray) -> tuple[int, int, int, int]:
        clip_tokens("x", x, self.d_model, self.attn.dtype, repr(self))
        return x.shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d_model={self.d_model}, num_heads={self.num_heads})"


class JointSpaceTimeAttention(_ClipAttention):
    """Every token of every frame attends to every token of every frame (one sequence of T·N).

    Submodule: ``attn`` :class:`MultiHeadAttention` ``(d_model, num_heads)``.
    """

    def forward(
        self, x: np.ndarray, frame_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, JointAttentionCache]:
        """``x (B, T, N, D)`` -> ``(B, T, N, D)``; ``frame_lengths (B,)`` masks padded frames as keys.

        ``cache.weights`` is ``(B, H, T*N, T*N)``.
        """
        B, T, N, D = self._check(x)
        keep = frame_keep(frame_lengths, B, T)
        mask = None if keep is None else np.repeat(keep, N, axis=1)[:, None, None, :]  # (B, 1, 1, T*N)
        out, cache = self.attn.forward(x.reshape(B, T * N, D), mask=mask)  # the clip as one sequence
        return out.reshape(B, T, N, D), JointAttentionCache(x.shape, cache)

    def backward(self, d_out: np.ndarray, cache: JointAttentionCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, D)`` -> ``(dx (B, T, N, D),)``; adds into ``attn``'s parameters."""
        expect_cache(cache, JointAttentionCache, "JointSpaceTimeAttention")
        B, T, N, D = cache.shape
        grad_output(d_out, cache.shape, self.attn.dtype)
        (dx,) = self.attn.backward(d_out.reshape(B, T * N, D), cache.attn)  # out = attn(x as (B, T*N, D))
        return (dx.reshape(B, T, N, D),)


class TimeAttention(_ClipAttention):
    """Each patch position attends over time: N·B sequences of length T (TimeSformer's first step).

    Submodule: ``attn`` :class:`MultiHeadAttention` ``(d_model, num_heads)``.
    """

    def forward(
        self, x: np.ndarray, frame_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, TimeAttentionCache]:
        """``x (B, T, N, D)`` -> ``(B, T, N, D)``; ``cache.weights`` is ``(B, N, H, T, T)``."""
        B, T, N, D = self._check(x)
        keep = frame_keep(frame_lengths, B, T)
        mask = None if keep is None else np.repeat(keep, N, axis=0)[:, None, None, :]  # (B*N, 1, 1, T)
        # (B, T, N, D) -> (B, N, T, D) -> (B*N, T, D): sequence b*N + n is patch n of clip b through time
        seqs = x.transpose(0, 2, 1, 3).reshape(B * N, T, D)
        out, cache = self.attn.forward(seqs, mask=mask)
        return out.reshape(B, N, T, D).transpose(0, 2, 1, 3), TimeAttentionCache(x.shape, cache)

    def backward(self, d_out: np.ndarray, cache: TimeAttentionCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, D)`` -> ``(dx (B, T, N, D),)``."""
        expect_cache(cache, TimeAttentionCache, "TimeAttention")
        B, T, N, D = cache.shape
        grad_output(d_out, cache.shape, self.attn.dtype)
        # out = back-to-(B, T, N, D)(attn(seqs)): the same transposes, undone in reverse
        (d_seqs,) = self.attn.backward(d_out.transpose(0, 2, 1, 3).reshape(B * N, T, D), cache.attn)
        return (d_seqs.reshape(B, N, T, D).transpose(0, 2, 1, 3),)


class SpaceAttention(_ClipAttention):
    """Each frame attends over space: B·T sequences of length N (TimeSformer's second step).

    Padded frames need no mask here: their queries see only their own frame, and their
    outputs are never attended by a real frame's tokens (the time attention masks them).

    Submodule: ``attn`` :class:`MultiHeadAttention` ``(d_model, num_heads)``.
    """

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, SpaceAttentionCache]:
        """``x (B, T, N, D)`` -> ``(B, T, N, D)``; ``cache.weights`` is ``(B, T, H, N, N)``."""
        B, T, N, D = self._check(x)
        out, cache = self.attn.forward(x.reshape(B * T, N, D))  # sequence b*T + t is frame t of clip b
        return out.reshape(B, T, N, D), SpaceAttentionCache(x.shape, cache)

    def backward(self, d_out: np.ndarray, cache: SpaceAttentionCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, D)`` -> ``(dx (B, T, N, D),)``."""
        expect_cache(cache, SpaceAttentionCache, "SpaceAttention")
        B, T, N, D = cache.shape
        grad_output(d_out, cache.shape, self.attn.dtype)
        (dx,) = self.attn.backward(d_out.reshape(B * T, N, D), cache.attn)  # out = attn(x as (B*T, N, D))
        return (dx.reshape(B, T, N, D),)


class DividedSpaceTimeAttention(Module):
    """Attention over time, then over space: ``out = space(time(x))`` (TimeSformer's divided attention).

    Inside :class:`SpaceTimeEncoderLayer` the two steps are separate sub-layers, each with
    its own residual and norm, as in TimeSformer; ``forward`` here composes them directly,
    the same operator :class:`JointSpaceTimeAttention` is compared with (cost, reach).

    Submodules: ``time`` :class:`TimeAttention`, ``space`` :class:`SpaceAttention`, each with
    its own ``attn`` :class:`MultiHeadAttention` ``(d_model, num_heads)``.
    """

    def __init__(
        self, d_model: int, num_heads: int, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        gen = as_generator(rng)
        self.time = TimeAttention(d_model, num_heads, dtype=dtype, rng=gen)
        self.space = SpaceAttention(d_model, num_heads, dtype=dtype, rng=gen)

    @property
    def d_model(self) -> int:
        return self.time.d_model

    @property
    def num_heads(self) -> int:
        return self.time.num_heads

    def forward(
        self, x: np.ndarray, frame_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, DividedAttentionCache]:
        """``x (B, T, N, D)`` -> ``(B, T, N, D)``; ``cache.weights`` is ``(time, space)`` weights."""
        y, time_cache = self.time.forward(x, frame_lengths)  # y = time(x)
        out, space_cache = self.space.forward(y)  # out = space(y)
        return out, DividedAttentionCache(time_cache, space_cache)

    def backward(self, d_out: np.ndarray, cache: DividedAttentionCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, D)`` -> ``(dx (B, T, N, D),)``."""
        expect_cache(cache, DividedAttentionCache, "DividedSpaceTimeAttention")
        (d_y,) = self.space.backward(d_out, cache.space)  # out = space(y)
        return self.time.backward(d_y, cache.time)  # y = time(x)

    def __repr__(self) -> str:
        return f"DividedSpaceTimeAttention(d_model={self.d_model}, num_heads={self.num_heads})"


def divided_reach(cache: DividedAttentionCache) -> np.ndarray:
    """``(B, T, N, T, N)``: how much token ``(t, n)`` draws on token ``(t', n')`` through both steps.

    With head-averaged weights ``S[b, t, n, n']`` (space) and ``R[b, n', t, t']`` (time), the
    composed map is ``S[b, t, n, n'] · R[b, n', t, t']``: from ``(t', n')`` over time to
    ``(t, n')``, then over space to ``(t, n)``.  Rows sum to 1 like a joint attention row, so
    the two can be drawn side by side (each head has its own value projection, so this is the
    picture of where information can come from, not an exact decomposition of the output).
    """
    expect_cache(cache, DividedAttentionCache, "DividedSpaceTimeAttention")
    space = cache.space.weights.mean(axis=2)  # (B, T, N, N'):  S[b, t, n, n']
    time = cache.time.weights.mean(axis=2)  # (B, N', T, T'): R[b, n', t, t']
    # reach[b, t, n, t', n'] = S[b, t, n, n'] R[b, n', t, t']
    return np.einsum("btnm,bmts->btnsm", space, time, optimize=True)
