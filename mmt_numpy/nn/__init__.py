"""Modules that own parameters and call the ops (the ``torch.nn`` of mmt_numpy)."""

from mmt_numpy.nn.attention import ArticleCrossAttention, MultiHeadAttention, PositionScheme
from mmt_numpy.nn.captioner import CaptionLoss, ImageCaptioner
from mmt_numpy.nn.coattention import CoAttentionLayer
from mmt_numpy.nn.decoder import TransformerDecoder, TransformerDecoderLayer
from mmt_numpy.nn.dialogue import DialogueEmbedding, DialogueLoss, DialogueModel
from mmt_numpy.nn.dropout import Dropout
from mmt_numpy.nn.embedding import (
    Embedding,
    GridPositionalEmbedding,
    LearnedPositionalEmbedding,
    ModalityEmbedding,
    SinusoidalPositionalEncoding,
    TiedOutputProjection,
)
from mmt_numpy.nn.encoder import TransformerEncoder, TransformerEncoderLayer
from mmt_numpy.nn.feedforward import Activation, FeedForward
from mmt_numpy.nn.fusion import FeatureFusion, TensorFusion, VectorFusion
from mmt_numpy.nn.image_text import ImageTextModel
from mmt_numpy.nn.kv_cache import KVCache, StreamingKVCache
from mmt_numpy.nn.layernorm import LayerNorm
from mmt_numpy.nn.linear import Linear
from mmt_numpy.nn.masks import module_mask
from mmt_numpy.nn.module import Module, Parameter
from mmt_numpy.nn.multimodal import MultimodalTransformer
from mmt_numpy.nn.reader import LongTextReader
from mmt_numpy.nn.serialization import load, load_config, load_state_dict, save, state_dict
from mmt_numpy.nn.unit import UniT

__all__ = [
    "Activation",
    "ArticleCrossAttention",
    "CaptionLoss",
    "CoAttentionLayer",
    "DialogueEmbedding",
    "DialogueLoss",
    "DialogueModel",
    "Dropout",
    "Embedding",
    "FeatureFusion",
    "FeedForward",
    "GridPositionalEmbedding",
    "ImageCaptioner",
    "ImageTextModel",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "Linear",
    "LongTextReader",
    "ModalityEmbedding",
    "Module",
    "MultiHeadAttention",
    "MultimodalTransformer",
    "Parameter",
    "PositionScheme",
    "SinusoidalPositionalEncoding",
    "StreamingKVCache",
    "TensorFusion",
    "TiedOutputProjection",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "UniT",
    "VectorFusion",
    "load",
    "load_config",
    "load_state_dict",
    "module_mask",
    "save",
    "state_dict",
]
