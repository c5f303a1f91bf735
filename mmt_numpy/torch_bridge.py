"""The one bridge to PyTorch: our modules as ``torch.nn`` modules with the same weights, and back.

``to_torch(module)`` builds the PyTorch twin of a module and copies every parameter into it;
``load_from_torch(module, twin)`` copies a twin's parameters back; ``grads_from_torch(module,
twin)`` reads the twin's ``.grad`` under our names.  Tests, benchmarks and notebooks use these
three, so the weight mapping is written here and nowhere else.

The mapping, in words:

* PyTorch computes ``x @ weight.T``: every weight matrix is ours transposed
  (``Linear.W (d_in, d_out)`` is ``nn.Linear.weight (d_out, d_in)``ᵀ).
* ``nn.MultiheadAttention`` with equal widths stacks the three input projections in one
  ``in_proj_weight (3D, D)``: rows ``0:D`` are ``W_qᵀ``, ``D:2D`` are ``W_kᵀ``, ``2D:3D`` are
  ``W_vᵀ``, and ``in_proj_bias`` stacks ``b_q, b_k, b_v``; with another key/value width
  (``kdim``/``vdim``) the projections are ``q_proj_weight``, ``k_proj_weight``,
  ``v_proj_weight``.  ``out_proj`` is ``W_o``, ``b_o``.
* ``LayerNorm.gamma``/``beta`` are ``weight``/``bias``.
* Masks: ours say True = may attend; ``nn.MultiheadAttention``'s ``attn_mask`` and
  ``key_padding_mask`` say True = *ignore*.  :func:`torch_mask` flips one into the other.

Supported: ``Linear``, ``LayerNorm``, ``Embedding``, ``LearnedPositionalEmbedding`` (an
``nn.Embedding`` over positions), ``MultiHeadAttention``, ``TransformerEncoderLayer``,
``TransformerEncoder`` (not with ``share_layers``: ``nn.TransformerEncoder`` copies its layer),
``TransformerDecoderLayer`` (our ``cross_attn`` is PyTorch's ``multihead_attn``),
``TransformerDecoder``, ``TiedOutputProjection`` (an ``nn.Linear`` holding a copy of the table),
the §5 ``MultimodalTransformer`` (its PyTorch twin is :func:`twin_classes`'s
``MultimodalTransformer``) and ``CoAttentionLayer``.  A module with attention dropout has no
exact twin (ours has none); with ``dropout=0`` or in ``eval()`` the two compute the same.

PyTorch is imported only when a function here is called; without it the error says how to
install it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np

from mmt_numpy import nn as ours
from mmt_numpy.nn.module import Module

# (our parameter name, PyTorch parameter name, rows of the PyTorch tensor or None, transposed)
Entry = tuple[str, str, slice | None, bool]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "mmt_numpy.torch_bridge needs PyTorch: pip install 'mmt-numpy[parity]' "
            "(or pip install torch; on CPU-only machines the CPU wheel is enough)"
        ) from exc
    return torch


def torch_mask(mask: np.ndarray) -> Any:
    """Our mask (True = may attend) as ``nn.MultiheadAttention``'s masks (True = ignore).

    (``F.scaled_dot_product_attention`` uses our convention: pass it ``torch.from_numpy(mask)``.)
    """
    return _torch().from_numpy(~np.asarray(mask, dtype=bool))


# ----------------------------------------------------------------------------- the mapping


def _linear(o: str, t: str) -> list[Entry]:
    return [(o + "W", t + "weight", None, True), (o + "b", t + "bias", None, False)]


def _norm(o: str, t: str) -> list[Entry]:
    return [(o + "gamma", t + "weight", None, False), (o + "beta", t + "bias", None, False)]


def _mha(m: ours.MultiHeadAttention, o: str, t: str) -> list[Entry]:
    D = m.d_model
    thirds = [slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)]
    entries: list[Entry] = []
    for name, rows in zip(("q", "k", "v"), thirds, strict=True):
        if m.kv_dim == D:
            entries.append((f"{o}W_{name}", t + "in_proj_weight", rows, True))
        else:
            entries.append((f"{o}W_{name}", f"{t}{name}_proj_weight", None, True))
        entries.append((f"{o}b_{name}", t + "in_proj_bias", rows, False))
    return [
        *entries,
        (o + "W_o", t + "out_proj.weight", None, True),
        (o + "b_o", t + "out_proj.bias", None, False),
    ]


def _encoder_layer(layer: ours.TransformerEncoderLayer, o: str, t: str) -> list[Entry]:
    return [
        *_mha(layer.self_attn, o + "self_attn.", t + "self_attn."),
        *_linear(o + "linear1.", t + "linear1."),
        *_linear(o + "linear2.", t + "linear2."),
        *_norm(o + "norm1.", t + "norm1."),
        *_norm(o + "norm2.", t + "norm2."),
    ]


def _decoder_layer(layer: ours.TransformerDecoderLayer, o: str, t: str) -> list[Entry]:
    # self_attn, linear1, linear2, norm1, norm2 are named as in the encoder layer
    return [
        *_encoder_layer(layer, o, t),
        *_mha(layer.cross_attn, o + "cross_attn.", t + "multihead_attn."),
        *_norm(o + "norm3.", t + "norm3."),
    ]


def _encoder(enc: ours.TransformerEncoder, o: str, t: str) -> list[Entry]:
    entries = [
        e
        for i, layer in enumerate(enc.layers)
        for e in _encoder_layer(layer, f"{o}layers.{i}.", f"{t}layers.{i}.")
    ]
    return entries + _norm(o + "norm.", t + "norm.")


def _decoder(dec: ours.TransformerDecoder, o: str, t: str) -> list[Entry]:
    entries = [
        e
        for i, layer in enumerate(dec.layers)
        for e in _decoder_layer(layer, f"{o}layers.{i}.", f"{t}layers.{i}.")
    ]
    return entries + _norm(o + "norm.", t + "norm.")


def _multimodal(m: ours.MultimodalTransformer, o: str, t: str) -> list[Entry]:
    return [
        *_linear(o + "text_embedding.", t + "text_embedding."),
        *_linear(o + "image_embedding.", t + "image_embedding."),
        (o + "text_position.weight", t + "text_position.weight", None, False),
        (o + "image_position.weight", t + "image_position.weight", None, False),
        (o + "image_position.row", t + "image_position_row", None, False),
        (o + "image_position.column", t + "image_position_column", None, False),
        (o + "modality_embedding.weight", t + "modality_embedding.weight", None, False),
        *_encoder(m.encoder, o + "encoder.", t + "transformer_encoder."),
        *_linear(o + "output_layer.", t + "output_layer."),
    ]


def _coattention(m: ours.CoAttentionLayer, o: str, t: str) -> list[Entry]:
    entries: list[Entry] = []
    for s in ("text", "image"):
        entries += _mha(getattr(m, f"{s}_cross_attn"), f"{o}{s}_cross_attn.", f"{t}{s}_cross_attn.")
        entries += _norm(f"{o}{s}_norm1.", f"{t}{s}_norm1.") + _norm(f"{o}{s}_norm2.", f"{t}{s}_norm2.")
        entries += _linear(f"{o}{s}_ff.linear1.", f"{t}{s}_ff.0.") + _linear(
            f"{o}{s}_ff.linear2.", f"{t}{s}_ff.2."
        )
    return entries


def mapping(module: Module) -> list[Entry]:
    """Every parameter of ``module`` with its PyTorch twin's name: ``(ours, theirs, rows, transposed)``."""
    for kind, entries in _MAPPINGS.items():
        if type(module) is kind:
            present = dict(module.named_parameters())
            if sum(1 for _ in module._walk_parameters("")) != len(present):
                raise ValueError(
                    f"module: {type(module).__name__} shares Parameters between submodules; its PyTorch "
                    "twin would hold separate copies, so the bridge refuses it"
                )
            return [e for e in entries(module, "", "") if e[0] in present]
    raise TypeError(
        f"module: expected one of {', '.join(k.__name__ for k in _MAPPINGS)} for the PyTorch bridge, "
        f"got {type(module).__name__}"
    )


_MAPPINGS = {
    ours.Linear: lambda m, o, t: _linear(o, t),
    ours.LayerNorm: lambda m, o, t: _norm(o, t),
    ours.Embedding: lambda m, o, t: [(o + "weight", t + "weight", None, False)],
    # logits = h Eᵀ + b: nn.Linear(dim, vocab).weight (vocab, dim) is the table E itself
    ours.TiedOutputProjection: lambda m, o, t: [
        (o + "weight", t + "weight", None, False),
        (o + "b", t + "bias", None, False),
    ],
    ours.LearnedPositionalEmbedding: lambda m, o, t: [(o + "weight", t + "weight", None, False)],
    ours.MultiHeadAttention: _mha,
    ours.TransformerEncoderLayer: _encoder_layer,
    ours.TransformerEncoder: _encoder,
    ours.TransformerDecoderLayer: _decoder_layer,
    ours.TransformerDecoder: _decoder,
    ours.MultimodalTransformer: _multimodal,
    ours.CoAttentionLayer: _coattention,
}


# ----------------------------------------------------------------------------- the twins


def _activation(name: str) -> Any:
    torch = _torch()
    if name == "gelu_tanh":
        return lambda x: torch.nn.functional.gelu(x, approximate="tanh")
    return name  # "relu" and "gelu" (exact) are PyTorch's own names


@cache
def twin_classes() -> dict[str, type]:
    """The PyTorch modules that have no ``torch.nn`` counterpart: the §5 model and co-attention."""
    torch = _torch()
    tnn = torch.nn

    class MultimodalTransformer(tnn.Module):
        """The §5 model with mmt_numpy's fixes, in PyTorch: batch first, positions per modality,
        a modality embedding, key padding from per-row lengths."""

        def __init__(self, m: ours.MultimodalTransformer) -> None:
            super().__init__()
            D = m.hidden_dim
            self.text_embedding = tnn.Linear(m.text_dim, D)
            self.image_embedding = tnn.Linear(m.image_dim, D)
            self.positional = m.positional
            if m.positional == "learned":
                self.text_position = tnn.Embedding(m.max_len, D)
            else:
                self.register_buffer("pe", torch.from_numpy(m.text_position.table.astype(np.float64)))
            self.grid = isinstance(m.image_position, ours.GridPositionalEmbedding)
            if self.grid:
                rows, columns = m.image_position.grid
                self.image_position_row = tnn.Parameter(torch.zeros(rows, D))
                self.image_position_column = tnn.Parameter(torch.zeros(columns, D))
            elif m.positional == "learned":
                self.image_position = tnn.Embedding(m.max_len, D)
            self.modality_embedding = tnn.Embedding(2, D)
            self.transformer_encoder = _build(m.encoder)
            self.output_layer = tnn.Linear(D, m.output_dim)

        def _image_positions(self, Li: int) -> Any:
            if self.grid:
                return (self.image_position_row[:, None] + self.image_position_column[None]).reshape(Li, -1)
            if self.positional == "learned":
                return self.image_position(torch.arange(Li))
            return self.pe[:Li]

        def forward(self, text: Any, image: Any, text_lengths: Any = None, image_lengths: Any = None) -> Any:
            B, Lt, Li = text.shape[0], text.shape[1], image.shape[1]
            t = self.text_embedding(text)
            t = t + (self.text_position(torch.arange(Lt)) if self.positional == "learned" else self.pe[:Lt])
            v = self.image_embedding(image) + self._image_positions(Li)
            x = torch.cat((t, v), dim=1)  # batch first: dim 1 is the sequence
            types = torch.cat([torch.zeros(Lt, dtype=torch.long), torch.ones(Li, dtype=torch.long)])
            x = x + self.modality_embedding(types)
            tl = torch.full((B,), Lt) if text_lengths is None else torch.as_tensor(text_lengths)
            il = torch.full((B,), Li) if image_lengths is None else torch.as_tensor(image_lengths)
            ignore = torch.cat(
                [torch.arange(Lt)[None] >= tl[:, None], torch.arange(Li)[None] >= il[:, None]], dim=1
            )
            return self.output_layer(self.transformer_encoder(x, src_key_padding_mask=ignore))

    class CoAttentionLayer(tnn.Module):
        """ViLBERT co-attention from PyTorch parts: two ``nn.MultiheadAttention`` with ``kdim``/``vdim``."""

        def __init__(self, m: ours.CoAttentionLayer) -> None:
            super().__init__()
            for s, other in (("text", "image"), ("image", "text")):
                d, d_other = getattr(m, f"d_{s}"), getattr(m, f"d_{other}")
                attn = getattr(m, f"{s}_cross_attn")
                setattr(
                    self,
                    f"{s}_cross_attn",
                    tnn.MultiheadAttention(d, attn.num_heads, kdim=d_other, vdim=d_other, batch_first=True),
                )
                ff = getattr(m, f"{s}_ff")
                act = {"relu": tnn.ReLU(), "gelu": tnn.GELU(), "gelu_tanh": tnn.GELU(approximate="tanh")}
                setattr(self, f"{s}_norm1", tnn.LayerNorm(d, eps=getattr(m, f"{s}_norm1").eps))
                setattr(
                    self,
                    f"{s}_ff",
                    tnn.Sequential(tnn.Linear(d, m.d_ff), act[ff.activation.name], tnn.Linear(m.d_ff, d)),
                )
                setattr(self, f"{s}_norm2", tnn.LayerNorm(d, eps=getattr(m, f"{s}_norm2").eps))

        def _stream(self, s: str, x: Any, other: Any, other_lengths: Any) -> Any:
            ignore = None
            if other_lengths is not None:
                ignore = torch.arange(other.shape[1])[None] >= torch.as_tensor(other_lengths)[:, None]
            attended, _ = getattr(self, f"{s}_cross_attn")(x, other, other, key_padding_mask=ignore)
            x1 = getattr(self, f"{s}_norm1")(x + attended)
            return getattr(self, f"{s}_norm2")(x1 + getattr(self, f"{s}_ff")(x1))

        def forward(self, text: Any, image: Any, text_lengths: Any = None, image_lengths: Any = None) -> Any:
            return self._stream("text", text, image, image_lengths), self._stream(
                "image", image, text, text_lengths
            )

    return {"MultimodalTransformer": MultimodalTransformer, "CoAttentionLayer": CoAttentionLayer}


def _build(m: Module) -> Any:
    """A PyTorch module of the same structure as ``m`` (its parameters not yet copied)."""
    tnn = _torch().nn
    if isinstance(m, ours.Linear):
        return tnn.Linear(m.d_in, m.d_out, bias=m.b is not None)
    if isinstance(m, ours.LayerNorm):
        return tnn.LayerNorm(m.d, eps=m.eps)
    if isinstance(m, ours.MultiHeadAttention):
        bias = m.b_q is not None
        kv = None if m.kv_dim == m.d_model else m.kv_dim
        return tnn.MultiheadAttention(m.d_model, m.num_heads, bias=bias, kdim=kv, vdim=kv, batch_first=True)
    if isinstance(m, (ours.TransformerEncoderLayer, ours.TransformerDecoderLayer)):
        kind = (
            tnn.TransformerEncoderLayer
            if isinstance(m, ours.TransformerEncoderLayer)
            else tnn.TransformerDecoderLayer
        )
        return kind(
            m.d_model,
            m.self_attn.num_heads,
            m.d_ff,
            dropout=m.dropout.p,
            activation=_activation(m.activation.name),
            layer_norm_eps=m.norm1.eps,
            batch_first=True,
            norm_first=m.norm_first,
        )
    if isinstance(m, ours.TransformerEncoder):
        norm = None if m.norm is None else tnn.LayerNorm(m.norm.d, eps=m.norm.eps)
        return tnn.TransformerEncoder(
            _build(m.layers[0]), m.num_layers, norm=norm, enable_nested_tensor=False
        )
    if isinstance(m, ours.TransformerDecoder):
        norm = None if m.norm is None else tnn.LayerNorm(m.norm.d, eps=m.norm.eps)
        return tnn.TransformerDecoder(_build(m.layers[0]), m.num_layers, norm=norm)
    if isinstance(m, ours.Embedding):
        return tnn.Embedding(m.num_embeddings, m.dim)
    if isinstance(m, ours.LearnedPositionalEmbedding):
        return tnn.Embedding(m.max_len, m.dim)
    if isinstance(m, ours.TiedOutputProjection):
        return tnn.Linear(m.dim, m.vocab, bias=m.b is not None)
    if isinstance(m, (ours.MultimodalTransformer, ours.CoAttentionLayer)):
        return twin_classes()[type(m).__name__](m)
    raise TypeError(f"module: {type(m).__name__} has no PyTorch twin in the bridge")


# ----------------------------------------------------------------------------- copying


def _pairs(module: Module, twin: Any) -> Iterator[tuple[str, Any, Any, slice | None, bool]]:
    params = dict(module.named_parameters())
    theirs = dict(twin.named_parameters())
    for name, torch_name, rows, transposed in mapping(module):
        if torch_name not in theirs:
            raise ValueError(
                f"twin: expected a parameter {torch_name!r} (for our {name!r}); is it the right module?"
            )
        yield name, params[name], theirs[torch_name], rows, transposed


def to_torch(module: Module) -> Any:
    """The PyTorch twin of ``module`` with the same parameters and dtype (float64 or float32).

    The result is in the same train/eval mode.  Every parameter of the twin is written, and
    the count is checked: nothing of PyTorch's is left at its own initial value.
    """
    torch = _torch()
    mapping(module)  # refuses unsupported modules and shared Parameters before building anything
    twin = _build(module)
    dtype = module.parameters()[0].data.dtype
    twin = twin.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for _, p, t, rows, transposed in _pairs(module, twin):
            data = torch.from_numpy(np.ascontiguousarray(p.data.T if transposed else p.data))
            (t if rows is None else t[rows]).copy_(data)
    ours_count = module.num_parameters()
    theirs_count = sum(p.numel() for p in twin.parameters())
    if ours_count != theirs_count:
        raise AssertionError(f"bridge: {ours_count} parameters of ours against {theirs_count} of the twin")
    twin.train(module.training)
    return twin


def load_from_torch(module: Module, twin: Any) -> None:
    """Copy the parameters of a PyTorch twin (made by :func:`to_torch`, perhaps trained) into ``module``.

    In place (``p.data[...] = value``), so an optimiser holding our Parameters keeps working.
    """
    torch = _torch()
    with torch.no_grad():
        for name, p, t, rows, transposed in _pairs(module, twin):
            value = (t if rows is None else t[rows]).detach().cpu().numpy()
            value = value.T if transposed else value
            if value.shape != p.shape:
                raise ValueError(f"twin: {name} has shape {value.shape}, ours {p.shape}")
            p.data[...] = value


def grads_from_torch(module: Module, twin: Any) -> dict[str, np.ndarray]:
    """The twin's parameter gradients under our names and in our layout (after a PyTorch backward)."""
    grads = {}
    for name, _, t, rows, transposed in _pairs(module, twin):
        if t.grad is None:
            raise ValueError(f"twin: {name} has no gradient; run a backward through the twin first")
        g = (t.grad if rows is None else t.grad[rows]).detach().cpu().numpy()
        grads[name] = g.T if transposed else g
    return grads
