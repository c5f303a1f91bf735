"""Reading PNG files into float RGB arrays with matplotlib, and shrinking them by average pooling."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg

from mmt_numpy.data.image_files import average_pool, read_png


def test_read_png_gives_float_rgb_whatever_the_file_holds(tmp_path):
    rgb = np.random.default_rng(0).uniform(size=(6, 5, 3))
    mpimg.imsave(tmp_path / "rgb.png", rgb)  # written as 8-bit RGBA
    image = read_png(tmp_path / "rgb.png")
    assert image.shape == (6, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, rgb, atol=1 / 255 + 1e-6)  # 8 bits a channel
    grey = np.linspace(0, 1, 12).reshape(3, 4)
    mpimg.imsave(tmp_path / "grey.png", grey, cmap="gray", vmin=0, vmax=1)
    image = read_png(tmp_path / "grey.png")
    assert image.shape == (3, 4, 3)
    np.testing.assert_allclose(image[..., 0], grey, atol=1 / 255 + 1e-6)  # 8 bits a channel


def test_read_png_refuses_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no such file"):
        read_png(tmp_path / "none.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ValueError, match="path: cannot read .* as a PNG image"):
        read_png(tmp_path / "text.png")


def test_average_pool_averages_blocks():
    images = np.arange(2 * 4 * 6 * 3, dtype=np.float64).reshape(2, 4, 6, 3)
    pooled = average_pool(images, 2)
    assert pooled.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(pooled[1, 0, 2], images[1, 0:2, 4:6].mean(axis=(0, 1)))
    assert average_pool(images, 1) is images
    assert average_pool(images.astype(np.float32), 2).dtype == np.float32
    with pytest.raises(ValueError, match="factor: expected a divisor of the height 4 and width 6, got 4"):
        average_pool(images, 4)
    with pytest.raises(ValueError, match="factor: expected a positive integer"):
        average_pool(images, 0)
