"""The three fusion strategies of §2.1.1 (模态融合策略, modality fusion strategies) as modules.

* **Feature-level fusion** (特征级融合) joins the two modalities *before* any interaction:
  the token sequences are laid side by side and one encoder reads them together.  This is
  what the §5 model does; :class:`FeatureFusion` is the joining step alone.
* **Vector-level fusion** (向量级融合) first summarises each modality as one vector (a
  pooled text vector, a pooled image vector), then combines the two vectors:
  :class:`VectorFusion` concatenates, adds or multiplies them element by element.
* **Tensor-level fusion** (张量级融合) combines two vectors by their outer product, so every
  feature of one modality meets every feature of the other (Tensor Fusion Network, Zadeh
  et al., 2017).  Appending a constant 1 to each vector keeps the unimodal features too:
  ``[v1; 1] ⊗ [v2; 1]`` contains ``v1``, ``v2`` and all products ``v1_i v2_j``.

The article only names the three; the concrete forms here are the usual ones in the
literature.  Each module has a hand-written backward, checked by ``python -m mmt_numpy
gradcheck`` (catalogue ``mmt_numpy/checks/learning.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.validate import float_array, grad_output, positive_int, same_dtype

VECTOR_MODES = ("concat", "sum", "product")


class FusionCache(NamedTuple):
    split: int  # where the output splits back into the two inputs (La, or D1)
    a: np.ndarray | None  # the inputs, kept only where the backward multiplies by them
    b: np.ndarray | None
    out_shape: tuple[int, ...]
    dtype: np.dtype


class TensorFusionCache(NamedTuple):
    u1: np.ndarray  # (B, d1+1) = [v1; 1]
    u2: np.ndarray  # (B, d2+1) = [v2; 1]
    proj: object  # the projection's LinearCache, or None


class FeatureFusion(Module):
    """Feature-level fusion: ``[a ; b]`` along the sequence axis, one stream for one encoder.

    ``forward(a (B, La, D), b (B, Lb, D)) -> (B, La + Lb, D)``; no parameters.  The two
    modalities must already share the width D (the §5 model projects both to
    ``hidden_dim`` first).
    """

    def forward(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, FusionCache]:
        """``a (B, La, D)``, ``b (B, Lb, D)`` -> ``(B, La + Lb, D)``, a's tokens first."""
        float_array("a", a, ndim=3)
        float_array("b", b, ndim=3)
        same_dtype(("a", "b"), (a, b))
        if b.shape[0] != a.shape[0] or b.shape[2] != a.shape[2]:
            raise ValueError(
                f"b: expected shape ({a.shape[0]}, Lb, {a.shape[2]}) (batch and width of "
                f"a {a.shape}), got {b.shape}"
            )
        out = np.concatenate([a, b], axis=1)
        return out, FusionCache(a.shape[1], None, None, out.shape, out.dtype)

    def backward(self, d_out: np.ndarray, cache: FusionCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, La + Lb, D)`` -> ``(d_a (B, La, D), d_b (B, Lb, D))``."""
        expect_cache(cache, FusionCache, "FeatureFusion")
        grad_output(d_out, cache.out_shape, cache.dtype)
        La = cache.split
        # out = concatenate([a, b], axis=1)  ->  the gradient splits at the same place
        return d_out[:, :La], d_out[:, La:]

    def __repr__(self) -> str:
        return "FeatureFusion()"


class VectorFusion(Module):
    """Vector-level fusion of two pooled vectors, ``v1 (B, D1)`` and ``v2 (B, D2)``.

    Modes:
        ``"concat"``: ``[v1 ; v2]``, ``(B, D1 + D2)``; the classifier after it must find any
        interaction itself.
        ``"sum"``: ``v1 + v2``, ``(B, D)``; needs D1 = D2.
        ``"product"``: ``v1 ⊙ v2``, ``(B, D)``; needs D1 = D2; a multiplicative gate in which
        one modality selects features of the other.

    No parameters (project the vectors to a common width first when needed).
    """

    def __init__(self, mode: str = "concat") -> None:
        if mode not in VECTOR_MODES:
            raise ValueError(f"mode: expected one of {VECTOR_MODES}, got {mode!r}")
        self.mode = mode

    def out_dim(self, d1: int, d2: int) -> int:
        """The output width for input widths ``d1`` and ``d2``."""
        return d1 + d2 if self.mode == "concat" else d1

    def forward(self, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, FusionCache]:
        """``v1 (B, D1)``, ``v2 (B, D2)`` -> ``(B, out_dim(D1, D2))``."""
        float_array("v1", v1, ndim=2)
        float_array("v2", v2, ndim=2)
        same_dtype(("v1", "v2"), (v1, v2))
        if v2.shape[0] != v1.shape[0]:
            raise ValueError(f"v2: expected batch size {v1.shape[0]} (as v1 {v1.shape}), got {v2.shape}")
        if self.mode != "concat" and v2.shape != v1.shape:
            raise ValueError(f"v2: mode {self.mode!r} needs the shape of v1 {v1.shape}, got {v2.shape}")
        if self.mode == "concat":
            out = np.concatenate([v1, v2], axis=1)
        elif self.mode == "sum":
            out = v1 + v2
        else:
            out = v1 * v2
        product = self.mode == "product"
        return out, FusionCache(
            v1.shape[1], v1 if product else None, v2 if product else None, out.shape, out.dtype
        )

    def backward(self, d_out: np.ndarray, cache: FusionCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, out_dim)`` -> ``(d_v1 (B, D1), d_v2 (B, D2))``."""
        expect_cache(cache, FusionCache, "VectorFusion")
        grad_output(d_out, cache.out_shape, cache.dtype)
        if self.mode == "concat":
            # out = [v1 ; v2]  ->  split
            return d_out[:, : cache.split], d_out[:, cache.split :]
        if self.mode == "sum":
            # out = v1 + v2  ->  both get d_out
            return d_out, d_out.copy()
        # out = v1 * v2  ->  d_v1 = d_out * v2, d_v2 = d_out * v1
        return d_out * cache.b, d_out * cache.a

    def __repr__(self) -> str:
        return f"VectorFusion(mode={self.mode!r})"


class TensorFusion(Module):
    """Tensor-level fusion: ``z = flatten([v1; 1] ⊗ [v2; 1])``, then optionally ``Linear(z)``.

    ``z[b, i * (D2+1) + j] = u1[b, i] * u2[b, j]`` with ``u1 = [v1; 1]`` and ``u2 = [v2; 1]``,
    so ``z`` holds the constant 1, every feature of ``v1`` and of ``v2``, and every product
    ``v1_i v2_j``: ``(D1+1)(D2+1)`` numbers, a bilinear layer when followed by a Linear.

    Args:
        d1, d2: widths of the two input vectors.
        d_out: when given, a ``Linear((d1+1)(d2+1), d_out)`` named ``proj`` follows the
            outer product; when None the module has no parameters and returns ``z``.
        dtype, rng: parameter dtype and initialisation generator (for ``proj``).
    """

    def __init__(
        self, d1: int, d2: int, d_out: int | None = None, *, dtype: object = np.float64, rng: RngLike = None
    ) -> None:
        self.d1 = positive_int("d1", d1)
        self.d2 = positive_int("d2", d2)
        self.dtype = as_float_dtype(dtype)
        self.fused_dim = (self.d1 + 1) * (self.d2 + 1)
        self.proj = None
        if d_out is not None:
            self.proj = Linear(
                self.fused_dim, positive_int("d_out", d_out), dtype=self.dtype, rng=as_generator(rng)
            )

    def forward(self, v1: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, TensorFusionCache]:
        """``v1 (B, d1)``, ``v2 (B, d2)`` -> ``(B, (d1+1)(d2+1))``, or ``(B, d_out)`` with ``proj``."""
        for name, v, d in (("v1", v1, self.d1), ("v2", v2, self.d2)):
            float_array(name, v, ndim=2)
            if v.shape[1] != d:
                raise ValueError(
                    f"{name}: expected shape (B, {d}) for TensorFusion({self.d1}, {self.d2}), got {v.shape}"
                )
            if v.dtype != self.dtype:
                raise TypeError(f"{name}: expected dtype {self.dtype} (the module's), got {v.dtype}")
        if v2.shape[0] != v1.shape[0]:
            raise ValueError(f"v2: expected batch size {v1.shape[0]} (as v1 {v1.shape}), got {v2.shape}")
        B = v1.shape[0]
        one = np.ones((B, 1), dtype=v1.dtype)
        u1 = np.concatenate([v1, one], axis=1)  # u1 = [v1; 1]   (B, d1+1)
        u2 = np.concatenate([v2, one], axis=1)  # u2 = [v2; 1]   (B, d2+1)
        z = (u1[:, :, None] * u2[:, None, :]).reshape(B, -1)  # z = flatten(u1 ⊗ u2)
        if self.proj is None:
            return z, TensorFusionCache(u1, u2, None)
        out, proj_cache = self.proj.forward(z)
        return out, TensorFusionCache(u1, u2, proj_cache)

    def backward(self, d_out: np.ndarray, cache: TensorFusionCache) -> tuple[np.ndarray, np.ndarray]:
        """``d_out (B, d_out or fused_dim)`` -> ``(d_v1 (B, d1), d_v2 (B, d2))``; adds into ``proj``."""
        expect_cache(cache, TensorFusionCache, "TensorFusion")
        u1, u2 = cache.u1, cache.u2
        if self.proj is None:
            d_z = grad_output(d_out, (u1.shape[0], self.fused_dim), u1.dtype)
        else:
            (d_z,) = self.proj.backward(d_out, cache.proj)  # out = proj(z)
        B = u1.shape[0]
        d_outer = d_z.reshape(B, u1.shape[1], u2.shape[1])  # z = flatten(outer): unflatten
        # outer[b, i, j] = u1[b, i] u2[b, j]  ->  d_u1 = Σ_j d_outer u2_j,  d_u2 = Σ_i d_outer u1_i
        d_u1 = np.einsum("bij,bj->bi", d_outer, u2)
        d_u2 = np.einsum("bij,bi->bj", d_outer, u1)
        # u = [v; 1]: the constant's gradient is dropped
        return d_u1[:, :-1], d_u2[:, :-1]

    def __repr__(self) -> str:
        proj = "" if self.proj is None else f", d_out={self.proj.d_out}"
        return f"TensorFusion(d1={self.d1}, d2={self.d2}{proj})"
