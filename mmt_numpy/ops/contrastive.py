"""Symmetric InfoNCE, the contrastive objective of CLIP (§2.2, "对比学习", contrastive learning).

A batch holds N matching pairs: text n belongs with image n.  Each embedding is first
scaled to unit length (so the score of a pair is its cosine similarity), every text is
scored against every image, and two cross-entropies ask that the right partner win::

    t̂_n = t_n / ‖t_n‖,   î_n = i_n / ‖i_n‖                 (N, D) each
    S = t̂ @ îᵀ / τ                                           (N, N), row = text, column = image
    L = ½ [ CE(S, diag) + CE(Sᵀ, diag) ]                      text→image and image→text

where ``CE(S, diag) = -(1/N) Σ_n log softmax(S[n])[n]``.  The normalisation is part of the
op (as in CLIP's code) and is differentiated here; τ is a fixed number, not learned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.ops.losses import log_softmax
from mmt_numpy.validate import float_array, grad_scalar, positive_number, same_dtype


class InfoNCECache(NamedTuple):
    t_hat: np.ndarray  # (N, D) unit text embeddings
    t_norm: np.ndarray  # (N, 1) ‖t‖
    i_hat: np.ndarray  # (N, D) unit image embeddings
    i_norm: np.ndarray  # (N, 1) ‖i‖
    scale: np.floating  # 1/τ in the inputs' dtype
    log_p_t2i: np.ndarray  # (N, N) log softmax over images, row = text
    log_p_i2t: np.ndarray  # (N, N) log softmax over texts, row = image


def _nonzero_rows(name: str, x: np.ndarray) -> None:
    """Refuse rows of zeros: a zero vector has no direction to normalise."""
    zero = np.flatnonzero(~np.any(x, axis=-1))
    if zero.size:
        raise ValueError(
            f"{name}: expected no row of zeros (it has no direction to normalise), "
            f"got zero rows {zero.tolist()}"
        )


def _normalize_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x̂ = x / ‖x‖`` row by row; returns ``x̂ (N, D)`` and the norms ``(N, 1)``.

    Each row is divided by its largest ``|x_j|`` first.  ``x̂`` does not change (it ignores the
    length of x), but the squares no longer underflow: a row of 1e-170 in float64 (about 1e-23
    in float32) squares to 0, and 0 / 0 would be NaN.  ``‖x‖ = m ‖x / m‖``.
    """
    largest = np.max(np.abs(x), axis=-1, keepdims=True)  # m, > 0: zero rows were refused
    scaled = x / largest
    scaled_norm = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))[:, None]
    return scaled / scaled_norm, largest * scaled_norm


def _normalize_backward(d_xhat: np.ndarray, xhat: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Gradient of ``x̂ = x / ‖x‖``: ``dx = (dx̂ − x̂ (x̂ · dx̂)) / ‖x‖``.

    ∂x̂_j/∂x_k = (δ_jk − x̂_j x̂_k) / ‖x‖: the component of dx̂ along x̂ is removed, because
    stretching x does not change x̂.
    """
    return (d_xhat - xhat * np.sum(xhat * d_xhat, axis=-1, keepdims=True)) / norm


def info_nce_forward(
    text_emb: np.ndarray, image_emb: np.ndarray, temperature: float = 0.07
) -> tuple[np.ndarray, InfoNCECache]:
    """Symmetric InfoNCE loss of N matching text–image pairs (row n of each is a pair).

    Args:
        text_emb: ``(N, D)`` text embeddings, N >= 1, no row of zeros.
        image_emb: ``(N, D)`` image embeddings, same N, D and dtype.
        temperature: τ > 0; smaller τ makes the softmax over the batch sharper.

    Returns:
        loss (a 0-d array of the inputs' dtype) and the cache for :func:`info_nce_backward`.
    """
    float_array("text_emb", text_emb, ndim=2)
    float_array("image_emb", image_emb, ndim=2)
    same_dtype(("text_emb", "image_emb"), (text_emb, image_emb))
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb: expected shape {text_emb.shape} (one image per text, as text_emb), "
            f"got {image_emb.shape}"
        )
    if text_emb.shape[0] < 1:
        raise ValueError(f"text_emb: expected at least one pair, got shape {text_emb.shape}")
    temperature = positive_number("temperature", temperature)
    _nonzero_rows("text_emb", text_emb)
    _nonzero_rows("image_emb", image_emb)
    t_hat, t_norm = _normalize_forward(text_emb)  # t̂ = t / ‖t‖
    i_hat, i_norm = _normalize_forward(image_emb)  # î = i / ‖i‖
    scale = text_emb.dtype.type(1.0 / temperature)
    logits = (t_hat @ i_hat.T) * scale  # S = t̂ îᵀ / τ
    N = logits.shape[0]
    diag = np.arange(N)
    log_p_t2i = log_softmax(logits)  # row n: text n over all images
    log_p_i2t = log_softmax(logits.T)  # row n: image n over all texts
    loss = -0.5 * (log_p_t2i[diag, diag].mean() + log_p_i2t[diag, diag].mean())
    cache = InfoNCECache(t_hat, t_norm, i_hat, i_norm, scale, log_p_t2i, log_p_i2t)
    return np.asarray(loss, dtype=text_emb.dtype), cache


def info_nce_backward(d_loss: np.ndarray | float, cache: InfoNCECache) -> tuple[np.ndarray, np.ndarray]:
    """``(d_text_emb (N, D), d_image_emb (N, D))`` for the scalar upstream gradient ``d_loss``."""
    t_hat, t_norm, i_hat, i_norm, scale = cache.t_hat, cache.t_norm, cache.i_hat, cache.i_norm, cache.scale
    log_p_t2i, log_p_i2t = cache.log_p_t2i, cache.log_p_i2t
    N = t_hat.shape[0]
    eye = np.eye(N, dtype=t_hat.dtype)
    d_loss = grad_scalar(d_loss, t_hat.dtype)
    # L = ½ [CE(S) + CE(Sᵀ)], CE(X) = -(1/N) Σ log softmax(X[n])[n]
    #   -> dS = (softmax(S) − I) / 2N  +  ((softmax(Sᵀ) − I) / 2N)ᵀ
    d_logits = (np.exp(log_p_t2i) - eye + (np.exp(log_p_i2t) - eye).T) * (d_loss / (2 * N))
    # S = t̂ îᵀ · (1/τ)  ->  dt̂ = dS î / τ,  dî = dSᵀ t̂ / τ
    d_t_hat = (d_logits @ i_hat) * scale
    d_i_hat = (d_logits.T @ t_hat) * scale
    # t̂ = t / ‖t‖, î = i / ‖i‖
    return _normalize_backward(d_t_hat, t_hat, t_norm), _normalize_backward(d_i_hat, i_hat, i_norm)


def info_nce_logits(text_emb: np.ndarray, image_emb: np.ndarray, temperature: float = 0.07) -> np.ndarray:
    """The ``(N, M)`` similarity matrix ``S = t̂ îᵀ / τ`` alone, for retrieval (no gradient).

    Row n ranks the M images for text n; ``argmax`` over a row is text→image retrieval.
    """
    float_array("text_emb", text_emb, ndim=2)
    float_array("image_emb", image_emb, ndim=2)
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"image_emb: expected width {text_emb.shape[1]} (as text_emb), got {image_emb.shape}"
        )
    _nonzero_rows("text_emb", text_emb)
    _nonzero_rows("image_emb", image_emb)
    t_hat, _ = _normalize_forward(text_emb)
    i_hat, _ = _normalize_forward(image_emb)
    return (t_hat @ i_hat.T) / positive_number("temperature", temperature)
