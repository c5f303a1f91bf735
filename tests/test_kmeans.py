"""k-means with k-means++ seeding (the visual words of VideoBERT, §3.2): the objective never
increases, well-separated clusters are recovered exactly, seeds reproduce, k-means++ spreads
its seeds, empty clusters are refilled, and bad input is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.kmeans import assign, kmeans, kmeans_plus_plus, squared_distances


def blobs(seed: int, k: int = 5, per: int = 40, dim: int = 3, spread: float = 0.05):
    """k tight clusters around centres at least 1 apart: ``(points, true labels, centres)``."""
    rng = np.random.default_rng(seed)
    centres = np.eye(max(k, dim))[:k, :dim] * 3.0 + rng.uniform(-0.2, 0.2, (k, dim))
    if k > dim:  # more clusters than axes: put the extra ones on the negative axes
        centres[dim:] = -np.eye(dim)[: k - dim] * 3.0
    labels = np.repeat(np.arange(k), per)
    points = centres[labels] + spread * rng.standard_normal((k * per, dim))
    order = rng.permutation(len(points))
    return points[order], labels[order], centres


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings agree up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("seed", range(5))
def test_the_objective_never_increases(seed):
    # overlapping, unstructured data: many iterations, many chances to go wrong
    x = np.random.default_rng(seed).standard_normal((300, 4))
    result = kmeans(x, 7, seed=seed)
    history = np.array(result.history)
    assert len(history) >= 5
    assert np.all(np.diff(history) <= 1e-9 * history[0]), history
    assert result.converged
    # the reported inertia is the objective of the returned labels and centroids
    np.testing.assert_allclose(result.inertia, ((x - result.centroids[result.labels]) ** 2).sum(), rtol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_well_separated_clusters_are_recovered(seed):
    x, truth, centres = blobs(seed)
    result = kmeans(x, 5, seed=seed)
    assert same_partition(result.labels, truth)
    # each found centroid is the mean of one true cluster
    for j in range(5):
        members = x[result.labels == j]
        np.testing.assert_allclose(result.centroids[j], members.mean(axis=0), atol=1e-12)
    assert np.min(squared_distances(result.centroids, centres), axis=1).max() < 0.01


def test_the_same_seed_gives_the_same_clusters_and_another_seed_other_seeds():
    x = np.random.default_rng(0).standard_normal((200, 2))
    a, b = kmeans(x, 6, seed=3), kmeans(x, 6, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    seeds_3 = kmeans_plus_plus(x, 6, np.random.default_rng(3))
    seeds_4 = kmeans_plus_plus(x, 6, np.random.default_rng(4))
    assert not np.array_equal(seeds_3, seeds_4)


def test_kmeans_plus_plus_puts_one_seed_in_every_separated_cluster():
    x, truth, _ = blobs(1, k=6, per=30)
    for seed in range(10):
        seeds = kmeans_plus_plus(x, 6, np.random.default_rng(seed))
        labels_of_seeds = truth[[int(np.flatnonzero((x == s).all(axis=1))[0]) for s in seeds]]
        # D² sampling: once a cluster has a seed, its points are ~0.01 away and almost never drawn
        assert len(set(labels_of_seeds.tolist())) == 6, (seed, labels_of_seeds)


def test_more_inits_never_do_worse():
    x = np.random.default_rng(5).standard_normal((150, 3))
    one = kmeans(x, 8, seed=5, n_init=1)
    several = kmeans(x, 8, seed=5, n_init=6)
    assert several.inertia <= one.inertia + 1e-12


def test_an_empty_cluster_takes_the_worst_served_point():
    # 3 distinct locations, k = 3, but the seeds can only come from duplicates if drawn badly:
    # force two identical seeds, so one cluster is empty after the first assignment.
    x = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    from mmt_numpy.kmeans import _lloyd

    result = _lloyd(x, np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]]), 20)
    assert sorted(np.bincount(result.labels, minlength=3).tolist()) == [1, 1, 2]
    assert result.inertia == 0.0
    assert np.all(np.diff(result.history) <= 0)


def test_assign_picks_the_nearest_centroid_and_its_distance():
    x = np.array([[0.0, 0.0], [2.0, 2.0], [0.9, 0.0]])
    labels, dist = assign(x, np.array([[0.0, 0.0], [2.0, 2.0]]))
    assert labels.tolist() == [0, 1, 0]
    np.testing.assert_allclose(dist, [0.0, 0.0, 0.81])


def test_k_one_is_the_mean_and_k_n_is_zero_cost():
    x = np.random.default_rng(2).standard_normal((12, 3))
    np.testing.assert_allclose(kmeans(x, 1).centroids[0], x.mean(axis=0), atol=1e-12)
    assert kmeans(x, 12).inertia == pytest.approx(0.0, abs=1e-12)  # rounding of ‖x‖² − 2x·μ + ‖μ‖²


@pytest.mark.parametrize(
    ("x", "k", "error", "match"),
    [
        (np.zeros((4, 2)), 5, ValueError, r"k: expected at most 4 clusters"),
        (np.zeros((4, 2)), 0, ValueError, r"k: expected a positive integer"),
        (np.zeros(4), 2, ValueError, r"x: expected 2 dimensions"),
        (np.zeros((0, 2)), 1, ValueError, r"x: expected at least one point"),
        (np.array([[0.0, np.nan]]), 1, ValueError, r"x: expected finite values"),
        (np.zeros((3, 2), dtype=np.int64), 1, TypeError, r"x: expected dtype float32 or float64"),
    ],
)
def test_bad_input_is_refused_by_name(x, k, error, match):
    with pytest.raises(error, match=match):
        kmeans(x, k)


def test_float32_points_are_clustered_in_float64():
    x, truth, _ = blobs(3)
    result = kmeans(x.astype(np.float32), 5, seed=0)
    assert result.centroids.dtype == np.float64
    assert same_partition(result.labels, truth)
