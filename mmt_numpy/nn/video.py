"""The video encoder of §6.3: clip patches in, one vector per patch of every frame out.

A clip of T frames, each cut into N patches (:func:`mmt_numpy.data.video.clip_patches`), is
embedded patch by patch like an image (ViT's patch embedding), given a grid position and a
time position, and run through layers of space-time attention (joint or divided, see
:mod:`mmt_numpy.nn.spacetime`), TimeSformer style.  Pre-LN throughout::

    z = position(patch_embedding(patches))                       (B, T, N, D)
    divided:  z = z + time_attn(norm1(z))                        over T, per patch position
              z = z + space_attn(norm2(z))                       over N, per frame
              z = z + ff(norm3(z))
    joint:    z = z + joint_attn(norm1(z))                       over all T·N tokens
              z = z + ff(norm2(z))
    out = norm(z)                                                (B, T, N, D)
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import FeedForward
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.spacetime import (
    DividedSpaceTimeAttention,
    JointSpaceTimeAttention,
    SpaceTimePositionalEmbedding,
    SpaceTimePositionCache,
    clip_tokens,
)
from mmt_numpy.nn.sublayer import SublayerCache, sublayer_backward, sublayer_forward
from mmt_numpy.validate import positive_int

ATTENTIONS = ("divided", "joint")


class SpaceTimeLayerCache(NamedTuple):
    attention: str  # "divided" or "joint"
    attn: tuple[SublayerCache, ...]  # divided: (time, space); joint: (joint,)
    ff: SublayerCache

    @property
    def weights(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """joint: ``(B, H, T*N, T*N)``; divided: ``(time (B, N, H, T, T), space (B, T, H, N, N))``."""
        if self.attention == "joint":
            return self.attn[0].weights
        return self.attn[0].weights, self.attn[1].weights


class SpaceTimeEncoderLayer(Module):
    """One pre-LN layer of space-time attention and a feed-forward network over ``(B, T, N, D)``.

    Submodules: ``attn`` (:class:`~mmt_numpy.nn.spacetime.DividedSpaceTimeAttention`, whose
    ``attn.time`` and ``attn.space`` are two sub-layers, or
    :class:`~mmt_numpy.nn.spacetime.JointSpaceTimeAttention`, one sub-layer); ``norm1``,
    ``norm2`` (and ``norm3`` when divided), ``ff`` :class:`~mmt_numpy.nn.FeedForward`, and the
    residual dropouts ``dropout1`` ... one per sub-layer.

    Args:
        d_model, num_heads, d_ff: widths and heads.
        attention: ``"divided"`` (time, then space) or ``"joint"``.
        activation, dropout: of the feed-forward network and the residual branches.
        dtype, rng: parameter dtype and the generator for initialisation and dropout.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        attention: str = "divided",
        activation: str = "relu",
        dropout: float = 0.0,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"attention: expected one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        kind = DividedSpaceTimeAttention if attention == "divided" else JointSpaceTimeAttention
        self.attn = kind(self.d_model, num_heads, dtype=dtype, rng=gen)
        self.ff = FeedForward(self.d_model, self.d_ff, activation, dropout, dtype=dtype, rng=gen)
        sublayers = 3 if attention == "divided" else 2
        for i in range(1, sublayers + 1):
            setattr(self, f"norm{i}", LayerNorm(self.d_model, dtype=dtype))
        for i in range(1, sublayers + 1):
            setattr(self, f"dropout{i}", Dropout(dropout, rng=gen))

    def _steps(self) -> list[tuple[Module, bool, LayerNorm, Dropout]]:
        """The attention sub-layers in order: each module, whether it masks padded frames, its
        norm and its residual dropout."""
        if self.attention == "divided":
            return [
                (self.attn.time, True, self.norm1, self.dropout1),
                (self.attn.space, False, self.norm2, self.dropout2),
            ]
        return [(self.attn, True, self.norm1, self.dropout1)]

    def _ff_norm(self) -> tuple[LayerNorm, Dropout]:
        return (self.norm3, self.dropout3) if self.attention == "divided" else (self.norm2, self.dropout2)

    def forward(
        self, x: np.ndarray, frame_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, SpaceTimeLayerCache]:
        """``x (B, T, N, D)``, ``frame_lengths (B,)`` or None -> ``(B, T, N, D)`` and the cache."""
        clip_tokens("x", x, self.d_model, self.norm1.dtype, repr(self))
        caches = []
        for attn, masked, norm, drop in self._steps():
            # x = x + attn(norm(x)): time and joint attention mask padded frames; space needs no mask
            f = partial(attn.forward, frame_lengths=frame_lengths) if masked else attn.forward
            x, c = sublayer_forward(x, f, norm, drop, norm_first=True)
            caches.append(c)
        norm, drop = self._ff_norm()
        x, ff_cache = sublayer_forward(x, self.ff.forward, norm, drop, norm_first=True)  # x = x + ff(norm(x))
        return x, SpaceTimeLayerCache(self.attention, tuple(caches), ff_cache)

    def backward(self, d_out: np.ndarray, cache: SpaceTimeLayerCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, D)`` -> ``(dx (B, T, N, D),)``; adds into every parameter's ``.grad``."""
        expect_cache(cache, SpaceTimeLayerCache, "SpaceTimeEncoderLayer")
        norm, drop = self._ff_norm()
        (d_x,) = sublayer_backward(d_out, cache.ff, self.ff.backward, norm, drop)  # x + ff(norm(x))
        for (attn, _, norm, drop), c in zip(reversed(self._steps()), reversed(cache.attn), strict=True):
            (d_x,) = sublayer_backward(d_x, c, attn.backward, norm, drop)  # x = x + attn(norm(x))
        return (d_x,)

    def __repr__(self) -> str:
        return (
            f"SpaceTimeEncoderLayer(d_model={self.d_model}, num_heads={self.attn.num_heads}, "
            f"d_ff={self.d_ff}, attention={self.attention!r})"
        )


class VideoEncoderCache(NamedTuple):
    patch_embedding: ops.LinearCache
    position: SpaceTimePositionCache
    layers: tuple[SpaceTimeLayerCache, ...]
    norm: ops.LayerNormCache

    @property
    def weights(self) -> list:
        """Each layer's attention weights (see :attr:`SpaceTimeLayerCache.weights`), first layer first."""
        return [c.weights for c in self.layers]


class VideoEncoder(Module):
    """Clip patches ``(B, T, N, patch_dim)`` -> contextual patch vectors ``(B, T, N, d_model)``.

    A reusable encoder for the video modality: the video QA model of
    :mod:`mmt_numpy.tasks.video` reads its output through cross-attention, and a model with
    one encoder per modality (UniT, §3.2) can plug it in the same way.  To join other
    modalities' tokens in one sequence, flatten the frames: ``out.reshape(B, T * N, d_model)``
    (token ``t*N + n`` is patch n of frame t), then add a modality embedding.

    Submodules: ``patch_embedding`` ``Linear(patch_dim, d_model)`` (ViT's patch embedding,
    applied to every frame), ``position`` :class:`~mmt_numpy.nn.spacetime.SpaceTimePositionalEmbedding`
    (grid + time), ``layers`` (:class:`SpaceTimeEncoderLayer` each) and the final ``norm``.

    Args:
        patch_dim: width of each patch vector (``patch * patch * 3``).
        grid: ``(rows, columns)`` of each frame's patches, ``N = rows * columns``.
        max_frames: the most frames a clip may have.
        d_model, num_heads, d_ff, num_layers: the sizes.
        attention: ``"divided"`` (TimeSformer; cost linear in T) or ``"joint"`` (quadratic in T·N).
        time_positions: ``"learned"``, ``"sinusoidal"`` or ``"none"`` (frames as an unordered set).
        position_std: the initial spread of the grid and time vectors; near the scale of the
            patch features (see :class:`~mmt_numpy.nn.ImageTextModel` for why it matters).
        activation, dropout, dtype, rng: as :class:`SpaceTimeEncoderLayer`.
    """

    def __init__(
        self,
        patch_dim: int,
        grid: tuple[int, int],
        max_frames: int,
        d_model: int = 32,
        num_heads: int = 4,
        d_ff: int = 64,
        num_layers: int = 2,
        *,
        attention: str = "divided",
        time_positions: str = "learned",
        position_std: float = 0.3,
        activation: str = "relu",
        dropout: float = 0.0,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.patch_dim = positive_int("patch_dim", patch_dim)
        self.d_model = positive_int("d_model", d_model)
        num_layers = positive_int("num_layers", num_layers)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.patch_embedding = Linear(self.patch_dim, self.d_model, dtype=self.dtype, rng=gen)
        self.position = SpaceTimePositionalEmbedding(
            grid, max_frames, self.d_model, time=time_positions, std=position_std, dtype=self.dtype, rng=gen
        )
        self.layers = [
            SpaceTimeEncoderLayer(
                self.d_model,
                num_heads,
                d_ff,
                attention=attention,
                activation=activation,
                dropout=dropout,
                dtype=self.dtype,
                rng=gen,
            )
            for _ in range(num_layers)
        ]
        self.norm = LayerNorm(self.d_model, dtype=self.dtype)

    @property
    def attention(self) -> str:
        return self.layers[0].attention

    def forward(
        self, patches: np.ndarray, frame_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, VideoEncoderCache]:
        """Encode a batch of clips.

        Args:
            patches: ``(B, T, N, patch_dim)``, T >= 1 frames of N patches each.
            frame_lengths: ``(B,)`` integers, the real frames of each clip (later ones are
                padding and are not attended), or None when every clip has T frames.

        Returns:
            ``(B, T, N, d_model)`` and the cache; ``cache.weights`` lists each layer's attention.
        """
        clip_tokens("patches", patches, self.patch_dim, self.dtype, repr(self))
        z, c_patch = self.patch_embedding.forward(patches)  # z = patches W + b, every frame
        z, c_position = self.position.forward(z)  # z = z + grid[n] + time[t]
        layer_caches = []
        for layer in self.layers:
            z, c = layer.forward(z, frame_lengths)  # z = layer(z)
            layer_caches.append(c)
        out, c_norm = self.norm.forward(z)  # out = norm(z)
        return out, VideoEncoderCache(c_patch, c_position, tuple(layer_caches), c_norm)

    def backward(self, d_out: np.ndarray, cache: VideoEncoderCache) -> tuple[np.ndarray]:
        """``d_out (B, T, N, d_model)`` -> ``(d_patches (B, T, N, patch_dim),)``."""
        expect_cache(cache, VideoEncoderCache, "VideoEncoder")
        (d_z,) = self.norm.backward(d_out, cache.norm)  # out = norm(z)
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            (d_z,) = layer.backward(d_z, c)  # z = layer(z)
        (d_z,) = self.position.backward(d_z, cache.position)  # z = z + positions
        return self.patch_embedding.backward(d_z, cache.patch_embedding)  # z = patches W + b

    def __repr__(self) -> str:
        return (
            f"VideoEncoder(patch_dim={self.patch_dim}, d_model={self.d_model}, "
            f"num_layers={len(self.layers)}, attention={self.attention!r}, "
            f"time_positions={self.position.time_kind!r})"
        )
