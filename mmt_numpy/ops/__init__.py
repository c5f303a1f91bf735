"""Pure forward/backward functions, one concept a file (the ``torch.nn.functional`` of mmt_numpy).

Every op is a pair ``*_forward(...) -> (out, cache)`` and ``*_backward(d_out, cache)``
returning the gradient of each differentiable input, in argument order.  A cache is a
``NamedTuple`` (``LinearCache``, ``AttentionCache`` ...) read by field name; every backward
checks that ``d_out`` has the shape and dtype of the forward's output.
"""

from mmt_numpy.ops.activations import (
    GeluCache,
    ReluCache,
    SoftmaxCache,
    gelu_backward,
    gelu_forward,
    relu_backward,
    relu_forward,
    softmax_backward,
    softmax_forward,
)
from mmt_numpy.ops.alibi import alibi_bias, alibi_slopes
from mmt_numpy.ops.attention import (
    AttentionCache,
    attention_backward,
    attention_forward,
    causal_mask,
    padding_mask,
)
from mmt_numpy.ops.contrastive import InfoNCECache, info_nce_backward, info_nce_forward, info_nce_logits
from mmt_numpy.ops.dropout import DropoutCache, dropout_backward, dropout_forward
from mmt_numpy.ops.flash_attention import (
    FlashCache,
    flash_attention_backward,
    flash_attention_forward,
    flash_attention_mask,
    flash_attention_weights,
)
from mmt_numpy.ops.layernorm import LayerNormCache, layernorm_backward, layernorm_forward
from mmt_numpy.ops.linear import LinearCache, linear_backward, linear_forward
from mmt_numpy.ops.losses import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward, log_softmax
from mmt_numpy.ops.residual import ResidualCache, residual_backward, residual_forward
from mmt_numpy.ops.rope import RopeCache, rope_backward, rope_forward

__all__ = [
    "AttentionCache",
    "CrossEntropyCache",
    "DropoutCache",
    "FlashCache",
    "GeluCache",
    "InfoNCECache",
    "LayerNormCache",
    "LinearCache",
    "ReluCache",
    "ResidualCache",
    "RopeCache",
    "SoftmaxCache",
    "alibi_bias",
    "alibi_slopes",
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
    "flash_attention_weights",
    "gelu_backward",
    "gelu_forward",
    "info_nce_backward",
    "info_nce_forward",
    "info_nce_logits",
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
