"""Plain vs blocked (flash) attention on long inputs: peak memory and time of forward + backward.

    python benchmarks/long_context.py            # the table, and figures/long_context_memory.png

What is measured, for each length L (B = 1 batch row, H = 1 head, d = 64, float32, no mask):

* plain:   ``ops.attention_forward`` + ``ops.attention_backward`` (builds and keeps the
           (L, L) weights, so its memory grows as L²);
* blocked: ``ops.flash_attention_forward`` + ``ops.flash_attention_backward`` with 256 × 256
           tiles (memory O(L·d + tile²));
* blocked, causal: the same with ``causal=True``, which skips the tiles above the diagonal
           (time only: about half the work).

Peak memory is the highest ``tracemalloc`` reading during one forward + backward, minus the
reading before it (NumPy reports its array buffers to tracemalloc), so it counts the output,
the three gradients and every temporary, but not the inputs q, k, v, d_out.  Time is the best
of ``--repeat`` runs with tracemalloc off.

Plain attention's peak is about 3.2 (L, L) float32 arrays (scores, weights and the
softmax temporaries; ~3.4 GB at L = 16384).  It is run only where that fits in half of
the memory still free (``MemAvailable``; the machine is shared) and L <= ``--plain-max``;
elsewhere the table shows plain's numbers extrapolated as c·L² from the largest measured
length, marked "~", and says so when checking the memory targets: the blocked version
should need at most 10% of plain's peak at L = 4096 and at most 5% at L = 16384.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mmt_numpy import ops

MiB = 2**20
TARGETS = {4096: 0.10, 16384: 0.05}  # L -> blocked peak / plain peak must be at most this


def plain(q: np.ndarray, k: np.ndarray, v: np.ndarray, d_out: np.ndarray) -> None:
    out, cache = ops.attention_forward(q, k, v)
    ops.attention_backward(d_out, cache)


def blocked(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, d_out: np.ndarray, *, block_size: int, causal: bool = False
) -> None:
    out, cache = ops.flash_attention_forward(q, k, v, causal=causal, block_size=block_size)
    ops.flash_attention_backward(d_out, cache)


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


def best_time(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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


def run(
    lengths: list[int], *, d: int, heads: int, block_size: int, plain_max: int, repeat: int
) -> list[dict]:
    rows = []
    for L in lengths:
        rng = np.random.default_rng(L)
        q, k, v, d_out = (rng.standard_normal((1, heads, L, d), dtype=np.float32) for _ in range(4))
        plain_fn = partial(plain, q, k, v, d_out)
        flash_fn = partial(blocked, q, k, v, d_out, block_size=block_size)
        causal_fn = partial(blocked, q, k, v, d_out, block_size=block_size, causal=True)
        row: dict = {"L": L}
        # Plain attention holds about 3.2 (L, L) float32 arrays at its peak; run it only if
        # that fits in half of the memory still free (the machine is shared).
        free = available_bytes()
        plain_need = 3.5 * heads * L * L * 4
        if L <= plain_max and (free is None or plain_need < free / 2):
            row["plain_mem"] = peak_bytes(plain_fn)
            row["plain_time"] = best_time(plain_fn, repeat)
        row["flash_mem"] = peak_bytes(flash_fn)
        row["flash_time"] = best_time(flash_fn, repeat)
        row["causal_time"] = best_time(causal_fn, repeat)
        rows.append(row)
        print(f"  L = {L:>6} done", flush=True)
    # Extrapolate plain as c·L² from the largest length it ran at.
    measured = [r for r in rows if "plain_mem" in r]
    if measured:
        ref = measured[-1]
        for r in rows:
            r["plain_extrapolated"] = "plain_mem" not in r
            if r["plain_extrapolated"]:
                factor = (r["L"] / ref["L"]) ** 2
                r["plain_mem"] = ref["plain_mem"] * factor
                r["plain_time"] = ref["plain_time"] * factor
    return rows


def table(rows: list[dict], *, heads: int, d: int, block_size: int) -> str:
    lines = [
        f"forward + backward, B=1, H={heads}, d={d}, float32, tiles {block_size}x{block_size}; "
        "'~' = extrapolated as c·L² (plain not run)",
        "",
        f"{'L':>6} | {'plain peak MiB':>14} | {'plain ms':>9} | {'blocked peak MiB':>16} | "
        f"{'blocked ms':>10} | {'blocked/plain mem':>17} | {'blocked causal ms':>17}",
        "-" * 107,
    ]
    for r in rows:
        mark = "~" if r.get("plain_extrapolated") else " "
        plain_mem = f"{mark}{r['plain_mem'] / MiB:.1f}" if "plain_mem" in r else "-"
        plain_time = f"{mark}{1e3 * r['plain_time']:.1f}" if "plain_time" in r else "-"
        ratio = f"{r['flash_mem'] / r['plain_mem']:.2%}" if "plain_mem" in r else "-"
        lines.append(
            f"{r['L']:>6} | {plain_mem:>14} | {plain_time:>9} | {r['flash_mem'] / MiB:>16.1f} | "
            f"{1e3 * r['flash_time']:>10.1f} | {ratio:>17} | {1e3 * r['causal_time']:>17.1f}"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    verdicts = []
    for r in rows:
        if r["L"] in TARGETS and "plain_mem" in r:
            ratio = r["flash_mem"] / r["plain_mem"]
            source = "extrapolated" if r.get("plain_extrapolated") else "measured"
            ok = ratio <= TARGETS[r["L"]]
            verdicts.append(
                f"L = {r['L']}: blocked peak is {ratio:.2%} of plain's {source} peak "
                f"(target <= {TARGETS[r['L']]:.0%}): {'met' if ok else 'NOT met'}"
            )
    return verdicts


def plot(rows: list[dict], path: Path, *, heads: int, d: int, block_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = np.array([r["L"] for r in rows])
    measured = np.array([not r.get("plain_extrapolated", False) and "plain_mem" in r for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "mem", "peak memory (MiB)", MiB), (axes[1], "time", "time (s)", 1.0))
    for ax, key, unit, scale in panels:
        plain = np.array([r.get(f"plain_{key}", np.nan) for r in rows]) / scale
        extra = ~measured | np.roll(~measured, -1)  # join the dashed line to the last measured point
        if (~measured).any():
            ax.loglog(
                L[extra], plain[extra], "o--", color="tab:red", mfc="white", label="plain, extrapolated ∝ L²"
            )
        ax.loglog(L[measured], plain[measured], "o-", color="tab:red", label="plain attention")
        ax.loglog(
            L,
            np.array([r[f"flash_{key}"] for r in rows]) / scale,
            "s-",
            color="tab:blue",
            label=f"blocked ({block_size}×{block_size} tiles)",
        )
        if key == "time":
            ax.loglog(
                L,
                [r["causal_time"] for r in rows],
                "^-",
                color="tab:green",
                label="blocked, causal (skips tiles)",
            )
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(unit)
        ax.set_xticks(L, [str(n) for n in L], rotation=45)
        ax.minorticks_off()
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    axes[0].set_title("peak memory, forward + backward")
    axes[1].set_title("time, forward + backward")
    fig.suptitle(f"Attention for long inputs (B=1, H={heads}, d={d}, float32)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--d", type=int, default=64, help="head dimension")
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--plain-max", type=int, default=16384, help="largest L to run plain attention at")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs per measurement (best kept)")
    default_figure = Path(__file__).resolve().parent.parent / "figures" / "long_context_memory.png"
    parser.add_argument("--figure", type=Path, default=default_figure)
    args = parser.parse_args(argv)

    rows = run(
        args.lengths,
        d=args.d,
        heads=args.heads,
        block_size=args.block_size,
        plain_max=args.plain_max,
        repeat=args.repeat,
    )
    print()
    print(table(rows, heads=args.heads, d=args.d, block_size=args.block_size))
    verdicts = check_targets(rows)
    if verdicts:
        print()
        print("\n".join(verdicts))
    plot(rows, args.figure, heads=args.heads, d=args.d, block_size=args.block_size)
    print(f"\nfigure: {args.figure}")
    return 0 if all("NOT met" not in v for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
