"""Reading images from PNG files into the ``(H, W, 3)`` float RGB arrays the models take.

matplotlib (already a dependency) reads PNG, so no image library is needed.  A PNG comes
back as float32 in [0, 1]: RGB as it is, RGBA without its alpha channel, a grey image
repeated into three channels.
"""

from __future__ import annotations

import os

import numpy as np

from mmt_numpy.validate import positive_int


def read_png(path: str | os.PathLike) -> np.ndarray:
    """The PNG at ``path`` as ``(H, W, 3)`` float32 RGB in [0, 1].

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a PNG matplotlib can read, or not a grey, RGB or RGBA image.
    """
    from matplotlib import image as mpimg

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r}")
    try:
        pixels = mpimg.imread(path, format="png")
    except (OSError, ValueError, SyntaxError) as error:  # PIL/matplotlib's errors for a bad file
        raise ValueError(f"path: cannot read {path!r} as a PNG image ({error})") from None
    if pixels.dtype.kind in "ui":  # a 16-bit PNG can come back as integers
        pixels = pixels / np.iinfo(pixels.dtype).max
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise ValueError(f"path: expected a grey, RGB or RGBA image in {path!r}, got shape {pixels.shape}")
    return np.ascontiguousarray(pixels[..., :3], dtype=np.float32)


def average_pool(images: np.ndarray, factor: int) -> np.ndarray:
    """Shrink ``(..., H, W, C)`` images by ``factor`` along H and W, averaging each block.

    Args:
        images: ``(..., H, W, C)`` floats, H and W divisible by ``factor``.
        factor: the block side; 1 returns the images unchanged.

    Returns:
        ``(..., H/factor, W/factor, C)`` of the same dtype.
    """
    factor = positive_int("factor", factor)
    if not isinstance(images, np.ndarray) or images.ndim < 3:
        raise ValueError(
            f"images: expected an array (..., H, W, C), got {getattr(images, 'shape', type(images).__name__)}"
        )
    *lead, H, W, C = images.shape
    if H % factor or W % factor:
        raise ValueError(f"factor: expected a divisor of the height {H} and width {W}, got {factor}")
    if factor == 1:
        return images
    blocks = images.reshape(*lead, H // factor, factor, W // factor, factor, C)
    return blocks.mean(axis=(-4, -2), dtype=images.dtype)
