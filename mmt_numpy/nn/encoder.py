"""The Transformer encoder layer of §3.1 and a stack of them.

§3.1 lists the pieces in order: multi-head self-attention, the feed-forward network, the
residual connection, layer normalisation.  Each of the two sub-layers (attention, then
feed-forward) gets a residual connection and a layer norm; where the norm sits gives the
two variants ``torch.nn.TransformerEncoderLayer`` offers:

    post-LN (norm_first=False, the 2017 paper and §3.1's order):
        x = norm1(x + dropout1(self_attn(x)))
        x = norm2(x + dropout2(ff(x)))
    pre-LN (norm_first=True, GPT-2 and most large models; trains more stably when deep):
        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(ff(norm2(x)))

with ``ff(x) = linear2(dropout(activation(linear1(x))))``.
"""

from __future__ import annotations

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn.attention import MultiHeadAttention
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.feedforward import Activation
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator
from mmt_numpy.validate import module_input, positive_int


class TransformerEncoderLayer(Module):
    """One encoder layer: self-attention and feed-forward sub-layers, each with residual + norm.

    Submodules carry PyTorch's names, so ``named_parameters()`` lines up with
    ``nn.TransformerEncoderLayer.named_parameters()``: ``self_attn`` (W_q … b_o),
    ``linear1``, ``linear2``, ``norm1``, ``norm2``; and the parameter-free ``dropout``
    (inside the feed-forward), ``dropout1``, ``dropout2``, ``activation``.

    Difference from PyTorch: ``dropout`` is not applied to the attention weights
    (``self_attn`` has no dropout), so the two agree exactly when ``dropout=0`` or in
    evaluation mode, and otherwise differ only by that one dropout.

    Args:
        d_model: the width of x.
        num_heads: attention heads, dividing d_model.
        d_ff: hidden width of the feed-forward network.
        norm_first: False = post-LN, True = pre-LN (see the module docstring).
        activation: ``"relu"``, ``"gelu"`` (exact) or ``"gelu_tanh"``.
        dropout: probability for dropout1, dropout2 and the feed-forward dropout.
        layer_norm_eps: eps of both norms.
        dtype, rng: parameter dtype and the generator for initialisation and dropout masks.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-5,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.d_model = positive_int("d_model", d_model)
        self.d_ff = positive_int("d_ff", d_ff)
        self.norm_first = bool(norm_first)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.self_attn = MultiHeadAttention(self.d_model, num_heads, dtype=dtype, rng=gen)
        self.linear1 = Linear(self.d_model, self.d_ff, dtype=dtype, rng=gen)
        self.activation = Activation(activation)
        self.dropout = Dropout(dropout, rng=gen)
        self.linear2 = Linear(self.d_ff, self.d_model, dtype=dtype, rng=gen)
        self.norm1 = LayerNorm(self.d_model, layer_norm_eps, dtype=dtype)
        self.norm2 = LayerNorm(self.d_model, layer_norm_eps, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=gen)
        self.dropout2 = Dropout(dropout, rng=gen)

    # The two sub-layers, each a forward and its backward.

    def _attention_block(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return self.dropout1.forward(self.self_attn.forward(x, mask=mask))

    def _attention_block_backward(self, d_out: np.ndarray) -> np.ndarray:
        # out = dropout1(self_attn(x)); self-attention's backward returns the one gradient dx
        return self.self_attn.backward(self.dropout1.backward(d_out))

    def _ff_block(self, x: np.ndarray) -> np.ndarray:
        hidden = self.dropout.forward(self.activation.forward(self.linear1.forward(x)))
        return self.dropout2.forward(self.linear2.forward(hidden))

    def _ff_block_backward(self, d_out: np.ndarray) -> np.ndarray:
        # dropout2(linear2(dropout(activation(linear1(x))))), unwound from the outside in
        d_hidden = self.linear2.backward(self.dropout2.backward(d_out))
        return self.linear1.backward(self.activation.backward(self.dropout.backward(d_hidden)))

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Run the layer.

        Args:
            x: ``(B, L, d_model)``.
            mask: bool broadcastable to ``(B, H, L, L)``, True = may attend, e.g.
                ``ops.padding_mask(lengths, L)`` or ``ops.causal_mask(L)``.

        Returns:
            ``(B, L, d_model)``; ``self.self_attn.attn_weights`` holds ``(B, H, L, L)``.
        """
        owner = f"TransformerEncoderLayer(d_model={self.d_model})"
        module_input("x", x, self.d_model, self.norm1.dtype, owner, ndim=3)
        if self.norm_first:
            # x1 = x + dropout1(self_attn(norm1(x)))
            x1, cache_res1 = ops.residual_forward(x, self._attention_block(self.norm1.forward(x), mask))
            # x2 = x1 + dropout2(ff(norm2(x1)))
            x2, cache_res2 = ops.residual_forward(x1, self._ff_block(self.norm2.forward(x1)))
        else:
            # x1 = norm1(h1),  h1 = x + dropout1(self_attn(x))
            h1, cache_res1 = ops.residual_forward(x, self._attention_block(x, mask))
            x1 = self.norm1.forward(h1)
            # x2 = norm2(h2),  h2 = x1 + dropout2(ff(x1))
            h2, cache_res2 = ops.residual_forward(x1, self._ff_block(x1))
            x2 = self.norm2.forward(h2)
        self._cache = (cache_res1, cache_res2)
        return x2

    def backward(self, d_out: np.ndarray) -> np.ndarray:
        """``d_out (B, L, d_model)`` -> ``dx (B, L, d_model)``; adds into every parameter's ``.grad``.

        Every residual sends the gradient two ways, the identity path and the sub-layer
        path, and the two are added where x was used twice.
        """
        cache_res1, cache_res2 = self._saved()
        if self.norm_first:
            # x2 = x1 + dropout2(ff(norm2(x1)))
            d_x1, d_ff = ops.residual_backward(d_out, cache_res2)
            d_x1 = d_x1 + self.norm2.backward(self._ff_block_backward(d_ff))
            # x1 = x + dropout1(self_attn(norm1(x)))
            d_x, d_attn = ops.residual_backward(d_x1, cache_res1)
            return d_x + self.norm1.backward(self._attention_block_backward(d_attn))
        # x2 = norm2(h2),  h2 = x1 + dropout2(ff(x1))
        d_h2 = self.norm2.backward(d_out)
        d_x1, d_ff = ops.residual_backward(d_h2, cache_res2)
        d_x1 = d_x1 + self._ff_block_backward(d_ff)
        # x1 = norm1(h1),  h1 = x + dropout1(self_attn(x))
        d_h1 = self.norm1.backward(d_x1)
        d_x, d_attn = ops.residual_backward(d_h1, cache_res1)
        return d_x + self._attention_block_backward(d_attn)

    def __repr__(self) -> str:
        return (
            f"TransformerEncoderLayer(d_model={self.d_model}, num_heads={self.self_attn.num_heads}, "
            f"d_ff={self.d_ff}, norm_first={self.norm_first}, "
            f"activation={self.activation.name!r}, dropout={self.dropout.p})"
        )


class TransformerEncoder(Module):
    """``num_layers`` encoder layers in sequence, then an optional final LayerNorm.

    Submodules: ``layers`` (a list: parameters ``layers.0.self_attn.W_q`` …) and ``norm``
    (``None`` unless ``final_norm``).  A pre-LN stack wants ``final_norm=True``: its last
    residual sum is otherwise never normalised.  Every layer draws its own initial
    parameters from ``rng`` (PyTorch instead deep-copies one layer, so all its layers start
    equal); the same seed gives the same parameters.

    Args:
        d_model, num_heads, d_ff, norm_first, activation, dropout: as
            :class:`TransformerEncoderLayer`, for every layer.
        num_layers: how many layers.
        final_norm: add ``norm = LayerNorm(d_model)`` after the last layer.
        dtype, rng: parameter dtype and the generator.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        norm_first: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
        final_norm: bool = False,
        *,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        self.num_layers = positive_int("num_layers", num_layers)
        dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.layers = [
            TransformerEncoderLayer(
                d_model, num_heads, d_ff, norm_first, activation, dropout, dtype=dtype, rng=gen
            )
            for _ in range(self.num_layers)
        ]
        self.norm = LayerNorm(d_model, dtype=dtype) if final_norm else None

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``x (B, L, d_model)``, mask as the layer's -> ``(B, L, d_model)``."""
        for layer in self.layers:
            x = layer.forward(x, mask)
        if self.norm is not None:
            x = self.norm.forward(x)
        self._cache = True  # each layer keeps its own cache
        return x

    def backward(self, d_out: np.ndarray) -> np.ndarray:
        """``d_out (B, L, d_model)`` -> ``dx (B, L, d_model)``: the layers in reverse order."""
        self._saved()
        if self.norm is not None:
            d_out = self.norm.backward(d_out)  # x = norm(x)
        for layer in reversed(self.layers):
            d_out = layer.backward(d_out)  # x = layer(x, mask)
        return d_out

    @property
    def attn_weights(self) -> list[np.ndarray | None]:
        """The last forward's weights of every layer, each ``(B, H, L, L)``."""
        return [layer.self_attn.attn_weights for layer in self.layers]

    def __repr__(self) -> str:
        return (
            f"TransformerEncoder(num_layers={self.num_layers}, layer={self.layers[0]!r}, norm={self.norm!r})"
        )
