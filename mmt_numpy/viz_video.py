"""Pictures for video and sound (§6.3): a clip with its spectrogram, attention over frames,
the cost of space-time attention, and accuracy per question kind.

Like :mod:`mmt_numpy.viz`, every function returns a :class:`matplotlib.figure.Figure` (or draws
on one it is given) and never touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mmt_numpy.viz import check_attention_weights


def plot_clip(
    frames: np.ndarray,
    spectrogram: np.ndarray | None = None,
    *,
    fps: float = 8.0,
    sample_rate: float = 4000.0,
    hop: int = 64,
    n_fft: int = 128,
    title: str = "A clip: its frames, and its sound as a spectrogram",
    events: Sequence[tuple[float, str]] = (),
) -> Figure:
    """The T frames in a row and, below them, the spectrogram on the same time axis.

    Args:
        frames: ``(T, H, W, 3)`` RGB in [0, 1].
        spectrogram: ``(F, M)`` log magnitudes (bin k is ``k · sample_rate / n_fft`` Hz, frame m
            starts at ``m · hop / sample_rate`` s), or None for the frames alone.
        fps, sample_rate, hop, n_fft: to label the axes in seconds and hertz.
        title: what is shown.
        events: ``(seconds, label)`` marks drawn on the spectrogram (a beep, a click).
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"frames: expected (T >= 1, H, W, 3), got {getattr(frames, 'shape', type(frames).__name__)}"
        )
    T = frames.shape[0]
    rows = 1 if spectrogram is None else 2
    fig = Figure(figsize=(1.45 * T + 1.0, 1.9 + 2.4 * (rows - 1)), layout="constrained")
    grid = fig.add_gridspec(rows, T, height_ratios=[1.0] if rows == 1 else [1.0, 1.4])
    for t in range(T):
        ax = fig.add_subplot(grid[0, t])
        ax.imshow(frames[t], interpolation="nearest")
        ax.set_title(f"frame {t}\n{t / fps:.3f} s", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if spectrogram is not None:
        if not isinstance(spectrogram, np.ndarray) or spectrogram.ndim != 2:
            raise ValueError(f"spectrogram: expected (F, M), got {getattr(spectrogram, 'shape', None)}")
        F, M = spectrogram.shape
        ax = fig.add_subplot(grid[1, :])
        extent = (0.0, (M * hop + n_fft - hop) / sample_rate, 0.0, F * sample_rate / n_fft)
        image = ax.imshow(
            spectrogram, origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="nearest"
        )
        for seconds, label in events:
            ax.axvline(seconds, color="white", linestyle=":", linewidth=0.8)
            ax.text(seconds, extent[3] * 0.97, label, color="white", fontsize=7, va="top", ha="left")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
        ax.set_xlim(0.0, T / fps)
        fig.colorbar(image, ax=ax, label="log |STFT|", pad=0.01)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_frame_attention(
    maps: Mapping[str, np.ndarray],
    grid: tuple[int, int],
    query: tuple[int, int],
    *,
    title: str = "Where one patch looks, frame by frame",
    cmap: str = "viridis",
) -> Figure:
    """One row of T small heatmaps per map: a query token's weights over every patch of every frame.

    Args:
        maps: name -> ``(T, N)`` weights of one query over the T·N tokens (each row of the
            whole map sums to 1 over all frames), e.g. ``{"joint": ..., "divided": ...}``.
        grid: ``(rows, columns)`` of each frame's patches, ``N = rows * columns``.
        query: ``(frame, patch)`` of the query, outlined in red.
        title: what to see.
        cmap: a matplotlib colormap; one colour scale for every panel.
    """
    if not maps:
        raise ValueError("maps: expected at least one named (T, N) map, got none")
    arrays = {
        name: check_attention_weights(name, np.asarray(m).reshape(1, -1)).reshape(np.shape(m))
        for name, m in maps.items()
    }
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"maps: expected (T, N) arrays all of one shape, got {sorted(shapes)}")
    T, N = next(iter(shapes))
    gh, gw = grid
    if gh * gw != N:
        raise ValueError(f"grid: expected rows * columns = {N} patches, got {grid}")
    top = max(float(a.max()) for a in arrays.values()) or 1.0
    fig = Figure(figsize=(1.3 * T + 1.6, 1.35 * len(arrays) + 0.9), layout="constrained")
    axes = fig.subplots(len(arrays), T, squeeze=False)
    qt, qn = query
    for row, (name, a) in enumerate(arrays.items()):
        for t in range(T):
            ax = axes[row, t]
            ax.imshow(a[t].reshape(gh, gw), vmin=0.0, vmax=top, cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if t == 0:
                ax.set_ylabel(name, fontsize=9)
            if t == qt:
                r, c = divmod(qn, gw)
                ax.add_patch(_outline(r, c))
            ax.text(
                gw - 0.5, gh - 0.5, f"{a[t].sum():.2f}", color="white", fontsize=6, ha="right", va="bottom"
            )
    fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, top), cmap=cmap),
        ax=axes,
        label="weight (number: the frame's total)",
        shrink=0.85,
    )
    fig.suptitle(title, fontsize=11)
    return fig


def _outline(row: int, col: int):
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5)


def plot_spacetime_cost(fig: Figure, rows: Sequence[Mapping[str, float]], *, title: str = "") -> Figure:
    """Scores, peak memory and time of joint and divided attention against T, on ``fig`` (log-log).

    ``rows`` are :mod:`benchmarks.spacetime`'s: ``T``, ``joint_scores``, ``divided_scores``,
    ``joint_mib``, ``divided_mib``, ``joint_ms``, ``divided_ms``.
    """
    if not rows:
        raise ValueError("rows: expected the benchmark's rows, got none")
    T = np.array([r["T"] for r in rows], dtype=float)
    axes = fig.subplots(1, 3)
    panels = (
        ("scores", "attention scores per forward", 1.0),
        ("mib", "peak memory (MiB)", 1.0),
        ("ms", "time, forward + backward (ms)", 1.0),
    )
    for ax, (key, label, _) in zip(axes, panels, strict=True):
        joint = np.array([r[f"joint_{key}"] for r in rows], dtype=float)
        divided = np.array([r[f"divided_{key}"] for r in rows], dtype=float)
        ax.loglog(T, joint, "o-", color="tab:red", label="joint (T·N tokens, all pairs)")
        ax.loglog(T, divided, "s-", color="tab:blue", label="divided (time, then space)")
        ax.set_xticks(T, [str(int(t)) for t in T])
        ax.minorticks_off()
        ax.set_xlabel("frames T")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_title("scores: joint grows as T², divided as T", fontsize=10)
    axes[1].set_title("memory of forward + backward", fontsize=10)
    axes[2].set_title("measured time (shared machine: read ratios)", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle("Joint vs divided space-time attention" + (f" ({title})" if title else ""), fontsize=11)
    return fig


def plot_accuracy_by_kind(
    results: Mapping[str, Mapping[str, float]],
    chance: Mapping[str, float],
    *,
    title: str = "Test accuracy per question kind",
) -> Figure:
    """Grouped bars: one group per question kind, one bar per run, a dashed chance line per kind.

    Args:
        results: run name -> {kind -> accuracy}; every run has the same kinds.
        chance: kind -> the majority-class rate of that kind (what a model that ignores the
            clip can reach).
        title: what to see.
    """
    if not results:
        raise ValueError("results: expected at least one run, got none")
    kinds = [k for k in next(iter(results.values())) if k != "all"]
    missing = [k for k in kinds if k not in chance]
    if missing:
        raise ValueError(f"chance: expected a rate for every kind, missing {missing}")
    fig = Figure(figsize=(1.5 * len(kinds) + 2.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    x = np.arange(len(kinds))
    for i, (name, accs) in enumerate(results.items()):
        values = [accs[k] for k in kinds]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=name)
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    for xi, k in zip(x, kinds, strict=True):
        ax.plot([xi - 0.45, xi + 0.45], [chance[k]] * 2, "k--", linewidth=1)
    ax.plot([], [], "k--", linewidth=1, label="chance (majority answer)")
    ax.set_xticks(x, kinds)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_xlabel("question kind")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title, fontsize=11)
    return fig
