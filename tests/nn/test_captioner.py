"""ImageCaptioner (§6.2): shapes and the tied table, its teacher-forcing loss gradient-checked
(label smoothing included) with broken backwards rejected, padded patches ignored, errors named."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks.decoder import caption_loss_case
from mmt_numpy.nn import CaptionLoss, ImageCaptioner, TiedOutputProjection


def small(dtype=np.float64, seed=0) -> ImageCaptioner:
    return ImageCaptioner(
        7, 6, (2, 2), bos_id=5, eos_id=6, d_model=8, num_heads=2, d_ff=12, max_len=6, dtype=dtype, rng=seed
    )


def test_shapes_and_the_tied_table():
    m = small()
    patches, ids = randn(0, 3, 4, 6), np.array([[5, 1, 2], [5, 3, 3], [5, 0, 0]])
    logits, cache = m.forward(patches, ids)
    assert logits.shape == (3, 3, 7)
    assert [w.shape for w in cache.cross_weights] == [(3, 2, 3, 4)] * 2  # (B, H, T, P) per decoder layer
    names = [n for n, _ in m.named_parameters()]
    assert "token_embedding.weight" in names and "output.weight" not in names  # one table, listed once
    assert m.output.weight is m.token_embedding.weight
    assert isinstance(m.output, TiedOutputProjection)
    (d_patches,) = m.backward(np.ones_like(logits), cache)
    assert d_patches.shape == patches.shape


def test_the_catalogue_case_passes():
    report = caption_loss_case()
    assert report.passed, str(report)
    assert "model.token_embedding.weight" in {t.name for t in report.tensors}


def test_checker_rejects_a_tied_projection_that_forgets_the_shared_table(monkeypatch):
    """logits = h Eᵀ: the table's gradient has two parts, the lookup's and the projection's."""

    def forgets_the_table(self, d_logits, cache):
        dh, _, db = nn.embedding.ops.linear_backward(d_logits, cache.linear)
        self.b.grad += db
        return (dh,)

    monkeypatch.setattr(TiedOutputProjection, "backward", forgets_the_table)
    report = caption_loss_case()
    assert {t.name for t in report.tensors if not t.passed} == {"model.token_embedding.weight"}, str(report)


def test_checker_rejects_a_loss_backward_without_the_smoothing(monkeypatch):
    real = CaptionLoss.backward

    def unsmoothed(self, d_loss, cache):
        return real(self, d_loss, cache._replace(loss=cache.loss._replace(label_smoothing=0.0)))

    monkeypatch.setattr(CaptionLoss, "backward", unsmoothed)
    assert not caption_loss_case(0.1).passed
    assert caption_loss_case(0.0).passed  # without smoothing the two backwards agree


def test_padded_patches_are_ignored():
    m = randomize(small(), 1)
    patches, ids = randn(2, 2, 4, 6), np.array([[5, 1, 2], [5, 3, 4]])
    junk = patches.copy()
    junk[1, 3] = 50.0
    lengths = np.array([4, 3])
    np.testing.assert_allclose(
        m(patches, ids, image_lengths=lengths), m(junk, ids, image_lengths=lengths), rtol=0, atol=1e-12
    )
    a, la = m.generate(patches, max_len=5, image_lengths=lengths)
    b, lb = m.generate(junk, max_len=5, image_lengths=lengths, use_cache=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(la, lb, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_dtype_out(dtype):
    m = small(dtype)
    patches = randn(3, 2, 4, 6).astype(dtype)
    loss = CaptionLoss(m, 0.1)
    out, cache = loss.forward(patches, np.array([[5, 1, 2]] * 2), np.array([[1, 2, 6]] * 2))
    (d_patches,) = loss.backward(1.0, cache)
    assert out.dtype == d_patches.dtype == dtype
    assert {p.grad.dtype for p in m.parameters()} == {np.dtype(dtype)}


def test_save_and_load_keep_the_tie(tmp_path):
    m = randomize(small(), 4)
    nn.save(m, tmp_path / "captioner.npz")
    fresh = small(seed=9)
    nn.load(fresh, tmp_path / "captioner.npz")
    assert fresh.output.weight is fresh.token_embedding.weight
    patches = randn(5, 2, 4, 6)
    np.testing.assert_array_equal(fresh.generate(patches, max_len=6)[0], m.generate(patches, max_len=6)[0])


def test_bad_input_is_named():
    m = small()
    patches = randn(6, 2, 4, 6)
    with pytest.raises(ValueError, match=r"ids: expected shape \(2, T\) \(a text per image\), got \(3, 2\)"):
        m.forward(patches, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(
        ValueError, match=r"ids: expected shape \(B, T\) with 1 <= T <= max_len=6, got \(2, 7\)"
    ):
        m.forward(patches, np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 7\)"):
        m.forward(patches, np.full((2, 2), 7))
    with pytest.raises(TypeError, match=r"ids: expected an integer dtype"):
        m.forward(patches, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"patches: expected 4 patches per image"):
        m.forward(randn(6, 2, 5, 6), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"image_lengths: expected values in \[0, 4\]"):
        m.forward(patches, np.zeros((2, 2), dtype=np.int64), image_lengths=np.array([5, 1]))
    with pytest.raises(ValueError, match=r"eos_id: expected a token id in \[0, 7\), got 7"):
        ImageCaptioner(7, 6, (2, 2), bos_id=5, eos_id=7)
    with pytest.raises(TypeError, match=r"model: expected an ImageCaptioner"):
        CaptionLoss(nn.Linear(2, 2))
