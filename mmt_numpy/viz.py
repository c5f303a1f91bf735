"""Pictures of attention: heatmaps, head/layer grids, text-over-image overlays, rollout.

Every function draws on a fresh :class:`matplotlib.figure.Figure` and returns it, so a
notebook shows it by leaving it as the cell's last expression and a script saves it with
``fig.savefig(path)``.  Nothing here calls ``plt.show()`` or touches pyplot's global
state, so the functions work the same under any backend (the tests use ``Agg``).

Conventions shared by every plot:

* a weight matrix is ``(Lq, Lk)``: **keys on the x axis, queries on the y axis**, so row i
  reads "where query i looks";
* one fixed colour scale from 0 to 1 with a colourbar, so two pictures can be compared by
  eye (a weight of 0.5 is the same colour everywhere);
* masked cells (mask False = "may not attend") are drawn grey and hatched, never as a
  weight of 0 that a reader could mistake for "allowed but ignored".

What the functions check, because a wrong picture looks as convincing as a right one:
weights must be a probability matrix (finite, within [0, 1], every row summing to 1, or
to 0 for a query whose keys are all masked), labels must match the matrix, and a mask
must agree with the weights (a masked cell with a nonzero weight usually means the mask
uses the opposite convention, as ``nn.MultiheadAttention``'s ``key_padding_mask`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch, Rectangle

from mmt_numpy.gradcheck import RTOL, GradcheckReport
from mmt_numpy.validate import bool_mask, integer, positive_int, positive_number, real_number

# How far a weight may stray from [0, 1] and a row sum from 1 (or 0) before we refuse it:
# loose enough for float32 softmax rounding over a few thousand keys, tight enough to catch
# raw scores or logits passed by mistake.
VALUE_TOL = 1e-6
ROW_SUM_TOL = 1e-4

CMAP = "viridis"
MASKED_COLOUR = "#d0d0d0"
MASKED_HATCH = "///"


# ----------------------------------------------------------------------------- checks


def check_attention_weights(name: str, weights: object, ndim: int | None = None) -> np.ndarray:
    """Return ``weights`` as a float64 array if it is a stack of attention matrices, else raise.

    Args:
        name: the argument's name, for the error message.
        weights: ``(..., Lq, Lk)`` real numbers: finite, within [0, 1], every row summing
            to 1, or to 0 for a query with no visible key.
        ndim: the exact number of dimensions required (None: at least 2).

    Raises:
        TypeError: not a real-valued numpy array.
        ValueError: wrong rank, NaN/inf, values outside [0, 1], or a row sum that is
            neither 1 nor 0 (for instance raw scores passed instead of softmax weights).
    """
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of attention weights, got {type(weights).__name__}")
    if not (np.issubdtype(weights.dtype, np.floating) or np.issubdtype(weights.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real (float) dtype, got {weights.dtype}")
    if ndim is not None and weights.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {weights.shape}")
    if weights.ndim < 2:
        raise ValueError(f"{name}: expected at least 2 dimensions (..., Lq, Lk), got shape {weights.shape}")
    if 0 in weights.shape:
        raise ValueError(f"{name}: expected no empty dimension, got shape {weights.shape}")
    w = weights.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name}: expected finite weights, found {int(np.sum(~np.isfinite(w)))} NaN/inf")
    low, high = float(w.min()), float(w.max())
    if low < -VALUE_TOL or high > 1 + VALUE_TOL:
        raise ValueError(
            f"{name}: expected attention weights in [0, 1] (softmax outputs), got values in "
            f"[{low:.3g}, {high:.3g}]; pass the weights after the softmax, not the scores"
        )
    sums = w.sum(axis=-1)
    bad = ~(np.isclose(sums, 1.0, rtol=0, atol=ROW_SUM_TOL) | np.isclose(sums, 0.0, rtol=0, atol=ROW_SUM_TOL))
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: expected every row (query) to sum to 1, or to 0 when all its keys are "
            f"masked; row {where} sums to {sums[where]:.6g} ({int(bad.sum())} bad rows). "
            "Softmax runs over the last axis (the keys)"
        )
    return w


def _check_labels(name: str, labels: object, expected: int, what: str) -> list[str]:
    """A list of ``expected`` strings, one per token; a bare string is refused."""
    if isinstance(labels, str):
        raise TypeError(
            f"{name}: expected a sequence of {expected} token strings ({what}), got one str "
            f"{labels!r}; split it into tokens first, e.g. text.split()"
        )
    if not isinstance(labels, Sequence) and not isinstance(labels, np.ndarray):
        raise TypeError(f"{name}: expected a sequence of token strings, got {type(labels).__name__}")
    if len(labels) != expected:
        raise ValueError(f"{name}: expected {expected} labels ({what}), got {len(labels)}")
    return [str(label) for label in labels]


def _check_mask(mask: object, shape: tuple[int, ...], weights: np.ndarray) -> np.ndarray:
    """The mask broadcast to ``shape``; it must not hide any nonzero weight."""
    bool_mask("mask", mask, shape)
    keep = np.broadcast_to(mask, shape)
    leaked = (~keep) & (weights > VALUE_TOL)
    if np.any(leaked):
        raise ValueError(
            f"mask: {int(leaked.sum())} cells are masked (False) but have a nonzero weight. "
            "mmt_numpy masks use True = 'may attend'; a PyTorch key_padding_mask means the "
            "opposite, so invert it (~mask) before plotting"
        )
    return keep


def _check_titles(name: str, titles: Sequence[str] | None, n: int, default: str) -> list[str]:
    if titles is None:
        return [f"{default} {i}" for i in range(n)]
    return _check_labels(name, titles, n, f"one per {default}")


# ----------------------------------------------------------------------------- drawing


def _draw_heatmap(ax: Axes, weights: np.ndarray, keep: np.ndarray | None, cmap: str | Colormap) -> AxesImage:
    """Weights ``(Lq, Lk)`` on a 0–1 scale; masked cells grey and hatched."""
    shown = weights if keep is None else np.ma.masked_array(weights, mask=~keep)
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    if keep is not None:
        for i, j in np.argwhere(~keep):
            ax.add_patch(
                Rectangle(
                    (j - 0.5, i - 0.5),
                    1,
                    1,
                    facecolor=MASKED_COLOUR,
                    edgecolor="#8a8a8a",
                    hatch=MASKED_HATCH,
                    linewidth=0,
                )
            )
    return image


def _annotate(ax: Axes, weights: np.ndarray, keep: np.ndarray | None) -> None:
    """Write each visible weight in its cell (dark text on light cells, light on dark)."""
    for (i, j), value in np.ndenumerate(weights):
        if keep is not None and not keep[i, j]:
            continue
        ax.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="black" if value > 0.6 else "white",
        )


def _token_ticks(ax: Axes, query_labels: list[str], key_labels: list[str]) -> None:
    ax.set_xticks(range(len(key_labels)), key_labels, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(query_labels)), query_labels)
    ax.tick_params(length=0)


def _masked_legend(fig: Figure) -> None:
    handle = Patch(
        facecolor=MASKED_COLOUR, edgecolor="#8a8a8a", hatch=MASKED_HATCH, label="masked: may not attend"
    )
    fig.legend(handles=[handle], loc="lower left", fontsize=8, frameon=False)


def plot_attention(
    weights: np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    mask: np.ndarray | None = None,
    *,
    title: str = "Attention weights",
    annotate: bool = False,
    cmap: str | Colormap = CMAP,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One attention matrix as a heatmap: keys on x, queries on y, a 0–1 colourbar.

    Args:
        weights: ``(Lq, Lk)`` softmax weights, e.g. ``cache.weights[b, h]`` of a
            ``MultiHeadAttention`` forward.
        query_labels: ``Lq`` token strings for the rows.
        key_labels: ``Lk`` token strings for the columns.
        mask: bool broadcastable to ``(Lq, Lk)``, True = may attend (e.g.
            ``ops.causal_mask(L)``, or ``ops.padding_mask(lengths, L)[b, 0]`` ``(1, L)``).
            Masked cells are drawn grey and hatched.
        title: what is plotted (shown above the heatmap).
        annotate: write every weight in its cell (readable up to about 12 x 12).
        cmap: a matplotlib colormap.
        figsize: inches; default grows with the number of tokens.

    Returns:
        The Figure: one heatmap axes and one colourbar axes.
    """
    w = check_attention_weights("weights", weights, ndim=2)
    Lq, Lk = w.shape
    rows = _check_labels("query_labels", query_labels, Lq, f"one per query row of weights {w.shape}")
    cols = _check_labels("key_labels", key_labels, Lk, f"one per key column of weights {w.shape}")
    keep = None if mask is None else _check_mask(mask, (Lq, Lk), w)

    if figsize is None:
        figsize = (max(4.0, 1.6 + 0.5 * Lk), max(3.5, 1.6 + 0.45 * Lq))
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    image = _draw_heatmap(ax, w, keep, cmap)
    if annotate:
        _annotate(ax, w, keep)
    _token_ticks(ax, rows, cols)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="attention weight", shrink=0.9)
    if keep is not None:
        _masked_legend(fig)
    return fig


def plot_attention_grid(
    weights: np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    mask: np.ndarray | None = None,
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    title: str = "Attention weights by layer and head",
    cmap: str | Colormap = CMAP,
    panel_size: float | None = None,
) -> Figure:
    """A grid of heatmaps sharing axes and one 0–1 colourbar (layers x heads, as d2l's ``show_heatmaps``).

    Args:
        weights: ``(rows, cols, Lq, Lk)``, e.g. ``np.stack([w[0] for w in encoder_cache.weights])``
            gives ``(num_layers, H, L, L)``.
        query_labels: ``Lq`` token strings (y axis of the first column).
        key_labels: ``Lk`` token strings (x axis of the bottom row).
        mask: bool broadcastable to ``(rows, cols, Lq, Lk)``, True = may attend, e.g. a
            ``(Lq, Lk)`` causal mask shared by every panel.
        row_titles: ``rows`` strings; default ``"layer 0"``, ``"layer 1"`` ... (0-based, as
            ``encoder.layers[i]``).
        col_titles: ``cols`` strings; default ``"head 0"``, ``"head 1"`` ...
        title: what is plotted.
        cmap: a matplotlib colormap.
        panel_size: inches per panel; default grows with the number of tokens.

    Returns:
        The Figure: ``rows * cols`` heatmap axes and one colourbar axes.
    """
    w = check_attention_weights("weights", weights, ndim=4)
    R, C, Lq, Lk = w.shape
    rows = _check_labels("query_labels", query_labels, Lq, f"one per query row of weights {w.shape}")
    cols = _check_labels("key_labels", key_labels, Lk, f"one per key column of weights {w.shape}")
    r_titles = _check_titles("row_titles", row_titles, R, "layer")
    c_titles = _check_titles("col_titles", col_titles, C, "head")
    keep = None if mask is None else _check_mask(mask, w.shape, w)

    size = panel_size if panel_size is not None else max(1.8, 0.3 * max(Lq, Lk))
    fig = Figure(figsize=(1.5 + size * C, 1.3 + size * R), layout="constrained")
    axes = fig.subplots(R, C, sharex=True, sharey=True, squeeze=False)
    image = None
    for r in range(R):
        for c in range(C):
            ax = axes[r, c]
            image = _draw_heatmap(ax, w[r, c], None if keep is None else keep[r, c], cmap)
            _token_ticks(ax, rows, cols)
            ax.tick_params(labelsize=8)
            if r == 0:
                ax.set_title(c_titles[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{r_titles[r]}\nquery", fontsize=10)
            if r == R - 1:
                ax.set_xlabel("key", fontsize=10)
    for ax in axes.flat:
        ax.label_outer()
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    fig.suptitle(title, fontsize=11)
    if keep is not None:
        _masked_legend(fig)
    return fig


# ----------------------------------------------------------------------------- cross-modal


def _check_image(image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image: expected a numpy array (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected shape (H, W, 3) with RGB channels last, got {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"image: expected float RGB values in [0, 1], got dtype {image.dtype} "
            "(divide uint8 images by 255)"
        )
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"image: expected finite values in [0, 1], got range "
            f"[{np.nanmin(image):.3g}, {np.nanmax(image):.3g}]"
        )
    return image


def plot_cross_modal(
    weights: np.ndarray,
    image: np.ndarray,
    grid: tuple[int, int],
    tokens: Sequence[str],
    token_indices: Sequence[int],
    *,
    title: str = "Cross-attention: where each text token looks in the image",
    alpha: float = 0.5,
    vmax: float | None = None,
    max_cols: int = 4,
    grey_under: bool = True,
    cmap: str | Colormap = "inferno",
) -> Figure:
    """Text-to-image attention laid over the image: the original, then one overlay per token.

    Row t of ``weights`` is text token t's distribution over the image patches, listed
    row by row (the order a ViT flattens its ``gh x gw`` patch grid).  Each selected row
    is reshaped to ``(gh, gw)``, upsampled to the image size (every patch a block of
    ``H/gh x W/gw`` pixels, so the patches stay visible) and drawn over the image with
    transparency ``alpha``.  Thin white lines mark the patch borders.  Under the overlay
    the image is shown in grey (``grey_under``), so the colours of the heat map cannot be
    confused with the colours of the picture; the first panel keeps the original colours.

    Args:
        weights: ``(Lt, Li)`` with ``Li = gh * gw``, e.g. ``cache.weights[b].mean(0)``
            of a cross-attention from text (queries) to image patches (keys).
        image: ``(H, W, 3)`` float RGB in [0, 1]; H divisible by gh, W by gw.
        grid: ``(gh, gw)`` patches per column and per row.
        tokens: ``Lt`` strings, the text tokens.
        token_indices: which tokens to show (indices into ``tokens``), at least one.
        title: what is plotted.
        alpha: opacity of the overlay, in (0, 1].
        vmax: top of the colour scale; default the largest weight shown, shared by every
            overlay so they compare.  (Weights over many patches are small: a fixed 0–1
            scale would make them all look dark.)
        max_cols: panels per row before wrapping.
        grey_under: draw the image under each overlay in grey (luminance) instead of colour.
        cmap: a matplotlib colormap.

    Returns:
        The Figure: ``1 + len(token_indices)`` image axes (the first is the original; unused
        grid cells are removed) and one colourbar axes.
    """
    w = check_attention_weights("weights", weights, ndim=2)
    Lt, Li = w.shape
    img = _check_image(image)
    H, W = img.shape[:2]
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"grid: expected a pair (gh, gw) of patch counts, got {grid!r}")
    gh, gw = positive_int("grid[0]", grid[0]), positive_int("grid[1]", grid[1])
    if gh * gw != Li:
        raise ValueError(
            f"grid: expected gh * gw = {Li} (the number of patches, weights.shape[1] "
            f"of {w.shape}), got {gh} x {gw} = {gh * gw}"
        )
    if H % gh or W % gw:
        raise ValueError(
            f"image: expected a height divisible by gh={gh} and a width divisible by "
            f"gw={gw} (whole patches), got shape {img.shape}"
        )
    labels = _check_labels("tokens", tokens, Lt, f"one per text row of weights {w.shape}")
    if isinstance(token_indices, (int, np.integer)) or len(token_indices) == 0:
        raise TypeError(f"token_indices: expected a non-empty sequence of ints, got {token_indices!r}")
    chosen = []
    for t in token_indices:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not -Lt <= t < Lt:
            raise ValueError(f"token_indices: expected integers in [0, {Lt}), got {list(token_indices)}")
        chosen.append(int(t) % Lt)
    alpha = real_number("alpha", alpha, low=0.0, low_open=True, high=1.0)
    max_cols = positive_int("max_cols", max_cols)

    ph, pw = H // gh, W // gw
    maps = [w[t].reshape(gh, gw) for t in chosen]
    top = float(max(m.max() for m in maps)) if vmax is None else positive_number("vmax", vmax)
    top = top if top > 0 else 1.0

    n_panels = 1 + len(chosen)
    ncols = min(n_panels, max_cols)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(0.6 + 2.6 * ncols, 0.9 + 2.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.remove()
    panels = list(axes.flat[:n_panels])
    panels[0].imshow(img, interpolation="nearest")
    panels[0].set_title("image", fontsize=10)
    # ITU-R 601 luminance: the grey a colour photo prints as.
    under = img @ np.array([0.299, 0.587, 0.114]) if grey_under else img
    for ax, t, patch_map in zip(panels[1:], chosen, maps, strict=True):
        ax.imshow(under, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        upsampled = np.repeat(np.repeat(patch_map, ph, axis=0), pw, axis=1)  # (gh, gw) -> (H, W)
        ax.imshow(upsampled, cmap=cmap, vmin=0.0, vmax=top, alpha=alpha, interpolation="nearest")
        ax.set_title(f'"{labels[t]}" (token {t})', fontsize=10)
    for ax in panels:
        ax.set_xticks(np.arange(0, W + 1, pw) - 0.5, minor=True)
        ax.set_yticks(np.arange(0, H + 1, ph) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=0.4, alpha=0.6)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    # An opaque colourbar: the overlay's alpha would otherwise wash its colours out.
    scale = ScalarMappable(norm=Normalize(0.0, top), cmap=cmap)
    fig.colorbar(scale, ax=panels, label=f"attention weight (scale 0 to {top:.2g})", shrink=0.8)
    fig.suptitle(title, fontsize=11)
    return fig


# ----------------------------------------------------------------------------- rollout


def attention_rollout(weights_per_layer: Sequence[np.ndarray]) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): how much each output position draws on each input token.

    One layer computes ``x + Attention(x)``: the residual path carries the token itself,
    so the layer's "mixing matrix" is the head-averaged attention plus the identity, with
    rows renormalised to sum to 1::

        A_l = row_normalise(mean_h W_l[h] + I)            (L, L)
        rollout = A_n · … · A_2 · A_1                     (L, L)

    Row i of the rollout is a distribution over input tokens: the share of output i that
    traces back to each token, following every path through the layers.  A layer whose
    weights are the identity leaves the rollout unchanged; a query row whose keys were
    all masked (zero weights) becomes the identity row (only the residual path remains).

    Args:
        weights_per_layer: one array per layer, first layer first, each ``(H, L, L)`` or
            ``(B, H, L, L)`` (e.g. ``encoder_cache.weights``), all of one shape.

    Returns:
        ``(L, L)`` or ``(B, L, L)``; every row sums to 1.
    """
    if isinstance(weights_per_layer, np.ndarray) or not isinstance(weights_per_layer, Sequence):
        raise TypeError(
            "weights_per_layer: expected a list with one (B, H, L, L) or (H, L, L) array per "
            f"layer, got {type(weights_per_layer).__name__}"
        )
    if len(weights_per_layer) == 0:
        raise ValueError("weights_per_layer: expected at least one layer, got an empty list")
    layers = []
    for i, weights in enumerate(weights_per_layer):
        w = check_attention_weights(f"weights_per_layer[{i}]", weights)
        if w.ndim not in (3, 4):
            raise ValueError(
                f"weights_per_layer[{i}]: expected (H, L, L) or (B, H, L, L), got shape {w.shape}"
            )
        if w.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"weights_per_layer[{i}]: expected square self-attention (L, L) matrices, got shape {w.shape}"
            )
        if layers and w.shape != layers[0].shape:
            raise ValueError(
                f"weights_per_layer[{i}]: expected shape {layers[0].shape} as layer 0, got {w.shape}"
            )
        layers.append(w)
    L = layers[0].shape[-1]
    identity = np.eye(L)
    rollout = np.broadcast_to(identity, layers[0].shape[:-3] + (L, L)).copy()
    for w in layers:
        mixing = w.mean(axis=-3) + identity  # heads averaged, plus the residual path
        mixing /= mixing.sum(axis=-1, keepdims=True)
        rollout = mixing @ rollout  # this layer acts after every earlier one
    return rollout


def plot_rollout(
    weights_per_layer: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    batch_index: int = 0,
    title: str = "Attention per layer (heads averaged) and rolled out through the layers",
    cmap: str | Colormap = CMAP,
) -> Figure:
    """Each layer's head-averaged attention next to the rollout of all of them.

    Reading left to right shows why rollout is needed: a single layer says where a token
    looks *in that layer's input*, which after the first layer is already a mixture; the
    rollout follows the mixing back to the input tokens.

    Args:
        weights_per_layer: one ``(B, H, L, L)`` or ``(H, L, L)`` array per layer.
        labels: ``L`` token strings (both axes).
        batch_index: which batch row to draw when the arrays have a batch axis.
        title: what is plotted.
        cmap: a matplotlib colormap.

    Returns:
        The Figure: ``num_layers + 1`` heatmap axes (the last is the rollout) and one
        colourbar axes.
    """
    rollout = attention_rollout(weights_per_layer)
    L = rollout.shape[-1]
    names = _check_labels("labels", labels, L, "one per token")
    per_layer = [np.asarray(w, dtype=np.float64).mean(axis=-3) for w in weights_per_layer]
    if rollout.ndim == 3:
        what = f"an integer in [0, {rollout.shape[0]})"
        batch_index = integer("batch_index", batch_index, low=0, what=what)
        if batch_index >= rollout.shape[0]:
            raise ValueError(f"batch_index: expected {what}, got {batch_index!r}")
        rollout = rollout[batch_index]
        per_layer = [m[batch_index] for m in per_layer]
    panels = per_layer + [rollout]
    n = len(panels)
    size = max(2.6, 0.32 * L)
    fig = Figure(figsize=(1.4 + size * n, 1.6 + size), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    image = None
    for i, (ax, matrix) in enumerate(zip(axes, panels, strict=True)):
        image = _draw_heatmap(ax, matrix, None, cmap)
        _token_ticks(ax, names, names)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("input token" if i == n - 1 else "key", fontsize=9)
        ax.set_title(
            f"rollout of layers 0..{n - 2}" if i == n - 1 else f"layer {i}, heads averaged", fontsize=10
        )
    axes[0].set_ylabel("output position (query)", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="weight", shrink=0.85)
    fig.suptitle(title, fontsize=11)
    return fig


# ----------------------------------------------------------------------------- gradient checks


def plot_gradcheck_errors(
    reports: Sequence[GradcheckReport],
    *,
    rtol: float = RTOL,
    title: str = "Gradient checks: worst relative error of each backward pass",
) -> Figure:
    """A horizontal bar per op or module: its worst relative error, log scale, with the pass line.

    Bars are green when the check passed and red when it failed; the dashed line is the
    tolerance ``rtol``.  The distance between a bar's end and the line is the safety
    margin in orders of magnitude (see :mod:`mmt_numpy.gradcheck` for the error measure).

    Args:
        reports: ``GradcheckReport`` objects, e.g. ``[case.run() for case in all_cases()]``.
        rtol: the pass threshold to draw (``gradcheck.RTOL`` by default).
        title: what is plotted.

    Returns:
        The Figure: one axes.
    """
    if isinstance(reports, GradcheckReport) or not isinstance(reports, Sequence):
        raise TypeError(f"reports: expected a list of GradcheckReport, got {type(reports).__name__}")
    if len(reports) == 0:
        raise ValueError("reports: expected at least one GradcheckReport, got an empty list")
    for i, report in enumerate(reports):
        if not isinstance(report, GradcheckReport):
            raise TypeError(f"reports[{i}]: expected a GradcheckReport, got {type(report).__name__}")
    rtol = positive_number("rtol", rtol)

    names = [r.name for r in reports]
    errors = np.array([r.max_rel_err for r in reports], dtype=np.float64)
    floor = 1e-17  # an exact 0 cannot sit on a log axis; draw it at the floor
    shown = np.maximum(errors, floor)
    colours = ["tab:green" if r.passed else "tab:red" for r in reports]
    low = 10.0 ** np.floor(np.log10(shown.min()) - 0.5)
    high = 10.0 ** max(1.0, np.ceil(np.log10(shown.max()) + 0.7))

    fig = Figure(figsize=(8.0, 1.4 + 0.24 * len(reports)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(reports))
    ax.barh(y, shown - low, left=low, color=colours, height=0.7)  # a bar from the axis edge to the error
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()  # first case at the top, as in the printed table
    ax.axvline(rtol, color="black", linestyle="--", linewidth=1.2)
    ax.text(rtol, -0.9, f" pass if <= {rtol:g}", fontsize=8, va="bottom", ha="left")
    for yi, value in zip(y, errors, strict=True):
        ax.text(
            max(value, floor) * 1.3,
            yi,
            f"{value:.1e}",
            va="center",
            fontsize=7,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
        )
    ax.set_xlabel("max relative error |analytic − numeric| / scale  (log scale; shorter is better)")
    ax.grid(axis="x", which="major", alpha=0.3)
    n_failed = sum(not r.passed for r in reports)
    legend = [
        Patch(color="tab:green", label=f"passed ({len(reports) - n_failed})"),
        Patch(color="tab:red", label=f"failed ({n_failed})"),
    ]
    ax.legend(handles=legend, loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig


# ----------------------------------------------------------------------------- the explorer page


def explore(*args: object, **kwargs: object) -> object:
    """The interactive attention page (head, model and cross-modal views) for a notebook or a file.

    ``viz.explore(model, ids, patches, images, lengths, vocab=..., answers=..., targets=...)``
    returns an :class:`mmt_numpy.explorer.ExplorerPage`: left as a cell's last expression,
    Jupyter shows it (``_repr_html_``), and ``.save("page.html")`` writes the file.  The
    arguments are those of :func:`mmt_numpy.explorer.explore`.  The static figures above stay
    the notebooks' pictures, since a page's script does not run where GitHub renders them.
    """
    from mmt_numpy.explorer import explore as build  # imported here: the explorer imports viz

    return build(*args, **kwargs)
