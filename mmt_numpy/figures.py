"""The teaching figures in ``figures/``, rebuilt by ``python -m mmt_numpy figures``.

An untrained model attends almost uniformly, and a uniform heatmap teaches nothing.  So
every picture here is deterministic *and* given structure by hand: query and key weights
are set so that a head implements a rule a reader can state in one line ("look at the
previous token", "a colour word looks for patches of that colour").

* (a) builds queries and keys directly and calls ``ops.attention_forward``;
* (b), (c), (d) use seeded ``mmt_numpy.nn`` modules (``TransformerEncoder``,
  ``MultiHeadAttention``) and overwrite only the query/key weights named in each
  function's docstring; every other parameter keeps its seeded initial value;
* (e) runs the gradient-check catalogue.

The figure titles say what was set up; the functions below say how.

Each ``*_figure()`` function returns a :class:`matplotlib.figure.Figure` (use them in a
notebook); :func:`make_figures` saves them as PNG files with a fixed size and dpi, so the
same code gives the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmt_numpy import ops, viz
from mmt_numpy.nn import MultiHeadAttention, TransformerEncoder

DPI = 110
SEED = 0

# ----------------------------------------------------------------------------- (a) one head, masks

SENTENCE = ["a", "red", "circle", "above", "a", "blue", "square"]
PAD = "<pad>"
_WORD_KIND = {
    "a": "article",
    "red": "colour",
    "blue": "colour",
    "circle": "shape",
    "square": "shape",
    "above": "relation",
    PAD: "padding",
}
_KINDS = ["article", "colour", "shape", "relation", "padding"]
# What each kind of word looks for (its query); padding looks for nothing.
_SEEKS = {"article": "relation", "colour": "colour", "shape": "colour", "relation": "shape"}


def masked_sentence_attention(
    match: float = 4.0, recency: float = 0.2
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One hand-set causal head over a padded sentence, computed with ``ops.attention_forward``.

    Features (one row per token, ``d = 5 + 2``): the one-hot *kind* of the word (article,
    colour, shape, relation, padding) and its position j as ``(j, j²)``.  Queries::

        q_i = [match · onehot(kind sought by token i),  2·recency·i,  −recency]
        k_j = [onehot(kind of token j),                 j,            j²]
        q_i · k_j = match · [kind_j is sought] − recency · (i − j)² + recency · i²

    The last term is the same for every key of row i, so the softmax ignores it: the head
    prefers words of the sought kind, and among them the nearest.  ``scale=1`` because
    the scores are built to be read as they are.

    Returns:
        weights ``(L, L)``, the token labels ``L``, and the mask ``(L, L)`` (causal and
        padding, True = may attend), with ``L = len(SENTENCE) + 2``.
    """
    tokens = SENTENCE + [PAD, PAD]
    L, n_kinds = len(tokens), len(_KINDS)
    positions = np.arange(L, dtype=np.float64)
    kind = np.array([_KINDS.index(_WORD_KIND[t]) for t in tokens])
    q = np.zeros((L, n_kinds + 2))
    k = np.zeros((L, n_kinds + 2))
    for i, t in enumerate(tokens):
        sought = _SEEKS.get(_WORD_KIND[t])
        if sought is not None:
            q[i, _KINDS.index(sought)] = match
    k[np.arange(L), kind] = 1.0
    q[:, n_kinds], q[:, n_kinds + 1] = 2 * recency * positions, -recency
    k[:, n_kinds], k[:, n_kinds + 1] = positions, positions**2
    keep = ops.causal_mask(L) & ops.padding_mask(np.array([len(SENTENCE)]), L)[0, 0]
    _, cache = ops.attention_forward(q, k, np.zeros((L, 1)), mask=keep, scale=1.0)
    return cache.weights, tokens, keep


def self_attention_figure() -> Figure:
    """(a) The hand-set head of :func:`masked_sentence_attention` with its causal + padding mask."""
    weights, tokens, keep = masked_sentence_attention()
    return viz.plot_attention(
        weights,
        tokens,
        tokens,
        keep,
        annotate=True,
        figsize=(6.6, 5.6),
        title="Causal self-attention over a padded sentence (one hand-set head):\n"
        "a shape looks back for a colour, 'above' for a shape, 'a' for a relation,\n"
        "a colour for a colour; nearer words win. Grey: future tokens and padding keys",
    )


# ----------------------------------------------------------------------------- (b), (d) an encoder

ENCODER_TOKENS = ["the", "cat", "saw", "the", "dog", "and", "the", "cat", "ran"]
D_MODEL, NUM_HEADS, NUM_LAYERS = 64, 4, 2
_D_HEAD = D_MODEL // NUM_HEADS
_POS, _WORD = slice(0, 16), slice(16, 32)  # one-hot position and word identity; 32:64 free
# The rule each (layer, head) is given; None keeps the seeded initial weights.
HEAD_RULES: list[list[str | None]] = [
    ["previous token", "same word", "first token", None],
    ["previous token", "next token", "same word", None],
]


def _rule_maps(rule: str, L: int, word_ids: np.ndarray) -> tuple[slice, np.ndarray]:
    """Which feature block a rule reads (positions or words) and its query map ``(16, 16)``.

    The key of a token is its one-hot code in that block; the query map sends a code to
    the code it should look for: position i to i − 1 (previous), i + 1 (next) or 0
    (first), a word to itself (same word).  A token with no target (the first token has
    no previous one) looks for itself.
    """
    seek = np.zeros((16, 16))
    if rule == "same word":
        for w in set(word_ids.tolist()):
            seek[w, w] = 1.0
        return _WORD, seek
    for i in range(L):
        target = {"previous token": i - 1, "next token": i + 1, "first token": 0}[rule]
        seek[i, target if 0 <= target < L else i] = 1.0
    return _POS, seek


def structured_encoder(
    rules: Sequence[Sequence[str | None]] = HEAD_RULES, sharpness: tuple[float, ...] = (0.6, 2.2)
) -> tuple[TransformerEncoder, np.ndarray, list[str]]:
    """A seeded two-layer pre-LN encoder whose heads follow ``rules``, run on one sentence.

    ``rules[layer][head]`` is one of ``"previous token"``, ``"next token"``, ``"first
    token"``, ``"same word"``, or None to keep the head's seeded initial weights.

    Input ``x (1, L, 64)``: dims 0–15 one-hot position, 16–31 one-hot word identity, 32–63
    small seeded noise (the "content").  A head with a rule reads one code block (see
    :func:`_rule_maps`): in its 16 query/key columns, the block's rows of ``W_k`` are the
    identity (a token's key is its code) and those of ``W_q`` are ``sharpness[layer]``
    times the seek map (a token's query is the code it looks for); all other rows are 0.
    Layer 1 needs the larger factor: layer 0 has added its output to the content dims, so
    LayerNorm divides the codes by a larger spread.

    The attention output ``W_o`` and the feed-forward's ``linear2`` keep their seeded
    values except that they do not write into dims 0–31, so layer 1 still finds the
    position and word codes in its input (a trained model learns to keep such "subspaces"
    apart; here it is imposed).  The heads without a rule show what an untrained head
    looks like.

    Returns:
        the encoder, the input ``(1, L, 64)`` and the tokens; ``encoder.forward(x)[1].weights``
        lists the ``(1, 4, L, L)`` weights of each layer.
    """
    tokens = ENCODER_TOKENS
    L = len(tokens)
    vocab = sorted(set(tokens), key=tokens.index)
    word_ids = np.array([vocab.index(t) for t in tokens])
    rng = np.random.default_rng(SEED)
    x = np.zeros((1, L, D_MODEL))
    x[0, np.arange(L), np.arange(L)] = 1.0
    x[0, np.arange(L), 16 + word_ids] = 1.0
    x[0, :, 32:] = 0.1 * rng.standard_normal((L, 32))

    encoder = TransformerEncoder(
        D_MODEL, NUM_HEADS, 4 * D_MODEL, NUM_LAYERS, norm_first=True, final_norm=True, rng=SEED
    )
    if len(sharpness) != NUM_LAYERS:
        raise ValueError(f"sharpness: expected {NUM_LAYERS} factors (one per layer), got {sharpness!r}")
    if len(rules) != NUM_LAYERS or any(len(r) != NUM_HEADS for r in rules):
        raise ValueError(f"rules: expected {NUM_LAYERS} lists of {NUM_HEADS} rules, got {rules!r}")
    for layer, layer_rules, factor in zip(encoder.layers, rules, sharpness, strict=True):
        attn = layer.self_attn
        for h, rule in enumerate(layer_rules):
            if rule is None:
                continue
            cols = slice(h * _D_HEAD, (h + 1) * _D_HEAD)
            block, seek = _rule_maps(rule, L, word_ids)
            attn.W_q.data[:, cols] = 0.0
            attn.W_k.data[:, cols] = 0.0
            attn.W_k.data[block, cols] = np.eye(16)
            attn.W_q.data[block, cols] = factor * seek
        attn.W_o.data[:, :32] = 0.0
        layer.linear2.W.data[:, :32] = 0.0
        layer.linear2.b.data[:32] = 0.0
    return encoder, x, tokens


def _head_titles() -> list[list[str]]:
    return [[rule or "untrained (seeded init)" for rule in rules] for rules in HEAD_RULES]


def heads_grid_figure() -> Figure:
    """(b) Layers x heads of :func:`structured_encoder`, one panel per head."""
    encoder, x, tokens = structured_encoder()
    _, cache = encoder.forward(x)
    weights = np.stack([w[0] for w in cache.weights])  # (layers, heads, L, L)
    titles = _head_titles()
    grid = viz.plot_attention_grid(
        weights,
        tokens,
        tokens,
        row_titles=[f"layer {i}" for i in range(NUM_LAYERS)],
        col_titles=[f"head {h}" for h in range(NUM_HEADS)],
        panel_size=2.35,
        title="Self-attention of a 2-layer, 4-head encoder (seeded; W_q, W_k of 6 heads hand-set)",
    )
    # The grid titles only the top row; here every panel names the rule its head was given.
    for i, ax in enumerate(grid.axes[: NUM_LAYERS * NUM_HEADS]):
        layer, head = divmod(i, NUM_HEADS)
        ax.set_title(f"head {head}: {titles[layer][head]}", fontsize=9)
    return grid


ROLLOUT_RULES = [["previous token"] * NUM_HEADS] * NUM_LAYERS


def rollout_figure() -> Figure:
    """(d) Rollout through two layers whose heads all look one token back.

    Each layer alone only ever looks one step back, but its input is already a mixture,
    so the rollout shows output i drawing on tokens i, i − 1 and i − 2: the reach of the
    model grows with its depth.  (With the mixed heads of the grid figure the rollout is a
    blur of four rules, which makes the point less clearly.)
    """
    encoder, x, tokens = structured_encoder(ROLLOUT_RULES)
    _, cache = encoder.forward(x)
    return viz.plot_rollout(
        cache.weights,
        tokens,
        title="Attention rollout of a 2-layer encoder whose heads all look one token back (hand-set):\n"
        "each layer reaches 1 token back, the rollout (layers multiplied, + identity for the "
        "residual) reaches 2",
    )


# ----------------------------------------------------------------------------- (c) text over image

IMAGE_SIZE, PATCH = 64, 8
CAPTION = ["a", "red", "circle", "and", "a", "blue", "square"]
_TEXT_VOCAB = ["a", "and", "red", "green", "blue", "circle", "square", "triangle"]
PATCH_FEATURES = ["red", "green", "blue", "circle", "square", "triangle"]  # per-patch, fraction covered
_RGB = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.6, 0.2), "blue": (0.15, 0.3, 0.9)}


def synthetic_scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 64 x 64 RGB picture of four flat shapes on a light background, drawn with NumPy.

    Red circle (top left), blue square (top right), red square (bottom left), green
    triangle (bottom right): so "red" is two objects and "square" is two objects.

    Returns:
        image ``(64, 64, 3)`` in [0, 1] and, for every word of :data:`PATCH_FEATURES`, the
        boolean ``(64, 64)`` map of the pixels it describes.
    """
    n = IMAGE_SIZE
    row, col = np.mgrid[0:n, 0:n] + 0.5
    circle = (row - 16) ** 2 + (col - 16) ** 2 <= 11.5**2
    blue_square = (row > 6) & (row < 26) & (col > 38) & (col < 58)
    red_square = (row > 38) & (row < 58) & (col > 6) & (col < 26)
    triangle = (row > 36) & (row < 59) & (np.abs(col - 48) < (row - 36) * 0.5)
    image = np.full((n, n, 3), 0.96)
    for shape, colour in ((circle, "red"), (blue_square, "blue"), (red_square, "red"), (triangle, "green")):
        image[shape] = _RGB[colour]
    masks = {
        "red": circle | red_square,
        "green": triangle,
        "blue": blue_square,
        "circle": circle,
        "square": blue_square | red_square,
        "triangle": triangle,
    }
    return image, masks


def patch_features(masks: dict[str, np.ndarray]) -> np.ndarray:
    """``(gh * gw, 6)``: for each 8 x 8 patch (row by row), the fraction covered by each feature.

    A stand-in for a perfect vision encoder: feature f of a patch is how much of the patch
    shows a "red" thing, a "circle", and so on.
    """
    g = IMAGE_SIZE // PATCH
    cover = [masks[f].reshape(g, PATCH, g, PATCH).mean(axis=(1, 3)).reshape(-1) for f in PATCH_FEATURES]
    return np.stack(cover, axis=-1)


def cross_modal_attention(sharpness: float = 14.0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Text-to-image cross-attention of a seeded one-head ``MultiHeadAttention``, hand-set.

    Text tokens are one-hot over an 8-word vocabulary (``query (1, 7, 8)``); the image is
    its 64 patch feature vectors (``key_value (1, 64, 6)``, see :func:`patch_features`).
    ``W_k`` copies feature f to dimension f; ``W_q`` sends a colour or shape word to
    ``sharpness`` times the dimension of its feature.  "a" and "and" get a zero query, so
    they spread their attention evenly: a word with nothing to look for.

    Returns:
        weights ``(7, 64)``, the image ``(64, 64, 3)`` and the caption tokens.
    """
    image, masks = synthetic_scene()
    patches = patch_features(masks)[None]  # (1, 64, 6)
    text = np.zeros((1, len(CAPTION), len(_TEXT_VOCAB)))
    text[0, np.arange(len(CAPTION)), [_TEXT_VOCAB.index(t) for t in CAPTION]] = 1.0
    attn = MultiHeadAttention(len(_TEXT_VOCAB), 1, kv_dim=len(PATCH_FEATURES), rng=SEED)
    attn.W_q.data[...] = 0.0
    attn.W_k.data[...] = 0.0
    for f, feature in enumerate(PATCH_FEATURES):
        attn.W_k.data[f, f] = 1.0
        attn.W_q.data[_TEXT_VOCAB.index(feature), f] = sharpness
    _, cache = attn.forward(text, patches)
    return cache.weights[0, 0], image, CAPTION


def cross_modal_figure() -> Figure:
    """(c) Where "red", "circle", "blue", "square" and "a" look in the synthetic scene."""
    weights, image, tokens = cross_modal_attention()
    g = IMAGE_SIZE // PATCH
    return viz.plot_cross_modal(
        weights,
        image,
        (g, g),
        tokens,
        [1, 2, 5, 6, 0],
        max_cols=3,
        title="Cross-attention from caption tokens to 8 x 8 image patches (one hand-set head):\n"
        "colour and shape words query matching patch features; 'a' has no query, so it is uniform",
    )


# ----------------------------------------------------------------------------- (e) gradient checks


def gradcheck_figure() -> Figure:
    """(e) The worst relative error of every case in the gradient-check catalogue."""
    from mmt_numpy.checks import all_cases

    reports = [case.run() for case in all_cases()]
    return viz.plot_gradcheck_errors(
        reports,
        title=f"Gradient checks of all {len(reports)} cases (python -m mmt_numpy gradcheck):\n"
        "worst relative error of each hand-written backward vs central differences",
    )


# ----------------------------------------------------------------------------- saving

FIGURES: dict[str, tuple[str, Callable[[], Figure]]] = {
    "self_attention": ("attention_self_masked.png", self_attention_figure),
    "heads_grid": ("attention_heads_grid.png", heads_grid_figure),
    "cross_modal": ("attention_cross_modal.png", cross_modal_figure),
    "rollout": ("attention_rollout.png", rollout_figure),
    "gradcheck": ("gradcheck_errors.png", gradcheck_figure),
}


def make_figures(out_dir: str | Path = "figures", only: Sequence[str] | None = None) -> list[Path]:
    """Build and save the figures; other files in ``out_dir`` are left alone.

    Args:
        out_dir: the folder for the PNG files (created if missing).
        only: names from :data:`FIGURES` to build; default all of them.

    Returns:
        The paths written, in :data:`FIGURES` order.
    """
    names = list(FIGURES) if only is None else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"only: expected names among {list(FIGURES)}, got unknown {unknown}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FIGURES:
        if name not in names:
            continue
        filename, build = FIGURES[name]
        fig = build()
        path = out / filename
        # No "Software" entry: the bytes then depend on the drawing, not on the version string.
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
        written.append(path)
    return written
