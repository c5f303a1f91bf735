"""The PyTorch bridge: every supported module round-trips (to_torch, then load_from_torch into a
fresh module, gives identical arrays), dtypes follow, and what it cannot map is refused."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mmt_numpy import nn
from mmt_numpy.checks import randomize
from mmt_numpy.torch_bridge import grads_from_torch, load_from_torch, mapping, to_torch

# name -> a constructor taking a seed; each builds one supported module
SUPPORTED = {
    "Linear": lambda s: nn.Linear(4, 3, rng=s),
    "Linear (no bias)": lambda s: nn.Linear(4, 3, bias=False, rng=s),
    "LayerNorm": lambda s: nn.LayerNorm(5, eps=1e-3),
    "MultiHeadAttention": lambda s: nn.MultiHeadAttention(8, 2, rng=s),
    "MultiHeadAttention (kv_dim)": lambda s: nn.MultiHeadAttention(8, 2, kv_dim=6, rng=s),
    "MultiHeadAttention (no bias)": lambda s: nn.MultiHeadAttention(8, 4, bias=False, rng=s),
    "TransformerEncoderLayer": lambda s: nn.TransformerEncoderLayer(8, 2, 12, True, "gelu_tanh", rng=s),
    "TransformerEncoder": lambda s: nn.TransformerEncoder(8, 2, 12, 2, final_norm=True, rng=s),
    "MultimodalTransformer (sinusoidal)": lambda s: nn.MultimodalTransformer(
        5, 7, 8, 2, 2, 3, max_len=9, rng=s
    ),
    "MultimodalTransformer (learned)": lambda s: nn.MultimodalTransformer(
        5, 7, 8, 2, 1, 3, max_len=9, positional="learned", rng=s
    ),
    "MultimodalTransformer (grid)": lambda s: (
        nn.ImageTextModel(
            20, 12, 6, hidden_dim=8, num_heads=2, max_len=9, image_grid=(3, 3), rng=s
        ).transformer
    ),
    "CoAttentionLayer": lambda s: nn.CoAttentionLayer(4, 6, 2, 5, activation="gelu", rng=s),
    "Embedding": lambda s: nn.Embedding(7, 4, rng=s),
    "LearnedPositionalEmbedding": lambda s: nn.LearnedPositionalEmbedding(9, 4, rng=s),
    "TransformerDecoderLayer": lambda s: nn.TransformerDecoderLayer(
        8, 2, 12, norm_first=True, activation="gelu", rng=s
    ),
    "TransformerDecoder": lambda s: nn.TransformerDecoder(8, 2, 12, 2, final_norm=True, rng=s),
    "TiedOutputProjection": lambda s: nn.TiedOutputProjection(nn.Embedding(7, 4, rng=s), bias=True),
}


@pytest.mark.parametrize("name", SUPPORTED)
def test_round_trip_gives_identical_arrays(name: str) -> None:
    pytest.importorskip("torch")
    source = randomize(SUPPORTED[name](0), 1)
    twin = to_torch(source)
    assert sum(p.numel() for p in twin.parameters()) == source.num_parameters()
    target = SUPPORTED[name](7)
    randomize(target, 8)  # every array different before the load
    load_from_torch(target, twin)
    for (n, p), (_, q) in zip(source.named_parameters(), target.named_parameters(), strict=True):
        np.testing.assert_array_equal(q.data, p.data, err_msg=n)
    # every parameter of ours has exactly one place in the twin
    assert sorted(e[0] for e in mapping(source)) == sorted(n for n, _ in source.named_parameters())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_twin_has_our_dtype_and_mode(dtype) -> None:
    torch = pytest.importorskip("torch")
    layer = nn.TransformerEncoderLayer(8, 2, 12, dropout=0.1, dtype=dtype, rng=0).eval()
    twin = to_torch(layer)
    expected = torch.float32 if dtype == np.float32 else torch.float64
    assert all(p.dtype == expected for p in twin.parameters())
    assert not twin.training
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(dtype)
    np.testing.assert_allclose(layer(x), twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_grads_come_back_under_our_names() -> None:
    torch = pytest.importorskip("torch")
    m = randomize(nn.MultiHeadAttention(8, 2, rng=0), 1)
    twin = to_torch(m)
    with pytest.raises(ValueError, match="run a backward through the twin first"):
        grads_from_torch(m, twin)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 3, 8)))
    twin(x, x, x)[0].sum().backward()
    grads = grads_from_torch(m, twin)
    assert list(grads) == ["W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o"]
    assert grads["W_q"].shape == m.W_q.shape


def test_what_has_no_twin_is_refused() -> None:
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match="module: expected one of Linear, LayerNorm, .*got Dropout"):
        to_torch(nn.Dropout(0.1))
    tied = nn.CoAttentionLayer(4, 4, 2, 5, rng=0)
    tied.image_cross_attn = tied.text_cross_attn
    with pytest.raises(ValueError, match="shares Parameters between submodules"):
        to_torch(tied)
    with pytest.raises(ValueError, match=r"twin: gamma has shape \(4, 4\), ours \(4,\)"):
        load_from_torch(nn.LayerNorm(4), to_torch(nn.Linear(4, 4, bias=False)))
    with pytest.raises(ValueError, match="twin: expected a parameter 'bias' \\(for our 'b'\\)"):
        load_from_torch(nn.Linear(4, 4), to_torch(nn.Linear(4, 4, bias=False)))


def test_without_torch_the_error_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match=r"needs PyTorch: pip install 'mmt-numpy\[parity\]'"):
        to_torch(nn.Linear(2, 2))
