"""Spectrogram patches as tokens: sound embedded the way an image is (§6.3; the Audio Spectrogram
Transformer's recipe).

A log-magnitude spectrogram ``(F, T)`` (:func:`mmt_numpy.ops.stft.log_spectrogram`;
frequency down, time across) is a one-channel image.  Cut it into ``pf x pt`` rectangles
(``pf`` frequency bins by ``pt`` time frames), flatten each, project it with one Linear and
add a 2-D position: a row vector for the frequency band and a column vector for the
stretch of time.  A beep becomes a bright token in its band's row; a click, which sounds at
every frequency for an instant, lights a whole column.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.embedding import GridPositionalEmbedding, PositionCache
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import float_array, positive_int


class SpectrogramPatchCache(NamedTuple):
    projection: ops.LinearCache
    position: PositionCache


class SpectrogramPatchEmbedding(Module):
    """``spectrogram (B, F, T)`` -> ``(B, (F/pf)·(T/pt), dim)``: patch tokens with 2-D positions.

    Token ``r · (T/pt) + c`` is the patch of frequency bins ``r·pf … (r+1)·pf − 1`` (row r,
    low frequencies first) and time frames ``c·pt … (c+1)·pt − 1`` (column c)::

        patches[b, r·C + c] = flatten(spectrogram[b, r·pf:(r+1)·pf, c·pt:(c+1)·pt])   (B, R·C, pf·pt)
        out = patches W + b + row[r] + column[c]                                       (B, R·C, dim)

    Submodules: ``projection`` ``Linear(pf·pt, dim)``, ``position``
    :class:`~mmt_numpy.nn.GridPositionalEmbedding` ``((F/pf, T/pt), dim)``.

    Args:
        bins: F, the frequency bins of the spectrograms accepted (a multiple of ``patch[0]``).
        frames: T, their time frames (a multiple of ``patch[1]``).
        patch: ``(pf, pt)``, bins by frames of each patch.
        dim: the token width.
        position_std: initial spread of the row and column vectors.
        dtype, rng: parameter dtype and the initialisation's generator.
    """

    def __init__(
        self,
        bins: int,
        frames: int,
        patch: tuple[int, int],
        dim: int,
        *,
        position_std: float = 0.3,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.bins = positive_int("bins", bins)
        self.frames = positive_int("frames", frames)
        if not isinstance(patch, (tuple, list)) or len(patch) != 2:
            raise TypeError(f"patch: expected a pair (bins, frames) per patch, got {patch!r}")
        self.patch = (positive_int("patch[0]", patch[0]), positive_int("patch[1]", patch[1]))
        pf, pt = self.patch
        if self.bins % pf or self.frames % pt:
            raise ValueError(
                f"patch: expected ({pf}, {pt}) to tile a ({self.bins}, {self.frames}) spectrogram "
                f"(bins % {pf} and frames % {pt} must be 0)"
            )
        self.dim = positive_int("dim", dim)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.projection = Linear(pf * pt, self.dim, dtype=self.dtype, rng=gen)
        self.position = GridPositionalEmbedding(
            self.grid, self.dim, std=position_std, dtype=self.dtype, rng=gen
        )

    @property
    def grid(self) -> tuple[int, int]:
        """``(frequency rows, time columns)`` of the patch grid."""
        return self.bins // self.patch[0], self.frames // self.patch[1]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def patches(self, spectrogram: np.ndarray) -> np.ndarray:
        """``(B, F, T)`` -> ``(B, R·C, pf·pt)``, rows of the grid first, each patch flattened row-major."""
        B = spectrogram.shape[0]
        (R, C), (pf, pt) = self.grid, self.patch
        x = spectrogram.reshape(B, R, pf, C, pt).transpose(0, 1, 3, 2, 4)  # (B, R, C, pf, pt)
        return x.reshape(B, R * C, pf * pt)

    def forward(self, spectrogram: np.ndarray) -> tuple[np.ndarray, SpectrogramPatchCache]:
        """``spectrogram (B, F, T)`` -> ``(B, R·C, dim)`` and the cache."""
        float_array("spectrogram", spectrogram, ndim=3)
        if spectrogram.shape[1:] != (self.bins, self.frames):
            raise ValueError(
                f"spectrogram: expected shape (B, {self.bins}, {self.frames}) (bins, frames) for {self!r}, "
                f"got {spectrogram.shape}"
            )
        if spectrogram.dtype != self.dtype:
            raise TypeError(
                f"spectrogram: expected dtype {self.dtype} (the module's parameters), got {spectrogram.dtype}"
            )
        tokens, c_proj = self.projection.forward(self.patches(spectrogram))  # patches W + b
        out, c_pos = self.position.forward(tokens)  # + row[r] + column[c]
        return out, SpectrogramPatchCache(c_proj, c_pos)

    def backward(self, d_out: np.ndarray, cache: SpectrogramPatchCache) -> tuple[np.ndarray]:
        """``d_out (B, R·C, dim)`` -> ``(d_spectrogram (B, F, T),)``; adds into the parameters' ``.grad``."""
        expect_cache(cache, SpectrogramPatchCache, "SpectrogramPatchEmbedding")
        (d_tokens,) = self.position.backward(d_out, cache.position)  # out = tokens + positions
        (d_patches,) = self.projection.backward(d_tokens, cache.projection)  # tokens = patches W + b
        # patches = reshape/transpose(spectrogram): undo the same moves in reverse
        B = d_patches.shape[0]
        (R, C), (pf, pt) = self.grid, self.patch
        d_spec = (
            d_patches.reshape(B, R, C, pf, pt).transpose(0, 1, 3, 2, 4).reshape(B, self.bins, self.frames)
        )
        return (d_spec,)

    def __repr__(self) -> str:
        return (
            f"SpectrogramPatchEmbedding(bins={self.bins}, frames={self.frames}, "
            f"patch={self.patch}, dim={self.dim})"
        )
