"""Building the explorer page: run the model, pack its attention weights, fill the template.

The page is one HTML file with everything inline: the stylesheet ``explorer.css``, the
script ``explorer.js`` (plain JavaScript written for this page, no framework) and the data
as a JSON block.  The JSON holds, per example, the token labels, which keys may be
attended, the image as a PNG data URI and every layer's and head's attention weights.

The weights are the largest part, ``layers x heads x L x L`` numbers per example, so they are
stored as one byte each: ``round(255 * w)``, base64-encoded, row-major over
``(layer, head, query, key)``.  The page divides by 255 again; a weight is then within
1/510 of the model's (the tests check it), and a two-layer, four-head model on 100
tokens takes about 107 KB per example instead of about 600 KB as decimal numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from mmt_numpy.nn.image_text import ImageTextModel
from mmt_numpy.ops.activations import softmax_forward
from mmt_numpy.validate import positive_int
from mmt_numpy.viz import check_attention_weights

LEVELS = 255  # weights are stored as round(LEVELS * w) in one byte
FORMAT = 1  # the version of the JSON layout the script reads
DATA_ID = "mmt-explorer-data"


def _asset(name: str) -> str:
    return resources.files("mmt_numpy.explorer").joinpath(name).read_text(encoding="utf-8")


def quantise(weights: np.ndarray) -> str:
    """``weights`` in [0, 1] as base64 of one byte per value, ``round(255 * w)``, in C order."""
    levels = np.rint(np.clip(weights, 0.0, 1.0) * LEVELS).astype(np.uint8)
    return base64.b64encode(levels.tobytes()).decode("ascii")


def dequantise(encoded: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`quantise`: float64 weights of ``shape``, each within 1/510 of the original."""
    levels = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8)
    return (levels.astype(np.float64) / LEVELS).reshape(shape)


def png_data_uri(image: np.ndarray) -> str:
    """An ``(H, W, 3)`` float RGB image in [0, 1] as a ``data:image/png;base64,...`` URI (by matplotlib)."""
    from matplotlib import image as mpimg

    buffer = io.BytesIO()
    # No "Software" entry: the same pixels give the same bytes, whatever matplotlib wrote them.
    mpimg.imsave(buffer, np.clip(image, 0.0, 1.0), format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _shape(x: object) -> object:
    return getattr(x, "shape", type(x).__name__)


def _check_inputs(
    model: object, ids: object, patches: object, images: object, lengths: object, grid: object
) -> tuple[int, int, tuple[int, int]]:
    """Validate the arguments of :func:`explore`; return ``(Lt, Li, (gh, gw))``."""
    if not isinstance(model, ImageTextModel):
        raise TypeError(f"model: expected an mmt_numpy.nn.ImageTextModel, got {type(model).__name__}")
    if not isinstance(ids, np.ndarray) or ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids: expected a 2-D integer array (B, Lt), got {_shape(ids)}")
    B, Lt = ids.shape
    if B < 1:
        raise ValueError("ids: expected at least one example, got B = 0")
    if not isinstance(patches, np.ndarray) or patches.ndim != 3 or patches.shape[0] != B:
        raise ValueError(f"patches: expected (B={B}, Li, patch_dim), got {_shape(patches)}")
    Li = patches.shape[1]
    if (
        not isinstance(images, np.ndarray)
        or images.ndim != 4
        or images.shape[0] != B
        or images.shape[-1] != 3
    ):
        raise ValueError(f"images: expected (B={B}, H, W, 3) RGB, got {_shape(images)}")
    if not np.issubdtype(images.dtype, np.floating) or images.min() < 0 or images.max() > 1:
        raise ValueError(f"images: expected float RGB values in [0, 1], got {images.dtype}")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths: expected (B={B},) integers, got {lengths.shape} {lengths.dtype}")
        if lengths.min() < 1 or lengths.max() > Lt:
            raise ValueError(f"lengths: expected values in [1, {Lt}], got [{lengths.min()}, {lengths.max()}]")
    if grid is None:
        grid = model.config["image_grid"]
    if grid is None:
        side = int(round(Li**0.5))
        if side * side != Li:
            raise ValueError(
                f"grid: expected (rows, columns) for {Li} patches (not a square number), got None"
            )
        grid = (side, side)
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"grid: expected a pair (rows, columns), got {grid!r}")
    gh, gw = positive_int("grid[0]", grid[0]), positive_int("grid[1]", grid[1])
    if gh * gw != Li:
        raise ValueError(f"grid: expected rows * columns = {Li} (the number of patches), got {gh} x {gw}")
    H, W = images.shape[1:3]
    if H % gh or W % gw:
        raise ValueError(
            f"images: expected a height divisible by {gh} and a width by {gw}, got {images.shape}"
        )
    return Lt, Li, (gh, gw)


def explore(
    model: ImageTextModel,
    ids: np.ndarray,
    patches: np.ndarray,
    images: np.ndarray,
    lengths: np.ndarray | None = None,
    *,
    vocab: Sequence[str],
    answers: Sequence[str] | None = None,
    targets: Sequence[int] | np.ndarray | None = None,
    grid: tuple[int, int] | None = None,
    title: str = "Attention explorer",
    source: str = "",
) -> ExplorerPage:
    """The interactive attention page for a batch of image-question examples.

    Runs ``model.forward(ids, patches, lengths)`` once and packs ``cache.weights`` (each
    layer's ``(B, H, L, L)``, ``L = Lt + Li``) with the tokens, the images and the
    predictions into one self-contained HTML page (:class:`ExplorerPage`).

    Args:
        model: an :class:`~mmt_numpy.nn.ImageTextModel` (trained or freshly seeded).
        ids: ``(B, Lt)`` question token ids, ``[CLS]`` first.
        patches: ``(B, Li, patch_dim)`` the patch tokens of each example's image, in the
            model's dtype.
        images: ``(B, H, W, 3)`` float RGB in [0, 1], the pictures the patches were cut from.
        lengths: ``(B,)`` real tokens per question; later text positions are padding, masked
            as keys (the page marks them).  None: no padding.
        vocab: id -> word (``tokenizer.vocab``), to label the text tokens.
        answers: the names of the model's outputs; given, the page shows the answer read at
            ``[CLS]`` and its probability.
        targets: ``(B,)`` the true answer of each example (indices into ``answers``).
        grid: ``(rows, columns)`` of the patch grid; default the model's ``image_grid``, or
            a square.
        title: the page's heading.
        source: where the parameters came from (shown under the heading).

    Returns:
        An :class:`ExplorerPage`: ``.save(path)`` writes the file, and a notebook shows it
        inline (``_repr_html_``).
    """
    Lt, Li, (gh, gw) = _check_inputs(model, ids, patches, images, lengths, grid)
    vocab = [str(word) for word in vocab]
    if ids.min() < 0 or ids.max() >= len(vocab):
        raise ValueError(
            f"vocab: expected a word for every id in ids (up to {ids.max()}), got {len(vocab)} words"
        )
    num_outputs = model.config["output_dim"]
    if answers is not None and len(answers) != num_outputs:
        raise ValueError(
            f"answers: expected {num_outputs} names (the model's output_dim), got {len(answers)}"
        )
    if targets is not None and (answers is None or len(targets) != len(ids)):
        raise ValueError(f"targets: expected {len(ids)} answer indices, and answers to name them")

    out, cache = model.forward(ids, patches, lengths)
    weights = np.stack(
        [check_attention_weights(f"cache.weights[{i}]", w, ndim=4) for i, w in enumerate(cache.weights)]
    )
    weights = weights.transpose(1, 0, 2, 3, 4)  # (layers, B, H, L, L) -> (B, layers, H, L, L)
    probabilities, _ = softmax_forward(out[:, 0].astype(np.float64))  # the answer is read at [CLS]
    num_layers, num_heads = weights.shape[1], weights.shape[2]
    lengths = np.full(len(ids), Lt) if lengths is None else np.asarray(lengths)
    patch_labels = [f"img {r},{c}" for r in range(gh) for c in range(gw)]

    examples = []
    for b in range(len(ids)):
        text_labels = [vocab[int(i)] for i in ids[b]]
        keep = [t < lengths[b] for t in range(Lt)] + [True] * Li
        question = " ".join(word for word, kept in zip(text_labels[1:], keep[1:Lt], strict=True) if kept)
        example = {
            "question": question,
            "tokens": text_labels + patch_labels,
            "num_text": Lt,
            "grid": [gh, gw],
            "keep": [bool(k) for k in keep],
            "image": png_data_uri(images[b]),
            "weights": quantise(weights[b]),
        }
        if answers is not None:
            best = int(probabilities[b].argmax())
            example["prediction"] = str(answers[best])
            example["probability"] = round(float(probabilities[b, best]), 4)
        if targets is not None:
            example["truth"] = str(answers[int(targets[b])])
        examples.append(example)
    data = {
        "format": FORMAT,
        "title": title,
        "source": source,
        "model": {"layers": num_layers, "heads": num_heads, "hidden_dim": model.config["hidden_dim"]},
        "levels": LEVELS,
        "examples": examples,
    }
    return ExplorerPage(data)


class ExplorerPage:
    """One self-contained HTML page of attention views (see :func:`explore`).

    Attributes:
        data: the JSON payload the page's script reads (``examples[i]["weights"]`` is
            base64, see :func:`dequantise`; shape ``(layers, heads, L, L)``).
        html: the whole page, ASCII text.
    """

    def __init__(self, data: dict) -> None:
        self.data = data
        # ensure_ascii keeps the page plain ASCII; "</" inside a <script> block would end it.
        payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
        parts = {
            # non-ASCII letters (the article's §) as character references: the page stays ASCII
            "__TITLE__": html.escape(data["title"]).encode("ascii", "xmlcharrefreplace").decode("ascii"),
            "/*__CSS__*/": _asset("explorer.css"),
            "__DATA_ID__": DATA_ID,
            "__DATA__": payload,
            "/*__JS__*/": _asset("explorer.js"),
        }
        # One pass over the template, so no inserted text (a title, the data) is searched again.
        pattern = "|".join(re.escape(marker) for marker in parts)
        page = re.sub(pattern, lambda m: parts[m.group(0)], _asset("template.html"))
        self.html = page

    @property
    def nbytes(self) -> int:
        """The size of the page in bytes (it is ASCII: one byte per character)."""
        return len(self.html)

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="ascii")
        return path

    def _repr_html_(self) -> str:
        """The page in an ``<iframe srcdoc>``: a notebook shows it with its own script and styles,
        isolated from the notebook's."""
        height = 1100
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
            f'style="width: 100%; height: {height}px; border: 1px solid #ccc" '
            'title="attention explorer" sandbox="allow-scripts"></iframe>'
        )

    def __repr__(self) -> str:
        n = len(self.data["examples"])
        return f"ExplorerPage({n} examples, {self.nbytes} bytes; .save(path) writes it)"
