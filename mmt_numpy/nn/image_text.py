"""``ImageTextModel``: token ids and image patches through the §5 model (the VQA model of §6.1).

The §5 ``MultimodalTransformer`` takes feature vectors for both modalities; a question
arrives as token ids.  This model puts a word embedding in front of its ``text_embedding``,
so question tokens and image patches share one sequence, and a classifier reads the answer
at the ``[CLS]`` position (BERT's recipe).  The same model serves masked-token prediction
(§2.2) with ``output_dim = vocab_size``, read at the text positions.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import numpy as np

from mmt_numpy.nn.embedding import Embedding, EmbeddingCache, GridPositionalEmbedding
from mmt_numpy.nn.module import Module, RngLike, as_float_dtype, as_generator, expect_cache
from mmt_numpy.nn.multimodal import MultimodalCache, MultimodalTransformer
from mmt_numpy.validate import non_negative_number


class ImageTextCache(NamedTuple):
    token_embedding: EmbeddingCache
    transformer: MultimodalCache

    @property
    def weights(self) -> list[np.ndarray]:
        """Each encoder layer's attention weights ``(B, H, Lt+Li, Lt+Li)``."""
        return self.transformer.weights


class ImageTextModel(Module):
    """Token ids and image patches in, one output vector per position out.

    ``Embedding(vocab_size, hidden_dim)`` turns ids into vectors, then the §5
    ``MultimodalTransformer(hidden_dim, patch_dim, hidden_dim, ...)`` encodes text and
    patches together.  Read ``out[:, 0]`` (the ``[CLS]`` position) for a classifier, or
    ``out[:, :Lt]`` for masked-token prediction with ``output_dim = vocab_size``.

    Submodules: ``token_embedding``, ``transformer`` (the attention maps of a call are in its
    cache, ``cache.weights[i]``, ``(B, H, Lt+Li, Lt+Li)``).

    Image positions: by default ``transformer.image_position`` is the §5 model's learned
    1-D table over the patches in reading order.  With ``image_grid=(rows, columns)`` it is
    a :class:`~mmt_numpy.nn.GridPositionalEmbedding` instead (a learned row vector plus a
    learned column vector per patch), initialised at ``grid_std``, the order of the patch
    features it is added to (rms about 0.24 for the toy images at initialisation).  Spatial
    questions need it: with the 1-D table, initialised at 0.002, the column of a patch is
    all but invisible at first, and "left of" sits at chance for many epochs.

    Args:
        vocab_size: number of token ids.
        patch_dim: width of each image patch vector (``patch * patch * 3``).
        output_dim: width of each output vector (number of answers, or ``vocab_size``).
        hidden_dim, num_heads, num_layers, d_ff: the encoder's sizes.
        max_len: the longest text and the longest patch sequence accepted.
        image_grid: ``(rows, columns)`` of the patch grid for 2-D image positions; the image
            then has exactly ``rows * columns`` patches.  None: the 1-D table.
        grid_std: the initial standard deviation of the row and column vectors.
        dtype, rng: parameter dtype and initialisation generator.
    """

    def __init__(
        self,
        vocab_size: int,
        patch_dim: int,
        output_dim: int,
        *,
        hidden_dim: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        max_len: int = 16,
        image_grid: tuple[int, int] | None = None,
        grid_std: float = 0.3,
        dtype: object = np.float64,
        rng: RngLike = None,
    ) -> None:
        grid_std = non_negative_number("grid_std", grid_std)
        self.dtype = as_float_dtype(dtype)
        gen = as_generator(rng)
        self.token_embedding = Embedding(vocab_size, hidden_dim, dtype=self.dtype, rng=gen)
        self.transformer = MultimodalTransformer(
            hidden_dim,
            patch_dim,
            hidden_dim,
            num_heads,
            num_layers,
            output_dim,
            d_ff=d_ff,
            max_len=max_len,
            positional="learned",
            norm_first=True,
            final_norm=True,
            dtype=self.dtype,
            rng=gen,
        )
        # The word table starts at N(0, 1) (torch.nn.Embedding's default), far louder than the
        # patch features (rms ~0.24); shrink it tenfold.  The 1-D position tables start at
        # N(0, 0.02²) and are shrunk with it, to 0.002: fine for the text (these questions do
        # not need word order), but for the image it hides the column of a patch (see above).
        for p in (
            self.token_embedding.weight,
            self.transformer.text_position.weight,
            self.transformer.image_position.weight,
        ):
            p.data *= 0.1
        if image_grid is not None:
            # Same contract as the 1-D table (x -> x + positions, dx = d_out), so the §5 model
            # calls it unchanged; made last, so every other initial value stays the same.
            self.transformer.image_position = GridPositionalEmbedding(
                image_grid, hidden_dim, std=grid_std, dtype=self.dtype, rng=gen
            )
        # The sizes that rebuild this architecture (ImageTextModel.from_config), JSON-ready so
        # that save(..., config=) can store them beside the parameters; made last, once every
        # submodule has checked its argument.
        self.config = {
            "vocab_size": int(vocab_size),
            "patch_dim": int(patch_dim),
            "output_dim": int(output_dim),
            "hidden_dim": int(hidden_dim),
            "num_heads": int(num_heads),
            "num_layers": int(num_layers),
            "d_ff": int(d_ff),
            "max_len": int(max_len),
            "image_grid": None if image_grid is None else [int(image_grid[0]), int(image_grid[1])],
            "grid_std": float(grid_std),
            "dtype": self.dtype.name,
        }

    @classmethod
    def from_config(cls, config: dict, rng: RngLike = None) -> ImageTextModel:
        """A fresh model of the architecture described by ``config`` (a model's ``.config``).

        Raises:
            ValueError: naming the keys that are missing or not constructor arguments.
        """
        if not isinstance(config, dict):
            raise TypeError(
                f"config: expected a dict of ImageTextModel arguments, got {type(config).__name__}"
            )
        expected = set(inspect.signature(cls).parameters) - {"rng"}  # every argument but the seed
        missing, unknown = sorted(expected - set(config)), sorted(set(config) - expected)
        if missing or unknown:
            raise ValueError(
                f"config: expected the keys {sorted(expected)}; missing {missing}, unknown {unknown}"
            )
        kwargs = dict(config)
        grid = kwargs.pop("image_grid")
        return cls(
            kwargs.pop("vocab_size"),
            kwargs.pop("patch_dim"),
            kwargs.pop("output_dim"),
            image_grid=None if grid is None else tuple(grid),
            rng=rng,
            **kwargs,
        )

    def forward(
        self, ids: np.ndarray, patches: np.ndarray, text_lengths: np.ndarray | None = None
    ) -> tuple[np.ndarray, ImageTextCache]:
        """``ids (B, Lt)`` int, ``patches (B, Li, patch_dim)`` -> ``(B, Lt+Li, output_dim)`` and the cache.

        ``text_lengths (B,)`` counts the real tokens of each row; padded text positions
        (``>= text_lengths``) are masked out as keys.  ``cache.weights`` lists each layer's
        attention weights ``(B, H, Lt+Li, Lt+Li)``.
        """
        text, c_tokens = self.token_embedding.forward(ids)  # (B, Lt, hidden)
        out, c_transformer = self.transformer.forward(text, patches, text_lengths=text_lengths)
        return out, ImageTextCache(c_tokens, c_transformer)

    def backward(self, d_out: np.ndarray, cache: ImageTextCache) -> tuple[np.ndarray]:
        """``d_out (B, Lt+Li, output_dim)`` -> ``(d_patches,)`` (the integer ids get no entry)."""
        expect_cache(cache, ImageTextCache, "ImageTextModel")
        d_text, d_patches = self.transformer.backward(
            d_out, cache.transformer
        )  # out = transformer(text, patches)
        self.token_embedding.backward(d_text, cache.token_embedding)  # text = token_embedding(ids)
        return (d_patches,)


def cls_logits_backward(d_logits: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    """Gradient of reading the answer at ``[CLS]``, ``logits = out[:, 0]``.

    ``d_logits (B, C)`` is placed at position 0 of a zero ``(B, L, C)``: the other positions
    were not read, so they get no gradient.
    """
    d_out = np.zeros(out_shape, dtype=d_logits.dtype)
    d_out[:, 0] = d_logits  # logits = out[:, 0]
    return d_out
