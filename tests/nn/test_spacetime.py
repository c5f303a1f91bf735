"""Space-time attention (§6.3): joint attention is attention over the flattened clip, time and
space attention are attention over each patch position and each frame (checked against loops),
divided attention composes them; all match PyTorch's attention composed the same way (float64,
1e-10, outputs and every gradient); padded frames are never attended; time positions break
the frames' symmetry and without them the encoder commutes with reordering the frames; every
gradient check rejects a deliberately broken backward; bad input is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from mmt_numpy.checks import randn, randomize
from mmt_numpy.gradcheck import check_module
from mmt_numpy.nn import MultiHeadAttention
from mmt_numpy.nn.spacetime import (
    DividedSpaceTimeAttention,
    JointSpaceTimeAttention,
    SpaceAttention,
    SpaceTimePositionalEmbedding,
    TimeAttention,
    divided_reach,
)
from mmt_numpy.nn.sublayer import sublayer_backward
from mmt_numpy.nn.video import SpaceTimeEncoderLayer, VideoEncoder
from mmt_numpy.torch_bridge import grads_from_torch, to_torch

B, T, N, D, H = 2, 3, 6, 4, 2


def clip(seed: int = 0) -> np.ndarray:
    return randn(seed, B, T, N, D)


# ---------------------------------------------------------------------- values


def test_joint_attention_is_attention_over_the_flattened_clip():
    m = randomize(JointSpaceTimeAttention(D, H, rng=0), 1)
    x = clip()
    out, cache = m.forward(x)
    np.testing.assert_array_equal(out, m.attn(x.reshape(B, T * N, D)).reshape(B, T, N, D))
    assert cache.weights.shape == (B, H, T * N, T * N)


def test_time_attention_runs_one_sequence_per_patch_position():
    m = randomize(TimeAttention(D, H, rng=0), 1)
    x = clip()
    out, cache = m.forward(x)
    for n in range(N):  # the loop the batched reshape replaces
        np.testing.assert_allclose(out[:, :, n], m.attn(np.ascontiguousarray(x[:, :, n])), atol=1e-12)
    assert cache.weights.shape == (B, N, H, T, T)


def test_space_attention_runs_one_sequence_per_frame():
    m = randomize(SpaceAttention(D, H, rng=0), 1)
    x = clip()
    out, cache = m.forward(x)
    for t in range(T):
        np.testing.assert_allclose(out[:, t], m.attn(x[:, t]), atol=1e-12)
    assert cache.weights.shape == (B, T, H, N, N)


def test_divided_attention_is_space_after_time_and_reaches_every_token():
    m = randomize(DividedSpaceTimeAttention(D, H, rng=0), 1)
    x = clip()
    out, cache = m.forward(x)
    np.testing.assert_allclose(out, m.space(m.time(x)), atol=1e-12)
    reach = divided_reach(cache)  # (B, T, N, T, N)
    np.testing.assert_allclose(reach.sum(axis=(3, 4)), 1.0, atol=1e-12)
    assert np.all(reach > 0)  # two steps connect every pair of tokens


def _torch_reference(torch, kind, twins, x):
    """The same composition in PyTorch, with nn.MultiheadAttention twins."""

    def mha(twin, seq):
        return twin(seq, seq, seq, need_weights=False)[0]

    if kind == "joint":
        return mha(twins[0], x.reshape(B, T * N, D)).reshape(B, T, N, D)
    time_seq = x.permute(0, 2, 1, 3).reshape(B * N, T, D)
    y = mha(twins[0], time_seq).reshape(B, N, T, D).permute(0, 2, 1, 3)
    if kind == "time":
        return y
    return mha(twins[1], y.reshape(B * T, N, D)).reshape(B, T, N, D)


@pytest.mark.parametrize("kind", ["joint", "time", "divided"])
def test_matches_pytorch_attention_composed_the_same_way(kind):
    torch = pytest.importorskip("torch")
    module = {"joint": JointSpaceTimeAttention, "time": TimeAttention, "divided": DividedSpaceTimeAttention}[
        kind
    ]
    m = randomize(module(D, H, rng=2), 3)
    attns = [m.time.attn, m.space.attn] if kind == "divided" else [m.attn]
    twins = [to_torch(a) for a in attns]
    x, upstream = clip(4), randn(5, B, T, N, D)
    out, cache = m.forward(x)
    m.zero_grad()
    (dx,) = m.backward(upstream, cache)
    xt = torch.tensor(x, requires_grad=True)
    theirs = _torch_reference(torch, kind, twins, xt)
    theirs.backward(torch.from_numpy(upstream))
    np.testing.assert_allclose(out, theirs.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    for ours, twin in zip(attns, twins, strict=True):
        for name, g in grads_from_torch(ours, twin).items():
            np.testing.assert_allclose(
                dict(ours.named_parameters())[name].grad, g, rtol=0, atol=1e-10, err_msg=name
            )


@pytest.mark.parametrize("kind", [JointSpaceTimeAttention, TimeAttention, DividedSpaceTimeAttention])
def test_padded_frames_are_never_attended_and_change_nothing_real(kind):
    m = randomize(kind(D, H, rng=6), 7)
    x = clip(8)
    lengths = np.array([3, 1])
    out, cache = m.forward(x, frame_lengths=lengths)
    weights = cache.weights if kind is not DividedSpaceTimeAttention else cache.time.weights
    if kind is JointSpaceTimeAttention:
        assert np.all(weights[1, :, :, N:] == 0)  # clip 1 has one real frame: N real keys
    else:
        assert np.all(weights[1, :, :, :, 1:] == 0)
    changed = x.copy()
    changed[1, 1:] = 100.0  # rewrite the padding
    again = m(changed, frame_lengths=lengths)
    np.testing.assert_allclose(again[1, :1], out[1, :1], atol=1e-12)  # the real frame does not notice
    np.testing.assert_allclose(again[0], out[0], atol=1e-12)


# ---------------------------------------------------------------------- positions


def test_positions_add_a_grid_vector_per_patch_and_a_time_vector_per_frame():
    m = randomize(SpaceTimePositionalEmbedding((2, 3), 5, D, time="learned", rng=9), 10)
    x = clip(11)
    out = m(x)
    expected = x + m.grid.table()[None, None] + m.time.data[:T][None, :, None]
    np.testing.assert_allclose(out, expected, atol=1e-12)
    sinus = SpaceTimePositionalEmbedding((2, 3), 5, D, time="sinusoidal", rng=9)
    assert sinus.time is None and sinus.time_table.shape == (5, D)
    assert [n for n, _ in sinus.named_parameters()] == ["grid.row", "grid.column"]  # the table is constant
    none = SpaceTimePositionalEmbedding((2, 3), 5, D, time="none", rng=9)
    assert none.time_vectors(T) is None


def test_without_time_positions_the_encoder_does_not_know_the_order_of_frames():
    x = randn(12, B, T, N, 5)
    order = np.array([2, 0, 1])
    for attention in ("divided", "joint"):
        blind = VideoEncoder(5, (2, 3), 4, D, H, 6, 2, attention=attention, time_positions="none", rng=13)
        np.testing.assert_allclose(blind(x[:, order]), blind(x)[:, order], atol=1e-12)
        timed = VideoEncoder(5, (2, 3), 4, D, H, 6, 2, attention=attention, time_positions="learned", rng=13)
        assert not np.allclose(timed(x[:, order]), timed(x)[:, order], atol=1e-6)


def test_the_encoder_layer_has_three_sublayers_when_divided_and_two_when_joint():
    divided = SpaceTimeEncoderLayer(D, H, 6, attention="divided", rng=0)
    joint = SpaceTimeEncoderLayer(D, H, 6, attention="joint", rng=0)
    names = {n.split(".")[0] for n, _ in divided.named_parameters()}
    assert names == {"attn", "ff", "norm1", "norm2", "norm3"}
    assert {n.split(".")[0] for n, _ in joint.named_parameters()} == {"attn", "ff", "norm1", "norm2"}
    out, cache = divided.forward(clip())
    time_w, space_w = cache.weights
    assert time_w.shape == (B, N, H, T, T) and space_w.shape == (B, T, H, N, N)


def test_float32_in_float32_out():
    m = VideoEncoder(5, (2, 3), 4, D, H, 6, 1, dtype=np.float32, rng=0)
    out, cache = m.forward(randn(0, B, T, N, 5).astype(np.float32))
    assert out.dtype == np.float32
    (d,) = m.backward(np.ones_like(out), cache)
    assert d.dtype == np.float32


# ---------------------------------------------------------------------- negative controls


class _TimeForgetsTheTranspose(TimeAttention):
    """Broken: un-flattens the gradient as if the sequences were (B, T, N), not (B, N, T)."""

    def backward(self, d_out, cache):
        B_, T_, N_, D_ = cache.shape
        (d_seqs,) = self.attn.backward(d_out.transpose(0, 2, 1, 3).reshape(B_ * N_, T_, D_), cache.attn)
        return (d_seqs.reshape(B_, T_, N_, D_),)


class _TimeGradientOnFirstFrameOnly(SpaceTimePositionalEmbedding):
    """Broken: every frame's time gradient is added to frame 0's vector."""

    def backward(self, d_out, cache):
        B_, T_, N_, D_ = cache.shape
        self.time.grad[0] += d_out.sum(axis=(0, 1, 2))
        self.grid.backward(d_out.reshape(B_ * T_, N_, D_), cache.grid)
        return (d_out,)


class _DividedSkipsTime(DividedSpaceTimeAttention):
    """Broken: the gradient goes back through space attention only."""

    def backward(self, d_out, cache):
        return self.space.backward(d_out, cache.space)


class _JointDropsTheLastFrame(JointSpaceTimeAttention):
    """Broken: the gradient of the last frame's tokens is thrown away."""

    def backward(self, d_out, cache):
        d_out = d_out.copy()
        d_out[:, -1] = 0.0
        return super().backward(d_out, cache)


class _SpaceReshapesFramesWrongly(SpaceAttention):
    """Broken: un-flattens the (B*T, N, D) gradient as if the sequences ran (T, B), not (B, T)."""

    def backward(self, d_out, cache):
        B_, T_, N_, D_ = cache.shape
        (dx,) = self.attn.backward(d_out.reshape(B_ * T_, N_, D_), cache.attn)
        return (dx.reshape(T_, B_, N_, D_).transpose(1, 0, 2, 3),)


class _LayerSkipsTheResidual(SpaceTimeEncoderLayer):
    """Broken: the feed-forward sub-layer's identity path is left out of the gradient."""

    def backward(self, d_out, cache):
        norm, drop = self._ff_norm()
        (d_x,) = sublayer_backward(d_out, cache.ff, self.ff.backward, norm, drop)
        d_x = d_x - d_out  # drops x from x + ff(norm(x))
        for (attn, _, norm, drop), c in zip(reversed(self._steps()), reversed(cache.attn), strict=True):
            (d_x,) = sublayer_backward(d_x, c, attn.backward, norm, drop)
        return (d_x,)


class _EncoderForgetsThePositions(VideoEncoder):
    """Broken: the time and grid vectors get no gradient (the position backward is skipped)."""

    def backward(self, d_out, cache):
        (d_z,) = self.norm.backward(d_out, cache.norm)
        for layer, c in zip(reversed(self.layers), reversed(cache.layers), strict=True):
            (d_z,) = layer.backward(d_z, c)
        return self.patch_embedding.backward(d_z, cache.patch_embedding)


@pytest.mark.parametrize(
    ("broken", "inputs", "kwargs"),
    [
        (lambda: randomize(_JointDropsTheLastFrame(D, H, rng=1), 2), {"x": clip(3)}, {}),
        (lambda: randomize(_SpaceReshapesFramesWrongly(D, H, rng=1), 2), {"x": clip(3)}, {}),
        (
            lambda: randomize(_LayerSkipsTheResidual(D, H, 6, attention="divided", rng=1), 2),
            {"x": clip(3)},
            {},
        ),
        (
            lambda: randomize(_EncoderForgetsThePositions(5, (2, 3), 4, D, H, 6, 1, rng=1), 2),
            {"patches": randn(3, B, T, N, 5)},
            {},
        ),
        (lambda: randomize(_TimeForgetsTheTranspose(D, H, rng=1), 2), {"x": clip(3)}, {}),
        (lambda: randomize(_TimeGradientOnFirstFrameOnly((2, 3), 5, D, rng=1), 2), {"x": clip(3)}, {}),
        (lambda: randomize(_DividedSkipsTime(D, H, rng=1), 2), {"x": clip(3)}, {}),
    ],
    ids=[
        "joint attention, last frame's gradient dropped",
        "space attention, frames un-flattened in the wrong order",
        "encoder layer, feed-forward residual dropped",
        "video encoder, position gradient skipped",
        "time attention, transposed gradient",
        "time positions, all into frame 0",
        "divided, time step dropped",
    ],
)
def test_the_checker_rejects_a_broken_backward(broken, inputs, kwargs):
    report = check_module(broken(), inputs, kwargs=kwargs)
    assert not report.passed, str(report)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((2, 0, 6, D)), r"x: expected at least one frame and one patch"),
        (np.zeros((2, 3, D)), r"x: expected 4 dimensions"),
        (np.zeros((2, 3, 6, D + 1)), r"x: expected last dimension 4"),
    ],
)
def test_attention_refuses_bad_clips(x, match):
    with pytest.raises(ValueError, match=match):
        JointSpaceTimeAttention(D, H, rng=0).forward(x)


def test_positions_refuse_too_many_frames_and_the_wrong_grid():
    m = SpaceTimePositionalEmbedding((2, 3), 2, D, rng=0)
    with pytest.raises(ValueError, match=r"3 frames exceed max_frames=2"):
        m.forward(clip())
    with pytest.raises(ValueError, match=r"expected 6 patches a frame \(a 2x3 grid\)"):
        m.forward(np.zeros((1, 2, 5, D)))
    with pytest.raises(ValueError, match="time: expected one of"):
        SpaceTimePositionalEmbedding((2, 3), 2, D, time="relative")
    with pytest.raises(TypeError, match="expected dtype float64"):
        m.forward(np.zeros((1, 2, 6, D), dtype=np.float32))


def test_frame_lengths_are_checked():
    m = TimeAttention(D, H, rng=0)
    with pytest.raises(ValueError, match=r"frame_lengths: expected values in \[0, 3\]"):
        m.forward(clip(), frame_lengths=np.array([4, 1]))
    with pytest.raises(ValueError, match="frame_lengths: expected 2 integer lengths"):
        m.forward(clip(), frame_lengths=np.array([3]))


def test_caches_are_checked():
    m = SpaceAttention(D, H, rng=0)
    out, cache = m.forward(clip())
    with pytest.raises(TypeError, match="cache: expected the SpaceAttentionCache"):
        m.backward(out, out)
    with pytest.raises(ValueError, match="d_out: expected shape"):
        m.backward(out[:, :1], cache)
    with pytest.raises(ValueError, match="attention: expected one of"):
        SpaceTimeEncoderLayer(D, H, 6, attention="axial")


def test_multihead_attention_is_the_building_block():
    m = DividedSpaceTimeAttention(D, H, rng=0)
    assert isinstance(m.time.attn, MultiHeadAttention) and isinstance(m.space.attn, MultiHeadAttention)
    assert m.time.attn is not m.space.attn  # two sets of weights
