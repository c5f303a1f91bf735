"""Layer normalization over the last axis (§3.1, step 5).

μ = mean(x),  σ² = mean((x - μ)²)  (biased, as PyTorch),  x̂ = (x - μ) / √(σ² + ε)
out = γ ⊙ x̂ + β
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mmt_numpy.validate import float_array, grad_output, positive_number, same_dtype


class LayerNormCache(NamedTuple):
    x_hat: np.ndarray  # (..., D) the normalised input
    rstd: np.ndarray  # (..., 1) 1 / √(σ² + ε)
    gamma: np.ndarray  # (D,)


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, LayerNormCache]:
    """Normalise each row of x to zero mean and unit variance, then scale and shift.

    Args:
        x: ``(..., D)``.
        gamma: ``(D,)`` scale.
        beta: ``(D,)`` shift.
        eps: added to the variance inside the square root; keeps a constant row finite
            (its x̂ is 0, not 0/0).

    Returns:
        out ``(..., D)`` and the cache.
    """
    float_array("x", x, min_ndim=1)
    D = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        float_array(name, p, ndim=1)
        if p.shape != (D,):
            raise ValueError(f"{name}: expected shape ({D},) to match x {x.shape}, got {p.shape}")
    same_dtype(("x", "gamma", "beta"), (x, gamma, beta))
    eps = positive_number("eps", eps)
    mean = x.mean(axis=-1, keepdims=True)
    x_hat = x - mean  # centred for now; normalised in place two lines below
    # σ² as a row-wise dot product Σ (x - μ)² / D: einsum forms no (..., D) array of squares.
    var = np.einsum("...i,...i->...", x_hat, x_hat)[..., None] / D
    rstd = 1.0 / np.sqrt(var + eps)
    x_hat *= rstd  # in place: the centred values are not needed again
    out = x_hat * gamma
    out += beta  # in place: γ x̂ + β with one new array, not two
    return out, LayerNormCache(x_hat, rstd, gamma)


def layernorm_backward(d_out: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of layer norm.

    Derivation (per row, D features): with g = d_out ⊙ γ (the gradient reaching x̂),
    x̂ = (x - μ) r where r = (σ² + ε)^(-1/2) depends on x through μ and σ².  Collecting the
    three paths (direct, through μ, through σ²):

        dx = r (g - mean(g) - x̂ ⊙ mean(g ⊙ x̂))

    Returns:
        ``(dx (..., D), dgamma (D,), dbeta (D,))``.
    """
    x_hat, rstd, gamma = cache.x_hat, cache.rstd, cache.gamma
    grad_output(d_out, x_hat.shape, x_hat.dtype)
    D = x_hat.shape[-1]
    # out = x̂ γ + β  ->  dγ = Σ_rows d_out x̂,  dβ = Σ_rows d_out,  dx̂ = d_out γ
    # (einsum sums the products column by column without forming the (rows, D) product)
    d_rows = d_out.reshape(-1, D)
    dgamma = np.einsum("ij,ij->j", d_rows, x_hat.reshape(-1, D))
    dbeta = d_rows.sum(axis=0)
    g = d_out * gamma
    # x̂ = (x - μ) r  ->  the formula above.  Pass 1: the two row means (the second as a
    # row-wise dot product, no (..., D) temporary) ...
    mean_g = g.mean(axis=-1, keepdims=True)
    mean_g_xhat = np.einsum("...i,...i->...", g, x_hat)[..., None] / D
    # ... pass 2: dx = r (g - mean(g) - x̂ mean(g x̂)), built in g's buffer (g is not needed after).
    dx = g
    dx -= mean_g
    dx -= x_hat * mean_g_xhat
    dx *= rstd
    return dx, dgamma, dbeta
