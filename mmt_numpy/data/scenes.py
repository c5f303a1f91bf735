"""Scenes of coloured shapes on a board, their images, patches, questions and captions.

A *scene* places two or three shapes (square, circle, triangle, each at most once) in the
cells of a ``grid x grid`` board and gives each a colour.  :func:`render` draws it as an RGB
image, :func:`patchify` cuts images into ViT patch tokens, :func:`questions` asks the toy VQA
questions of §6.1 about it and :func:`caption` describes it (§2.2, §6.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmt_numpy.validate import positive_int

SHAPES = ("square", "circle", "triangle")
COLOURS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}


@dataclass(frozen=True)
class Scene:
    """Shapes on a board: ``objects`` is a tuple of ``(shape, colour, row, col)``, one per shape."""

    objects: tuple[tuple[str, str, int, int], ...]

    def find(self, shape: str) -> tuple[str, str, int, int]:
        for obj in self.objects:
            if obj[0] == shape:
                return obj
        raise KeyError(shape)


def random_scene(rng: np.random.Generator, grid: int = 3) -> Scene:
    """Two or three distinct shapes in distinct cells of a ``grid x grid`` board, random colours."""
    n = int(rng.integers(2, len(SHAPES) + 1))
    shapes = rng.permutation(len(SHAPES))[:n]
    cells = rng.permutation(grid * grid)[:n]
    colours = rng.integers(0, len(COLOURS), size=n)
    names = list(COLOURS)
    objects = tuple(
        sorted(
            (SHAPES[s], names[c], int(cell) // grid, int(cell) % grid)
            for s, c, cell in zip(shapes, colours, cells, strict=True)
        )
    )
    return Scene(objects)


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(size, size)`` bool stencil of one shape, with a random scale (jitter)."""
    c = (size - 1) / 2
    r = size * rng.uniform(0.3, 0.42)  # half-width of the shape
    y, x = np.mgrid[0:size, 0:size]
    if shape == "square":
        return (np.abs(y - c) <= r) & (np.abs(x - c) <= r)
    if shape == "circle":
        return (y - c) ** 2 + (x - c) ** 2 <= (r + 0.5) ** 2
    # triangle, apex up: rows from c - r to c + r, half-width growing from 0 to r
    t = (y - (c - r)) / (2 * r)
    return (t >= 0) & (t <= 1) & (np.abs(x - c) <= r * t + 0.5)


def render(scene: Scene, rng: np.random.Generator, grid: int = 3, cell: int = 8) -> np.ndarray:
    """The scene as a float64 RGB image ``(grid*cell, grid*cell, 3)`` in [0, 1].

    Each shape fills most of its cell; sizes and colours are jittered a little by ``rng`` so
    that no two renderings are pixel-identical.
    """
    size = grid * cell
    image = np.zeros((size, size, 3))
    for shape, colour, row, col in scene.objects:
        stencil = _shape_mask(shape, cell, rng)
        rgb = np.clip(np.array(COLOURS[colour]) + rng.uniform(-0.08, 0.08, 3), 0.0, 1.0)
        image[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell][stencil] = rgb
    return image


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """Cut images into non-overlapping squares and flatten each (ViT's patch tokens).

    Args:
        images: ``(N, H, W, C)`` with H and W divisible by ``patch``.
        patch: the side of each square patch, in pixels.

    Returns:
        ``(N, (H/patch) * (W/patch), patch*patch*C)``: patches in reading order (row by
        row), each flattened row-major over (pixel row, pixel column, channel).
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(
            f"images: expected an array (N, H, W, C), got {getattr(images, 'shape', type(images).__name__)}"
        )
    N, H, W, C = images.shape
    patch = positive_int("patch", patch)
    if H % patch or W % patch:
        raise ValueError(f"patch: expected a divisor of the image height {H} and width {W}, got {patch}")
    gh, gw = H // patch, W // patch
    x = images.reshape(N, gh, patch, gw, patch, C)  # split each axis into (grid, within-patch)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (N, gh, gw, patch, patch, C)
    return x.reshape(N, gh * gw, patch * patch * C)


def questions(scene: Scene) -> list[tuple[str, str, str]]:
    """``(question, answer, key shape)`` triples about a scene.

    One colour question per shape present, and for each pair of shapes in different
    columns one "left of" question.  The pair is always named in the order of ``SHAPES``
    (square before circle before triangle); "yes" and "no" are still equally likely, since
    the two columns are random.  (With the order drawn at random too, the answer becomes
    an exclusive-or of word order and column order: no single feature correlates with it,
    and gradient descent on this small model, then still with 1-D patch positions, sat at
    chance for 30 epochs; not re-measured with the grid positions of ``train.py``.)  ``key shape``
    is the shape the question names first, the word whose attention is worth plotting.
    """
    out = [(f"what colour is the {s} ?", c, s) for s, c, _, _ in scene.objects]
    objs = sorted(scene.objects, key=lambda o: SHAPES.index(o[0]))
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            if a[3] == b[3]:
                continue  # same column: neither is left of the other
            answer = "yes" if a[3] < b[3] else "no"
            out.append((f"is the {a[0]} left of the {b[0]} ?", answer, a[0]))
    return out


def caption(scene: Scene) -> str:
    """A description naming every shape with its colour, left to right (then top to bottom)."""
    parts = [f"a {c} {s}" for s, c, _, _ in sorted(scene.objects, key=lambda o: (o[3], o[2]))]
    return " , ".join(parts[:-1]) + " and " + parts[-1]
