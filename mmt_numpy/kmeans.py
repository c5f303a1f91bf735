"""k-means clustering with k-means++ seeding: how VideoBERT turns clips into words (§3.2).

VideoBERT cannot run BERT's masked-token prediction on video directly: a clip's features
are continuous vectors, and a softmax needs a vocabulary.  So it quantises them: cluster
the feature vectors of many clips with k-means and call the index of each clip's nearest
centroid its *visual word*.  A video becomes a sentence of visual words that BERT can mask
and predict like text.

Lloyd's algorithm minimises the within-cluster sum of squares ::

    J(c, μ) = Σ_i ‖x_i − μ_{c_i}‖²

by alternating two steps, each of which can only lower J (so J never increases):

* **assign**: ``c_i = argmin_j ‖x_i − μ_j‖²`` (for fixed centroids the best labels);
* **update**: ``μ_j = mean of the x_i with c_i = j`` (for fixed labels the mean minimises
  the squares).

It stops when no label changes.  A cluster left empty takes the point currently farthest
from its centroid (that point's cost drops to 0, so J still does not increase).

k-means++ (Arthur & Vassilvitskii, 2007) picks the first centroid uniformly and each next
one with probability proportional to ``D(x)²``, the squared distance to the nearest
centroid chosen so far: spread-out seeds, and an expected J within O(log k) of the optimum
before Lloyd's steps even start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmt_numpy.validate import float_array, positive_int


@dataclass
class KMeansResult:
    """The outcome of :func:`kmeans`.

    Attributes:
        centroids: ``(k, D)`` float64.
        labels: ``(n,)`` int64, the nearest centroid of every point.
        inertia: J, the sum of squared distances of the points to their centroids.
        history: J after every step (seeding, then each assign and each update), oldest first.
        iterations: Lloyd iterations run.
        converged: True when the labels stopped changing before ``max_iter``.
    """

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    history: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False


def _points(x: object) -> np.ndarray:
    x = float_array("x", x, ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"x: expected at least one point, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x: expected finite values, got NaN or infinity")
    return x.astype(np.float64, copy=False)


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(n, k)`` ``‖x_i − μ_j‖²``, as ``‖x‖² − 2 x·μ + ‖μ‖²`` (one matmul), clipped at 0."""
    d = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ centroids.T) + (centroids * centroids).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (n,), squared distance to that centroid (n,))`` for points ``x (n, D)``.

    Ties go to the lower centroid index.
    """
    x = _points(x)
    centroids = float_array("centroids", centroids, ndim=2)
    if centroids.shape[1] != x.shape[1]:
        raise ValueError(
            f"centroids: expected width {x.shape[1]} (as x {x.shape}), got shape {centroids.shape}"
        )
    d = squared_distances(x, centroids.astype(np.float64, copy=False))
    labels = d.argmin(axis=1)
    return labels, d[np.arange(len(x)), labels]


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, D)`` seeds drawn by k-means++ (``D(x)²`` sampling) from the points ``x (n, D)``."""
    x = _points(x)
    k = positive_int("k", k)
    if k > len(x):
        raise ValueError(f"k: expected at most {len(x)} clusters (one point each), got {k}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    chosen = [int(rng.integers(len(x)))]
    nearest = squared_distances(x, x[chosen])[:, 0]  # D(x)² to the seeds so far
    for _ in range(1, k):
        total = nearest.sum()
        # all remaining points coincide with a seed: any point will do
        i = int(rng.integers(len(x))) if total <= 0 else int(rng.choice(len(x), p=nearest / total))
        chosen.append(i)
        nearest = np.minimum(nearest, squared_distances(x, x[i : i + 1])[:, 0])
    return x[chosen].copy()


def kmeans(
    x: np.ndarray, k: int, *, seed: int | np.random.Generator = 0, max_iter: int = 100, n_init: int = 1
) -> KMeansResult:
    """Cluster ``x (n, D)`` into k groups: k-means++ seeds, then Lloyd's steps until no label moves.

    Args:
        x: ``(n, D)`` float points (computed in float64).
        k: clusters, ``1 <= k <= n``.
        seed: an int or a Generator; the same seed gives the same clusters.
        max_iter: the most Lloyd iterations per run.
        n_init: independent seedings; the run with the lowest J is returned.

    Returns:
        A :class:`KMeansResult`; ``history`` is non-increasing (each step can only lower J).
    """
    x = _points(x)
    k = positive_int("k", k)
    max_iter = positive_int("max_iter", max_iter)
    n_init = positive_int("n_init", n_init)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = _lloyd(x, kmeans_plus_plus(x, k, rng), max_iter)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def _lloyd(x: np.ndarray, centroids: np.ndarray, max_iter: int) -> KMeansResult:
    k = len(centroids)
    labels, dist = assign(x, centroids)
    history = [float(dist.sum())]  # J with the seeds
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        # update: μ_j = mean of its points, as one (k, n) one-hot matrix times x
        counts = np.bincount(labels, minlength=k)
        while (empty := np.flatnonzero(counts == 0)).size:
            # an empty cluster takes the worst-served point of a cluster that can spare one
            far = int(np.where(counts[labels] > 1, dist, -1.0).argmax())
            counts[labels[far]] -= 1
            labels[far], dist[far] = empty[0], 0.0
            counts[empty[0]] += 1
        one_hot = labels[None, :] == np.arange(k)[:, None]
        centroids = (one_hot.astype(np.float64) @ x) / counts[:, None]
        history.append(float(((x - centroids[labels]) ** 2).sum()))
        # assign: every point to its nearest centroid
        new_labels, dist = assign(x, centroids)
        history.append(float(dist.sum()))
        if np.array_equal(new_labels, labels):
            converged = True
            break
        labels = new_labels
    return KMeansResult(centroids, labels, history[-1], history, iterations, converged)
