"""Pure forward/backward functions, one concept a file (the ``torch.nn.functional`` of mmt_numpy).

Every op is a pair ``*_forward(...) -> (out, cache)`` and ``*_backward(d_out, cache)``
returning the gradient of each differentiable input, in argument order.
"""

from mmt_numpy.ops.activations import (
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    softmax_backward,
    softmax_forward,
)
from mmt_numpy.ops.attention import attention_backward, attention_forward, causal_mask, padding_mask
from mmt_numpy.ops.contrastive import info_nce_backward, info_nce_forward, info_nce_logits
from mmt_numpy.ops.dropout import dropout_backward, dropout_forward
from mmt_numpy.ops.flash_attention import (
    flash_attention_backward,
    flash_attention_forward,
    flash_attention_mask,
)
from mmt_numpy.ops.layernorm import layernorm_backward, layernorm_forward
from mmt_numpy.ops.linear import linear_backward, linear_forward
from mmt_numpy.ops.losses import cross_entropy_backward, cross_entropy_forward, log_softmax
from mmt_numpy.ops.residual import residual_backward, residual_forward
from mmt_numpy.ops.rope import rope_backward, rope_forward

__all__ = [
    "attention_backward",
    "attention_forward",
    "causal_mask",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dropout_backward",
    "dropout_forward",
    "flash_attention_backward",
    "flash_attention_forward",
    "flash_attention_mask",
    "gelu_backward",
    "info_nce_backward",
    "info_nce_forward",
    "info_nce_logits",
    "gelu_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "log_softmax",
    "padding_mask",
    "relu_backward",
    "relu_forward",
    "residual_backward",
    "residual_forward",
    "rope_backward",
    "rope_forward",
    "softmax_backward",
    "softmax_forward",
]
