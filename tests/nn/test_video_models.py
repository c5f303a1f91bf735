"""Spectrogram patches, the context-attention fusion layer, the video QA model and VideoBERT:
what each computes (against a second way of computing it), the gradient checks with a
deliberately broken backward rejected, and bad input refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy import ops
from mmt_numpy.checks import randn, randomize
from mmt_numpy.checks.video import pretraining_case
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import TransformerEncoderLayer
from mmt_numpy.nn.context_attention import ContextAttentionLayer
from mmt_numpy.nn.spectrogram import SpectrogramPatchEmbedding
from mmt_numpy.nn.video_qa import VideoQAModel
from mmt_numpy.nn.videobert import VideoBERT, VideoBERTPretraining

# ---------------------------------------------------------------------- spectrogram patches


def test_spectrogram_tokens_are_projected_patches_plus_band_and_time_positions():
    m = randomize(SpectrogramPatchEmbedding(6, 4, (3, 2), 5, rng=0), 1)
    spec = randn(2, 2, 6, 4)
    out = m(spec)
    assert out.shape == (2, 4, 5) and m.grid == (2, 2)
    for r in range(2):
        for c in range(2):
            patch = spec[:, 3 * r : 3 * r + 3, 2 * c : 2 * c + 2].reshape(2, -1)
            expected = (
                patch @ m.projection.W.data
                + m.projection.b.data
                + m.position.row.data[r]
                + m.position.column.data[c]
            )
            np.testing.assert_allclose(out[:, 2 * r + c], expected, atol=1e-12)


class _UnpatchTransposed(SpectrogramPatchEmbedding):
    """Broken: puts each patch's gradient back with bins and frames swapped."""

    def backward(self, d_out, cache):
        (d_tokens,) = self.position.backward(d_out, cache.position)
        (d_patches,) = self.projection.backward(d_tokens, cache.projection)
        (R, C), (pf, pt) = self.grid, self.patch
        d = d_patches.reshape(-1, R, C, pt, pf).transpose(0, 1, 4, 2, 3)  # (pt, pf) instead of (pf, pt)
        return (d.reshape(-1, self.bins, self.frames),)


def test_a_transposed_unpatching_fails_the_check():
    broken = randomize(_UnpatchTransposed(6, 4, (3, 2), 5, rng=2), 3)
    assert not check_module(broken, {"spectrogram": randn(4, 2, 6, 4)}).passed


def test_spectrogram_embedding_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"patch: expected \(16, 10\) to tile a \(64, 61\) spectrogram"):
        SpectrogramPatchEmbedding(64, 61, (16, 10), 8)
    m = SpectrogramPatchEmbedding(6, 4, (3, 2), 5)
    with pytest.raises(ValueError, match=r"spectrogram: expected shape \(B, 6, 4\)"):
        m.forward(np.zeros((2, 4, 6)))
    with pytest.raises(TypeError, match="spectrogram: expected dtype float64"):
        m.forward(np.zeros((2, 6, 4), dtype=np.float32))


# ---------------------------------------------------------------------- context attention


def test_context_attention_is_a_single_stream_layer_computed_for_the_query_rows_only():
    D, Lx, Lc = 4, 3, 5
    ours = randomize(ContextAttentionLayer(D, 2, 6, rng=0), 1)
    full = TransformerEncoderLayer(D, 2, 6, norm_first=True, rng=2)
    # the same weights: attention, feed-forward, norms; the context normed by norm1 too
    for name, p in full.named_parameters():
        mine = name.replace("self_attn", "attn").replace("linear", "ff.linear")
        p.data[...] = dict(ours.named_parameters())[mine].data
    ours.norm_context.gamma.data[...] = ours.norm1.gamma.data
    ours.norm_context.beta.data[...] = ours.norm1.beta.data
    x, ctx = randn(3, 2, Lx, D), randn(4, 2, Lc, D)
    keep = ops.padding_mask([8, 6], 8)
    np.testing.assert_allclose(
        ours(x, ctx, keep), full(np.concatenate([x, ctx], axis=1), keep)[:, :Lx], atol=1e-12
    )


class _QueryNotAKey(ContextAttentionLayer):
    """Broken: forgets that x is also among the keys (drops that share of dx)."""

    def backward(self, d_out, cache):
        from mmt_numpy.nn.sublayer import sublayer_backward

        def attend_backward(d_y, c):
            d_h, d_kv = self.attn.backward(d_y, c)
            return d_h, d_kv[:, cache.Lx :]

        (d_h,) = sublayer_backward(d_out, cache.ff, self.ff.backward, self.norm2, self.dropout2)
        d_x, d_ctx = sublayer_backward(d_h, cache.attn, attend_backward, self.norm1, self.dropout1)
        (d_context,) = self.norm_context.backward(np.ascontiguousarray(d_ctx), cache.context_norm)
        return d_x, d_context


@pytest.mark.parametrize("norm_first", [True, False])
def test_a_dropped_key_path_fails_the_check(norm_first):
    broken = randomize(_QueryNotAKey(4, 2, 6, norm_first=norm_first, rng=5), 6)
    report = check_module(broken, {"x": randn(7, 2, 3, 4), "context": randn(8, 2, 5, 4)})
    assert not report.passed
    assert not next(t for t in report.tensors if t.name == "x").passed


def test_context_attention_refuses_mismatched_batches():
    m = ContextAttentionLayer(4, 2, 6)
    with pytest.raises(ValueError, match=r"context: expected batch size 2"):
        m.forward(np.zeros((2, 3, 4)), np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"mask: a 2-D mask must broadcast to \(3, 8\)"):
        m.forward(np.zeros((2, 3, 4)), np.zeros((2, 5, 4)), np.ones((3, 5), dtype=bool))


# ---------------------------------------------------------------------- the video QA model


def small_model(sound: bool = True, fusion: str = "context", seed: int = 0) -> VideoQAModel:
    m = VideoQAModel(
        12,
        5,
        patch_dim=5,
        grid=(2, 3),
        frames=3,
        spectrogram=(4, 6) if sound else None,
        audio_patch=(2, 3),
        d_model=4,
        num_heads=2,
        d_ff=6,
        video_layers=1,
        fusion_layers=2,
        fusion=fusion,
        max_len=5,
        rng=seed,
    )
    return randomize(m, seed + 1)


IDS = np.array([[1, 5, 6, 0], [1, 7, 8, 9], [1, 5, 5, 11]])
LENGTHS = np.array([3, 4, 4])


@pytest.mark.parametrize("fusion", ["context", "joint"])
def test_a_clip_shared_by_questions_is_the_same_as_copies_of_it(fusion):
    m = small_model(fusion=fusion)
    patches, spec = randn(1, 2, 3, 6, 5), randn(2, 2, 4, 6)
    shared = np.array([0, 1, 0])
    out, cache = m.forward(IDS, patches, spec, shared, LENGTHS)
    copies_out, copies_cache = m.forward(IDS, patches[shared], spec[shared], None, LENGTHS)
    np.testing.assert_allclose(out, copies_out, atol=1e-12)
    G = randn(3, 3, 5)
    m.zero_grad()
    d_patches, d_spec = m.backward(G, cache)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    m.zero_grad()
    d_copies, d_spec_copies = m.backward(G, copies_cache)
    np.testing.assert_allclose(d_patches[0], d_copies[0] + d_copies[2], atol=1e-12)  # clip 0 was asked twice
    np.testing.assert_allclose(d_spec[1], d_spec_copies[1], atol=1e-12)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(grads[n], p.grad, atol=1e-12, err_msg=n)


class _GatherOverwrites(VideoQAModel):
    """Broken: ``d[index] += d_rows`` is buffered, so a clip asked twice keeps one question's gradient."""

    def _gather_backward(self, d_rows, index, num):
        d = np.zeros((num, *d_rows.shape[1:]), dtype=d_rows.dtype)
        d[index] += d_rows
        return d


@pytest.mark.parametrize("sound", [True, False])
def test_a_gather_gradient_that_drops_repeats_fails_the_check(sound):
    broken = small_model(sound=sound)
    broken.__class__ = _GatherOverwrites
    inputs = {"ids": IDS, "patches": randn(1, 2, 3, 6, 5)}
    if sound:
        inputs["spectrogram"] = randn(2, 2, 4, 6)
    report = check_module(broken, inputs, kwargs={"clip_index": np.array([0, 1, 0]), "text_lengths": LENGTHS})
    assert not report.passed


def test_the_video_qa_model_refuses_mismatched_inputs():
    m = small_model()
    patches, spec = randn(1, 2, 3, 6, 5), randn(2, 2, 4, 6)
    with pytest.raises(ValueError, match=r"spectrogram: expected \(2, bins, frames\)"):
        m.forward(IDS, patches, None, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"clip_index: expected values in \[0, 2\)"):
        m.forward(IDS, patches, spec, np.array([0, 2, 0]))
    with pytest.raises(ValueError, match="clip_index: expected 3 integers"):
        m.forward(IDS, patches, spec, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"patches: expected \(C, T, N, patch_dim\)"):
        m.forward(IDS, patches[0], spec, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="patches: expected at least one frame"):
        m.forward(IDS, np.zeros((2, 0, 6, 5)), spec, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="spectrogram: expected None"):
        small_model(sound=False).forward(IDS, patches, spec, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="fusion: expected one of"):
        VideoQAModel(12, 5, patch_dim=5, grid=(2, 3), frames=3, spectrogram=None, fusion="late")


def test_without_sound_the_model_has_no_sound_parameters():
    names = [n for n, _ in small_model(sound=False).named_parameters()]
    assert not any(n.startswith("audio") for n in names)
    assert any(n.startswith("audio_embedding") for n, _ in small_model().named_parameters())


# ---------------------------------------------------------------------- VideoBERT


def test_videobert_reads_one_vocabulary_and_ties_its_output_layer():
    m = VideoBERT(9, 4, d_model=4, num_heads=2, d_ff=6, num_layers=1, max_len=8, rng=0)
    assert m.vocab_size == 13
    np.testing.assert_array_equal(m.word_ids(np.array([0, 3])), [9, 12])
    assert m.mlm_head.weight is m.token_embedding.weight
    assert sum(1 for n, _ in m.named_parameters() if n.endswith("weight") and "token_embedding" in n) == 1
    with pytest.raises(ValueError, match=r"words: expected integers in \[0, 4\)"):
        m.word_ids(np.array([4]))


class _NoContrastiveBackward(VideoBERTPretraining):
    """Broken: the InfoNCE term is in the loss but its gradient is never sent back."""

    def backward(self, d_loss, cache):
        m = self.model
        (d_h,) = m.mlm_head.backward(ops.cross_entropy_backward(d_loss, cache.mlm), cache.head)
        m.backward(d_h, cache.joint)
        return ()


def test_a_missing_contrastive_gradient_fails_the_check():
    report = pretraining_case(_NoContrastiveBackward)
    assert not report.passed
    failing = {t.name for t in report.tensors if not t.passed}
    assert {"model.text_projection.W", "model.video_projection.W"} <= failing
