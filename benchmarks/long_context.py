"""Blocked attention on long inputs against plain attention and PyTorch's flash kernel.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/long_context.py
    (writes figures/long_context_memory.png; --quick for a few-second smoke run)

The ``env -u`` lifts this machine's OpenBLAS pin to Haswell kernels, as
``benchmarks/encoder_layer.py`` explains, so that OpenBLAS picks its own (SkylakeX) kernels.

What is measured, forward + backward of one attention call, float32, d = 64, no mask,
B = 1, for H = 1 and H = 8 heads and each length L:

* blocked: ``ops.flash_attention_forward`` + ``ops.flash_attention_backward`` with their
  defaults (tiles from :func:`mmt_numpy.ops.flash_attention.default_tiles`, one thread per
  core; memory O(L·d + tile));
* torch: ``torch.nn.functional.scaled_dot_product_attention`` + ``.backward`` on the same
  arrays (PyTorch's CPU flash-attention kernel), its default threads (one per core);
* plain (H = 1): ``ops.attention_forward`` + ``ops.attention_backward``, which builds and
  keeps the (L, L) weights, so its memory grows as L²;
* blocked, causal (H = 1): ``causal=True``, which skips the tiles above the diagonal.

Time: after one untimed warm-up of each, ``--repeats`` rounds run every contender once in
turn (alternating, so a slow minute on the shared machine hits all of them), with a pause
before and after PyTorch (its OpenMP threads and OpenBLAS's spin for a while after a call
and would slow the next library down); the table shows medians.  The script first checks
that ours and PyTorch's outputs and gradients agree.

Peak memory is the highest ``tracemalloc`` reading during one forward + backward, minus the
reading before it (NumPy reports its buffers to tracemalloc), so it counts the output, the
three gradients and every temporary, but not the inputs.  Plain attention is run only where
its ~3.5 (L, L) float32 arrays fit in half of the free memory and L <= ``--plain-max``;
elsewhere its numbers are extrapolated as c·L² from the largest measured length (marked
"~").  Targets: blocked peak memory <= 10% of plain's at L = 4096 and <= 5% at L = 16384;
blocked time <= PyTorch's at L = 4096 and 16384 for H = 1 (H = 8 reported).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mmt_numpy import ops
from mmt_numpy.ops.flash_attention import available_cores, default_tiles

try:
    import torch
except ImportError:  # the torch columns then read "-"
    torch = None

MiB = 2**20
MEMORY_TARGETS = {4096: 0.10, 16384: 0.05}  # L -> blocked peak / plain peak at most this
SPEED_TARGETS = {4096: 1.0, 16384: 1.0}  # L -> blocked time / torch time at most this (H = 1)
PAUSE_BEFORE_TORCH = 0.15  # seconds; see the docstring of benchmarks/encoder_layer.py
PAUSE_AFTER_TORCH = 0.05


def plain(q: np.ndarray, k: np.ndarray, v: np.ndarray, d_out: np.ndarray) -> None:
    out, cache = ops.attention_forward(q, k, v)
    ops.attention_backward(d_out, cache)


def blocked(q: np.ndarray, k: np.ndarray, v: np.ndarray, d_out: np.ndarray, *, causal: bool = False) -> None:
    out, cache = ops.flash_attention_forward(q, k, v, causal=causal)
    ops.flash_attention_backward(d_out, cache)


def torch_step(tensors: tuple, d_out: object) -> None:
    for t in tensors:
        t.grad = None
    out = torch.nn.functional.scaled_dot_product_attention(*tensors)
    out.backward(d_out)


def check_agreement(q: np.ndarray, k: np.ndarray, v: np.ndarray, d_out: np.ndarray) -> float:
    """Largest |ours − torch| over the output and the three gradients (float32)."""
    out, cache = ops.flash_attention_forward(q, k, v)
    ours = (out, *ops.flash_attention_backward(d_out, cache))
    tensors = tuple(torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    t_out = torch.nn.functional.scaled_dot_product_attention(*tensors)
    t_out.backward(torch.from_numpy(d_out))
    theirs = (t_out.detach().numpy(), *(t.grad.numpy() for t in tensors))
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))


def peak_bytes(fn: Callable[[], None]) -> int:
    """Highest traced allocation above the starting level while ``fn`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where that file does not exist."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def measure(L: int, heads: int, *, d: int, repeats: int, plain_max: int) -> dict:
    """One row of the table: medians of ``repeats`` alternating runs, and peak memories."""
    rng = np.random.default_rng(L + heads)
    q, k, v, d_out = (rng.standard_normal((1, heads, L, d), dtype=np.float32) for _ in range(4))
    contenders: dict[str, Callable[[], None]] = {"blocked": partial(blocked, q, k, v, d_out)}
    row: dict = {"L": L, "H": heads}
    if heads == 1:
        contenders["causal"] = partial(blocked, q, k, v, d_out, causal=True)
        free = available_bytes()
        if L <= plain_max and (free is None or 3.5 * L * L * 4 < free / 2):
            contenders["plain"] = partial(plain, q, k, v, d_out)
            row["plain_mem"] = peak_bytes(contenders["plain"])
        row["blocked_mem"] = peak_bytes(contenders["blocked"])
    if torch is not None:
        row["max_diff"] = check_agreement(q, k, v, d_out)
        tensors = tuple(torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        contenders["torch"] = partial(torch_step, tensors, torch.from_numpy(d_out))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(repeats + 1):  # round 0 is the warm-up
        for name, fn in contenders.items():
            if name == "torch":
                time.sleep(PAUSE_BEFORE_TORCH)
            elapsed = timed(fn)
            if name == "torch":
                time.sleep(PAUSE_AFTER_TORCH)
            if round_ > 0:
                times[name].append(elapsed)
    for name, ts in times.items():
        row[f"{name}_time"] = statistics.median(ts)
    return row


def extrapolate_plain(rows: list[dict]) -> None:
    """Fill plain's missing H = 1 numbers as c·L² from the largest length it ran at."""
    ones = [r for r in rows if r["H"] == 1]
    measured = [r for r in ones if "plain_time" in r]
    if not measured:
        return
    ref = measured[-1]
    for r in ones:
        r["plain_extrapolated"] = "plain_time" not in r
        if r["plain_extrapolated"]:
            factor = (r["L"] / ref["L"]) ** 2
            r["plain_mem"] = ref["plain_mem"] * factor
            r["plain_time"] = ref["plain_time"] * factor


def _cell(r: dict, key: str, scale: float, fmt: str) -> str:
    if key not in r:
        return "-"
    mark = "~" if key.startswith("plain") and r.get("plain_extrapolated") else ""
    return f"{mark}{r[key] * scale:{fmt}}"


def table(rows: list[dict], *, d: int, repeats: int) -> str:
    tiles = {r["L"]: "x".join(map(str, default_tiles(r["L"], r["L"], d))) for r in rows}
    lines = [
        f"forward + backward, B=1, d={d}, float32, no mask; medians of {repeats} alternating runs; "
        f"blocked: default tiles, {available_cores()} threads; "
        f"torch: {torch.get_num_threads() if torch else '-'} threads; "
        "'~' = extrapolated as c·L² (plain not run)",
        "",
        "| H | L | tiles | blocked ms | torch ms | blocked / torch | plain ms | blocked causal ms "
        "| blocked peak MiB | plain peak MiB | blocked / plain memory | max abs diff vs torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['blocked_time'] / r['torch_time']:.2f}" if "torch_time" in r else "-"
        memory = f"{r['blocked_mem'] / r['plain_mem']:.2%}" if "plain_mem" in r else "-"
        diff = f"{r['max_diff']:.1e}" if "max_diff" in r else "-"
        lines.append(
            f"| {r['H']} | {r['L']} | {tiles[r['L']]} | {_cell(r, 'blocked_time', 1e3, '.1f')} | "
            f"{_cell(r, 'torch_time', 1e3, '.1f')} | {ratio} | {_cell(r, 'plain_time', 1e3, '.1f')} | "
            f"{_cell(r, 'causal_time', 1e3, '.1f')} | {_cell(r, 'blocked_mem', 1 / MiB, '.1f')} | "
            f"{_cell(r, 'plain_mem', 1 / MiB, '.1f')} | {memory} | {diff} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    verdicts = []
    for r in rows:
        if r["H"] == 1 and r["L"] in MEMORY_TARGETS and "plain_mem" in r:
            ratio = r["blocked_mem"] / r["plain_mem"]
            source = "extrapolated" if r.get("plain_extrapolated") else "measured"
            ok = ratio <= MEMORY_TARGETS[r["L"]]
            verdicts.append(
                f"L = {r['L']}: blocked peak is {ratio:.2%} of plain's {source} peak "
                f"(target <= {MEMORY_TARGETS[r['L']]:.0%}): {'met' if ok else 'NOT met'}"
            )
        if r["H"] == 1 and r["L"] in SPEED_TARGETS and "torch_time" in r:
            ratio = r["blocked_time"] / r["torch_time"]
            ok = ratio <= SPEED_TARGETS[r["L"]]
            verdicts.append(
                f"L = {r['L']}, H = 1: blocked / torch time = {ratio:.2f} "
                f"(target <= {SPEED_TARGETS[r['L']]:.1f}): {'met' if ok else 'NOT met'}"
            )
    return verdicts


def _length_axis(ax: object, L: np.ndarray) -> None:
    ax.set_xlabel("sequence length L")
    ax.set_xticks(L, [str(n) for n in L], rotation=45)
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def plot(rows: list[dict], path: Path, *, d: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ones = [r for r in rows if r["H"] == 1]  # memory and plain attention are measured at H = 1
    fig, axes = plt.subplots(1, 2 if ones else 1, figsize=(11.5 if ones else 6, 4.4), squeeze=False)
    axes = list(axes[0])
    if ones:
        ax = axes.pop(0)
        L = np.array([r["L"] for r in ones])
        measured = np.array([not r.get("plain_extrapolated", False) for r in ones], dtype=bool)
        plain_mem = np.array([r.get("plain_mem", np.nan) for r in ones]) / MiB
        if (~measured).any():
            joined = ~measured | np.roll(~measured, -1)  # join the dashed line to the last measured point
            ax.loglog(
                L[joined],
                plain_mem[joined],
                "o--",
                color="tab:red",
                mfc="white",
                label="plain, extrapolated ∝ L²",
            )
        ax.loglog(L[measured], plain_mem[measured], "o-", color="tab:red", label="plain attention")
        ax.loglog(L, [r["blocked_mem"] / MiB for r in ones], "s-", color="tab:blue", label="blocked (flash)")
        ax.set_ylabel("peak memory (MiB)")
        ax.set_title("peak memory, forward + backward, H = 1")
        _length_axis(ax, L)
    ax = axes[0]
    for heads, style in zip(sorted({r["H"] for r in rows}), ("-", "--", "-.", ":"), strict=False):
        hr = [r for r in rows if r["H"] == heads]
        hL = [r["L"] for r in hr]
        ax.loglog(
            hL, [r["blocked_time"] for r in hr], "s" + style, color="tab:blue", label=f"blocked, H = {heads}"
        )
        if "torch_time" in hr[0]:
            ax.loglog(
                hL,
                [r["torch_time"] for r in hr],
                "^" + style,
                color="black",
                label=f"PyTorch SDPA, H = {heads}",
            )
    if ones and "plain_time" in ones[0]:
        ax.loglog(
            [r["L"] for r in ones],
            [r["plain_time"] for r in ones],
            "o:",
            color="tab:red",
            label="plain, H = 1",
        )
    ax.set_ylabel("time (s), median")
    ax.set_title("time, forward + backward")
    _length_axis(ax, np.array(sorted({r["L"] for r in rows})))
    fig.suptitle(
        f"Attention for long inputs (B = 1, d = {d}, float32): memory grows as L for blocked, L² for plain"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--plain-max", type=int, default=16384, help="largest L to run plain attention at")
    parser.add_argument(
        "--repeats", type=int, default=5, help="alternating timed rounds (the median is kept)"
    )
    parser.add_argument("--quick", action="store_true", help="L = 256, 512; H = 1, 2; 1 round (a smoke run)")
    default_figure = Path(__file__).resolve().parent.parent / "figures" / "long_context_memory.png"
    parser.add_argument("--figure", type=Path, default=default_figure)
    args = parser.parse_args(argv)
    for name in ("lengths", "heads"):
        if any(n < 1 for n in getattr(args, name)):
            parser.error(f"--{name}: expected positive integers, got {getattr(args, name)}")
    if args.repeats < 1 or args.d < 1:
        parser.error("--repeats and --d: expected positive integers")
    if args.quick:
        args.lengths, args.heads, args.repeats = [256, 512], [1, 2], 1
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(
            f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} pins OpenBLAS; "
            "run with env -u (see the docstring)"
        )

    rows = []
    for heads in args.heads:
        for L in args.lengths:
            rows.append(measure(L, heads, d=args.d, repeats=args.repeats, plain_max=args.plain_max))
            print(f"  H = {heads}, L = {L:>6} done", flush=True)
    extrapolate_plain(rows)
    print()
    print(table(rows, d=args.d, repeats=args.repeats))
    verdicts = check_targets(rows)
    if verdicts:
        print()
        print("\n".join(verdicts))
    plot(rows, args.figure, d=args.d)
    print(f"\nfigure: {args.figure}")
    return 0 if all("NOT met" not in v for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
