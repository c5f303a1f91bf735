"""Embedding, the positional encodings (sinusoidal, learned, 2-D grid) and ModalityEmbedding:
values, PyTorch parity, errors, and gradient checks that must reject a broken backward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import (
    Embedding,
    GridPositionalEmbedding,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    SinusoidalPositionalEncoding,
)
from mmt_numpy.nn.embedding import sinusoidal_table

REPEATED_IDS = np.array([[1, 3, 1, 1], [0, 3, 4, 1]])  # id 1 four times, 3 twice, 2 never


# ---------------------------------------------------------------- Embedding


def test_embedding_looks_up_rows_and_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    ours = Embedding(5, 3, rng=0)
    theirs = torch.nn.Embedding(5, 3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
    out, cache = ours.forward(REPEATED_IDS)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[1, 2], ours.weight.data[4])
    G = randn(1, 2, 4, 3)
    assert ours.backward(G, cache) == ()  # integer ids have no gradient
    (theirs(torch.from_numpy(REPEATED_IDS)) * torch.from_numpy(G)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=0, atol=1e-12)
    assert not ours.weight.grad[2].any()  # id 2 was never looked up
    np.testing.assert_allclose(ours.weight.grad[1], G[0, 0] + G[0, 2] + G[0, 3] + G[1, 3], atol=1e-12)


def test_embedding_gradient_check_passes_with_repeated_ids() -> None:
    m = Embedding(5, 3, rng=2)
    report = check_module(m, {"ids": REPEATED_IDS}, name="Embedding")
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["weight"]  # the ids are skipped, not checked


def test_checker_rejects_fancy_index_accumulation(monkeypatch) -> None:
    """``grad[ids] += d_out`` keeps one write per repeated id instead of summing them all."""
    m = Embedding(5, 3, rng=3)

    def fancy_backward(d_out, cache):
        m.weight.grad[cache.ids] += d_out  # the bug: buffered, so repeats overwrite each other
        return ()

    monkeypatch.setattr(m, "backward", fancy_backward)
    report = check_module(m, {"ids": REPEATED_IDS}, name="Embedding, fancy +=")
    assert not report.passed, str(report)
    # With unique ids the same code is right, which is why the case needs repeats.
    assert check_module(m, {"ids": np.array([[0, 1, 2, 3]])}, name="unique ids").passed


def test_embedding_errors_name_the_argument() -> None:
    m = Embedding(5, 3)
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 5\) .*got values from 0 to 5"):
        m.forward(np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 5\) .*from -1"):
        m.forward(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match=r"ids: expected an integer dtype .*got float64"):
        m.forward(np.array([[0.0, 1.0]]))
    with pytest.raises(TypeError, match=r"ids: expected an integer numpy array, got list"):
        m.forward([[0, 1]])
    with pytest.raises(TypeError, match="cache: expected the EmbeddingCache that Embedding.forward returned"):
        Embedding(5, 3).backward(np.zeros((1, 2, 3)), None)
    _, cache = m.forward(np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"d_out: expected shape \(1, 2, 3\) \(the forward output's\)"):
        m.backward(np.zeros((1, 2, 4)), cache)
    with pytest.raises(ValueError, match=r"num_embeddings: expected a positive integer, got 0"):
        Embedding(0, 3)


def test_embedding_float32_and_seed() -> None:
    m = Embedding(4, 2, dtype=np.float32, rng=7)
    assert m(np.array([[0, 3]])).dtype == np.float32
    np.testing.assert_array_equal(Embedding(4, 2, rng=7).weight.data, Embedding(4, 2, rng=7).weight.data)
    assert not np.array_equal(Embedding(4, 2, rng=7).weight.data, Embedding(4, 2, rng=8).weight.data)


# ---------------------------------------------------------------- positional encodings


def test_sinusoidal_table_is_the_formula() -> None:
    table = sinusoidal_table(7, 6)
    for pos in range(7):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert math.isclose(table[pos, 2 * i], math.sin(angle), abs_tol=1e-15)
            assert math.isclose(table[pos, 2 * i + 1], math.cos(angle), abs_tol=1e-15)
    odd = sinusoidal_table(4, 5)  # odd width: three sine columns, two cosine columns
    assert odd.shape == (4, 5)
    np.testing.assert_allclose(odd[:, 4], np.sin(np.arange(4) / 10000 ** (4 / 5)), atol=1e-15)


def test_sinusoidal_shift_is_a_rotation_of_each_pair() -> None:
    """PE[pos + k] is PE[pos] rotated, pair by pair, by an angle that depends on k only."""
    table = sinusoidal_table(20, 8)
    k = 3
    freq = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    c, s = np.cos(k * freq), np.sin(k * freq)
    sin_pos, cos_pos = table[:-k, 0::2], table[:-k, 1::2]
    np.testing.assert_allclose(table[k:, 0::2], sin_pos * c + cos_pos * s, atol=1e-12)
    np.testing.assert_allclose(table[k:, 1::2], cos_pos * c - sin_pos * s, atol=1e-12)


def test_sinusoidal_encoding_adds_the_table_and_passes_the_gradient() -> None:
    m = SinusoidalPositionalEncoding(6, 4)
    x = randn(9, 2, 3, 4)
    out, cache = m.forward(x)
    np.testing.assert_array_equal(out, x + sinusoidal_table(6, 4)[:3])
    G = randn(10, 2, 3, 4)
    assert m.backward(G, cache)[0] is G
    assert m.parameters() == []


def test_positional_dtypes() -> None:
    x32 = randn(11, 1, 2, 4).astype(np.float32)
    assert SinusoidalPositionalEncoding(4, 4, dtype=np.float32)(x32).dtype == np.float32
    assert LearnedPositionalEmbedding(4, 4, dtype=np.float32)(x32).dtype == np.float32
    with pytest.raises(TypeError, match=r"x: expected dtype float64"):
        SinusoidalPositionalEncoding(4, 4)(x32)


def test_learned_positions_gradient_sums_over_the_batch_and_stops_at_L() -> None:
    m = LearnedPositionalEmbedding(6, 4, rng=12)
    x = randn(13, 2, 3, 4)
    out, cache = m.forward(x)
    np.testing.assert_array_equal(out, x + m.weight.data[:3])
    G = randn(14, 2, 3, 4)
    assert m.backward(G, cache)[0] is G
    np.testing.assert_allclose(m.weight.grad[:3], G.sum(0), atol=1e-12)
    assert not m.weight.grad[3:].any()


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEmbedding])
def test_positions_refuse_sequences_longer_than_max_len(cls) -> None:
    with pytest.raises(ValueError, match=r"x: sequence length 7 exceeds max_len=6 .*got shape \(1, 7, 4\)"):
        cls(6, 4).forward(np.zeros((1, 7, 4)))
    with pytest.raises(ValueError, match=r"x: expected last dimension 4 .*got shape \(1, 2, 5\)"):
        cls(6, 4).forward(np.zeros((1, 2, 5)))


def test_checker_passes_and_rejects_a_dropped_positional_path(monkeypatch) -> None:
    m = LearnedPositionalEmbedding(6, 4, rng=15)
    m.weight.data[...] = randn(16, 6, 4)
    inputs = {"x": randn(17, 2, 4, 4)}
    assert check_module(m, inputs, name="learned").passed
    monkeypatch.setattr(m, "backward", lambda d_out, cache: (d_out,))  # the bug: weight.grad never filled
    report = check_module(m, inputs, name="learned, no weight gradient")
    assert {t.name for t in report.tensors if not t.passed} == {"weight"}, str(report)


def test_checker_rejects_a_sinusoidal_backward_that_drops_the_identity(monkeypatch) -> None:
    m = SinusoidalPositionalEncoding(6, 4)
    inputs = {"x": randn(18, 2, 3, 4)}
    assert check_module(m, inputs, name="sinusoidal").passed
    monkeypatch.setattr(m, "backward", lambda d_out, cache: (d_out - sinusoidal_table(6, 4)[:3],))
    assert not check_module(m, inputs, name="sinusoidal, table subtracted").passed


# ---------------------------------------------------------------- GridPositionalEmbedding


def test_grid_positions_add_row_plus_column_in_reading_order() -> None:
    m = GridPositionalEmbedding((2, 3), 4, std=0.5, rng=30)
    x = randn(31, 2, 6, 4)
    out, cache = m.forward(x)
    for n in range(6):  # patch n sits in row n // 3, column n % 3
        np.testing.assert_allclose(out[:, n], x[:, n] + m.row.data[n // 3] + m.column.data[n % 3], atol=1e-12)
    np.testing.assert_allclose(
        m.table()[[0, 3]] - m.table()[[1, 4]],  # same column difference in
        np.tile(m.column.data[0] - m.column.data[1], (2, 1)),
        atol=1e-12,
    )  # both rows
    assert np.std(m.row.data) == pytest.approx(0.5, rel=0.5)
    G = randn(32, 2, 6, 4)
    assert m.backward(G, cache)[0] is G
    np.testing.assert_allclose(m.column.grad[2], G[:, [2, 5]].sum(axis=(0, 1)), atol=1e-12)
    np.testing.assert_allclose(m.row.grad[1], G[:, 3:].sum(axis=(0, 1)), atol=1e-12)


@pytest.mark.parametrize("grid", [(2, 3), (3, 3)])
def test_grid_positions_gradient_check(grid) -> None:
    m = randomize(GridPositionalEmbedding(grid, 4, rng=33), 34)
    report = check_module(m, {"x": randn(35, 2, grid[0] * grid[1], 4)}, name=f"grid {grid}")
    assert report.passed, str(report)
    assert [t.name for t in report.tensors] == ["x", "row", "column"]


def test_checker_rejects_grid_positions_with_rows_and_columns_swapped(monkeypatch) -> None:
    """The axis mix-up: each row gets the sum over a *column*.  On a square grid the shapes
    agree, so only the numbers can catch it."""
    m = randomize(GridPositionalEmbedding((3, 3), 4, rng=36), 37)

    def swapped_backward(d_out, cache):
        d_grid = d_out.sum(axis=0).reshape(3, 3, 4)
        m.row.grad += d_grid.sum(axis=0)  # the bug: should sum over axis 1 (the columns of a row)
        m.column.grad += d_grid.sum(axis=1)
        return (d_out,)

    monkeypatch.setattr(m, "backward", swapped_backward)
    report = check_module(m, {"x": randn(38, 2, 9, 4)}, name="grid, axes swapped")
    assert {t.name for t in report.tensors if not t.passed} == {"row", "column"}, str(report)


def test_grid_positions_float32_and_errors() -> None:
    m = GridPositionalEmbedding((3, 3), 4, dtype=np.float32, rng=39)
    assert m(np.zeros((1, 9, 4), np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"x: expected 9 patches \(a 3x3 grid in reading order\).*\(1, 8, 4"):
        m.forward(np.zeros((1, 8, 4), np.float32))
    with pytest.raises(TypeError, match=r"x: expected dtype float32"):
        m.forward(np.zeros((1, 9, 4)))
    with pytest.raises(TypeError, match=r"grid: expected a pair \(rows, columns\), got 9"):
        GridPositionalEmbedding(9, 4)
    with pytest.raises(ValueError, match=r"grid\[1\]: expected a positive integer, got 0"):
        GridPositionalEmbedding((3, 0), 4)
    with pytest.raises(ValueError, match=r"std: expected a number >= 0, got -1"):
        GridPositionalEmbedding((3, 3), 4, std=-1)
    with pytest.raises(TypeError, match="cache: expected the PositionCache that GridPositionalEmbedding"):
        GridPositionalEmbedding((3, 3), 4).backward(np.zeros((1, 9, 4)), None)


# ---------------------------------------------------------------- ModalityEmbedding


@pytest.mark.parametrize(
    "modality", [1, np.array([0, 0, 1]), np.array([[0, 1, 1], [1, 1, 0]])], ids=["int", "(L,)", "(B, L)"]
)
def test_modality_embedding_adds_the_type_vector(modality) -> None:
    m = ModalityEmbedding(2, 4, rng=19)
    x = randn(20, 2, 3, 4)
    ids = np.broadcast_to(np.asarray(modality), (2, 3))
    out, cache = m.forward(x, modality)
    np.testing.assert_array_equal(out, x + m.weight.data[ids])
    G = randn(21, 2, 3, 4)
    assert m.backward(G, cache)[0] is G
    for t in (0, 1):
        np.testing.assert_allclose(m.weight.grad[t], G[ids == t].sum(0), atol=1e-12)
    report = check_module(m, {"x": x}, kwargs={"modality": modality}, name="modality")
    assert report.passed, str(report)


def test_checker_rejects_modality_gradient_by_assignment(monkeypatch) -> None:
    m = ModalityEmbedding(2, 4, rng=22)
    inputs, kwargs = {"x": randn(23, 2, 5, 4)}, {"modality": np.array([0, 0, 1, 1, 1])}

    def assigning_backward(d_out, cache):
        m.weight.grad[cache.ids] += d_out  # the bug: repeats overwrite instead of summing
        return (d_out,)

    monkeypatch.setattr(m, "backward", assigning_backward)
    report = check_module(m, inputs, kwargs=kwargs, name="modality, fancy +=")
    assert {t.name for t in report.tensors if not t.passed} == {"weight"}, str(report)


def test_modality_errors() -> None:
    m = ModalityEmbedding(2, 4)
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"modality: expected ids in \[0, 2\)"):
        m.forward(x, 2)
    with pytest.raises(ValueError, match=r"modality: expected an int, shape \(3,\) or \(2, 3\) .*\(4,\)"):
        m.forward(x, np.array([0, 1, 1, 0]))
    with pytest.raises(TypeError, match=r"modality: expected an integer dtype"):
        m.forward(x, np.array([0.0, 1.0, 1.0]))
