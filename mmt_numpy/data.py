"""Small image–text data made in code: coloured shapes, questions about them, captions.

Nothing is downloaded.  A *scene* places two or three shapes (square, circle, triangle,
each at most once) in the cells of a ``grid x grid`` board and gives each a colour.  From
a scene come

* an RGB image ``(H, W, 3)`` in [0, 1] (one shape per cell, black background),
* questions with one-word answers, the toy visual question answering of §6.1::

      "what colour is the square ?"          -> "red"
      "is the circle left of the triangle ?" -> "yes" / "no"

* a caption (``"a red square , a blue circle and a green triangle"``) for the
  pre-training objectives of §2.2 (masked-token prediction, contrastive matching).

Images become token sequences the way a Vision Transformer does it: :func:`patchify` cuts
each image into ``patch x patch`` squares and flattens each square, so a model's
``image_embedding`` Linear is exactly ViT's patch embedding.  With the default sizes a
patch is one cell of the board, so "the patch of the square" is a single image token.

Everything is deterministic per seed.  Train and test sets are split by *scene*: no scene
(same shapes, cells and colours) appears in both, so a test question is never asked of an
image the model saw in training (:func:`make_vqa_splits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHAPES = ("square", "circle", "triangle")
COLOURS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.1, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}
ANSWERS = (*COLOURS, "yes", "no")  # the classes of the VQA task, in this order

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))
WORDS = (
    "what",
    "colour",
    "is",
    "the",
    "left",
    "of",
    "?",
    "a",
    "and",
    ",",
    *SHAPES,
    *COLOURS,
    "yes",
    "no",
)
IGNORE_INDEX = -100  # the target of a position that is not predicted (cross_entropy's default)


# ----------------------------------------------------------------------------- tokenizer


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary: special tokens first, then the words.

    Text is split on spaces (punctuation is written as separate words, ``"square ?"``).
    ``encode`` prepends ``[CLS]`` (the position a classifier reads, as in BERT) and pads
    with ``[PAD]`` (id 0) to a common length.

    Args:
        words: the ordinary words; ids ``len(SPECIAL_TOKENS) ...`` in this order.
    """

    def __init__(self, words: Sequence[str] = WORDS) -> None:
        vocab = [*SPECIAL_TOKENS, *words]
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"words: expected distinct words not among {SPECIAL_TOKENS}, got {list(words)}")
        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def num_special(self) -> int:
        """Ids below this are special tokens, never masked or sampled as random words."""
        return len(SPECIAL_TOKENS)

    def encode(self, texts: Sequence[str], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``(N, length)`` (``[CLS]`` first, ``[PAD]`` after the end) and lengths ``(N,)``.

        Args:
            texts: N strings of space-separated words; an unknown word becomes ``[UNK]``.
            length: the padded length; default the longest encoded text.  A text that does
                not fit raises ValueError (silently cutting a question would change it).
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts: expected a sequence of strings, got {type(texts).__name__}")
        rows = [[CLS_ID, *(self.ids.get(w, UNK_ID) for w in text.split())] for text in texts]
        longest = max((len(r) for r in rows), default=0)
        length = longest if length is None else length
        if longest > length:
            raise ValueError(f"length: expected at least {longest} (longest text with [CLS]), got {length}")
        ids = np.full((len(rows), length), PAD_ID, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids, np.array([len(r) for r in rows], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> list[str]:
        """``ids (N, L)`` -> N strings, without ``[CLS]`` and stopping at the first ``[PAD]``."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected a 2-D integer array (N, L), got shape {ids.shape}, {ids.dtype}")
        texts = []
        for row in ids:
            words = []
            for i in row.tolist():
                if i == PAD_ID:
                    break
                if i != CLS_ID:
                    words.append(self.vocab[i])
            texts.append(" ".join(words))
        return texts


TOKENIZER = Tokenizer()


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    prob: float = 0.15,
    *,
    vocab_size: int = len(TOKENIZER),
    num_special: int = len(SPECIAL_TOKENS),
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt token ids for masked-token prediction (BERT's recipe, §2.2).

    Each ordinary token (id >= ``num_special``) is chosen with probability ``prob``; of the
    chosen ones 80% become ``[MASK]``, 10% a random ordinary word and 10% stay as they were
    (so the model cannot learn that only ``[MASK]`` positions matter).  Special tokens
    (``[PAD]``, ``[CLS]`` ...) are never chosen.

    Args:
        ids: ``(N, L)`` integer token ids.
        rng: the generator that decides which tokens are chosen and how they change.
        prob: probability of choosing each ordinary token, in [0, 1].

    Returns:
        ``corrupted (N, L)`` and ``targets (N, L)``: the original id where a token was chosen,
        ``IGNORE_INDEX`` (-100) everywhere else, ready for ``cross_entropy_forward``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected a 2-D integer array (N, L), got shape {ids.shape}, {ids.dtype}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob: expected a probability in [0, 1], got {prob}")
    chosen = (ids >= num_special) & (rng.random(ids.shape) < prob)
    action = rng.random(ids.shape)  # < 0.8: [MASK];  0.8-0.9: random word;  >= 0.9: unchanged
    random_words = rng.integers(num_special, vocab_size, size=ids.shape)
    corrupted = ids.copy()
    corrupted[chosen & (action < 0.8)] = MASK_ID
    swap = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[swap] = random_words[swap]
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return corrupted, targets


# ----------------------------------------------------------------------------- scenes and images


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
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch: expected a positive integer, got {patch!r}")
    if H % patch or W % patch:
        raise ValueError(f"patch: expected a divisor of the image height {H} and width {W}, got {patch}")
    gh, gw = H // patch, W // patch
    x = images.reshape(N, gh, patch, gw, patch, C)  # split each axis into (grid, within-patch)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (N, gh, gw, patch, patch, C)
    return x.reshape(N, gh * gw, patch * patch * C)


# ----------------------------------------------------------------------------- questions and captions


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


# ----------------------------------------------------------------------------- datasets


@dataclass
class VQADataset:
    """Question–image pairs, one row per question (several questions share a scene).

    Attributes:
        images: ``(S, H, W, 3)`` float64, the S distinct scene images.
        scenes: the S scenes.
        image_index: ``(N,)`` which image each question is about.
        ids: ``(N, Lt)`` int64 question token ids (``[CLS]`` first, padded).
        lengths: ``(N,)`` int64 number of real tokens in each question.
        answers: ``(N,)`` int64 index into ``ANSWERS``.
        key_shape: ``(N,)`` str, the shape each question names first.
        patch: the patch side used by :meth:`patches`.
    """

    images: np.ndarray
    scenes: list[Scene]
    image_index: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    answers: np.ndarray
    key_shape: np.ndarray
    patch: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row, ``(H/patch, W/patch)``."""
        return self.images.shape[1] // self.patch, self.images.shape[2] // self.patch

    def patches(self, dtype: object = np.float64) -> np.ndarray:
        """``(N, num_patches, patch*patch*3)``: the patch tokens of each question's image."""
        return patchify(self.images, self.patch).astype(dtype)[self.image_index]

    def key_patch(self) -> np.ndarray:
        """``(N,)`` the index of the patch holding each question's key shape (reading order)."""
        gw = self.grid[1]
        out = np.empty(len(self), dtype=np.int64)
        for n, (i, s) in enumerate(zip(self.image_index, self.key_shape, strict=True)):
            _, _, row, col = self.scenes[i].find(str(s))
            out[n] = row * gw + col  # with patch == cell, one shape is one patch
        return out


def _make_scenes(
    num_scenes: int, rng: np.random.Generator, grid: int, exclude: set[Scene] | None = None
) -> list[Scene]:
    """``num_scenes`` distinct scenes, none of them in ``exclude``."""
    seen = set(exclude or ())
    scenes: list[Scene] = []
    attempts = 0
    while len(scenes) < num_scenes:
        attempts += 1
        if attempts > 50 * num_scenes + 1000:
            raise ValueError(f"num_scenes: cannot draw {num_scenes} distinct scenes on a {grid}x{grid} board")
        scene = random_scene(rng, grid)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    return scenes


def make_vqa_dataset(
    scenes: Sequence[Scene],
    rng: np.random.Generator,
    *,
    grid: int = 3,
    cell: int = 8,
    patch: int | None = None,
    length: int = 9,
) -> VQADataset:
    """Render ``scenes`` and ask every question of :func:`questions` about each.

    Args:
        scenes: S scenes on a ``grid x grid`` board.
        rng: the generator of the rendering jitter.
        grid, cell: board size in cells and cell size in pixels (images are ``grid*cell`` square).
        patch: patch side for :meth:`VQADataset.patches`; default ``cell``, one board cell per
            patch (``VQADataset.key_patch`` assumes that).
        length: padded question length in tokens, ``[CLS]`` included.
    """
    patch = cell if patch is None else patch
    images = np.stack([render(s, rng, grid, cell) for s in scenes])
    rows = [(i, q, a, k) for i, s in enumerate(scenes) for q, a, k in questions(s)]
    ids, lengths = TOKENIZER.encode([q for _, q, _, _ in rows], length)
    return VQADataset(
        images=images,
        scenes=list(scenes),
        image_index=np.array([i for i, _, _, _ in rows], dtype=np.int64),
        ids=ids,
        lengths=lengths,
        answers=np.array([ANSWERS.index(a) for _, _, a, _ in rows], dtype=np.int64),
        key_shape=np.array([k for _, _, _, k in rows]),
        patch=patch,
    )


def make_vqa_splits(
    num_train_scenes: int, num_test_scenes: int, seed: int = 0, *, grid: int = 3, cell: int = 8
) -> tuple[VQADataset, VQADataset]:
    """Train and test VQA sets over disjoint scenes, deterministic per ``seed``.

    The test scenes are drawn after the training scenes and any scene already used for
    training is redrawn, so no (shapes, cells, colours) configuration is in both sets.
    """
    for name, value in (("num_train_scenes", num_train_scenes), ("num_test_scenes", num_test_scenes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    rng = np.random.default_rng(seed)
    train_scenes = _make_scenes(num_train_scenes, rng, grid)
    test_scenes = _make_scenes(num_test_scenes, rng, grid, exclude=set(train_scenes))
    train = make_vqa_dataset(train_scenes, rng, grid=grid, cell=cell)
    test = make_vqa_dataset(test_scenes, rng, grid=grid, cell=cell)
    return train, test


def make_caption_data(
    num_scenes: int, seed: int = 0, *, grid: int = 3, cell: int = 8, exclude: Sequence[Scene] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Scene]]:
    """Image–caption pairs for pre-training.

    Returns ``(patches (S, P, patch_dim), ids (S, Lt), lengths (S,), scenes)``.

    The patches have ``patch = cell``; the ids are the captions of :func:`caption`.

    ``exclude`` keeps given scenes (e.g. a VQA test set's) out of the pre-training data.
    """
    rng = np.random.default_rng(seed)
    scenes = _make_scenes(num_scenes, rng, grid, exclude=set(exclude))
    images = np.stack([render(s, rng, grid, cell) for s in scenes])
    ids, lengths = TOKENIZER.encode([caption(s) for s in scenes])
    return patchify(images, cell), ids, lengths, scenes
