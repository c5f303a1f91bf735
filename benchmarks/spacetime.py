"""Joint vs divided space-time attention: what each costs as a clip gets longer (§6.3).

    python benchmarks/spacetime.py          # the table, figures/spacetime_cost.csv and .png

For each number of frames T (N = 16 patches a frame, B = 4 clips, d_model = 32, 4 heads,
float32), both modules of :mod:`mmt_numpy.nn.spacetime` run forward + backward on the same
input, side by side in one run:

* joint:   ``JointSpaceTimeAttention``, one sequence of T·N tokens: ``(T·N)²`` scores a head;
* divided: ``DividedSpaceTimeAttention``, time (N sequences of T) then space (T sequences of
           N): ``T·N·(T + N)`` scores a head.

Reported: the attention scores (counted exactly from the shapes), the peak memory of one
forward + backward above the inputs (``tracemalloc``; NumPy reports its buffers to it),
and the time, the best of ``--repeat`` runs, joint and divided interleaved so that a
change in the machine's load hits both.  BLAS is held at one thread (threadpoolctl, when
installed), as in training.  The last columns are the ratios joint / divided.

The times are inflated on a shared machine; the ratios are what to read.  The CSV keeps the
measured numbers for notebook 11, which plots them without re-running this script.
"""

from __future__ import annotations

import argparse
import csv
import gc
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mmt_numpy.blas import blas_threads
from mmt_numpy.nn.spacetime import DividedSpaceTimeAttention, JointSpaceTimeAttention

MiB = 2**20
FIELDS = (
    "T",
    "tokens",
    "joint_scores",
    "divided_scores",
    "joint_mib",
    "divided_mib",
    "joint_ms",
    "divided_ms",
)


def scores(kind: str, B: int, H: int, T: int, N: int) -> int:
    """Attention scores (entries of every softmax) of one forward."""
    if kind == "joint":
        return B * H * (T * N) ** 2
    return B * H * (N * T * T + T * N * N)  # N sequences of T over time, T sequences of N over space


def step(
    module: JointSpaceTimeAttention | DividedSpaceTimeAttention, x: np.ndarray, d_out: np.ndarray
) -> None:
    out, cache = module.forward(x)
    module.backward(d_out, cache)


def peak_bytes(fn: Callable[[], None]) -> int:
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


def best_times(fns: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    """The best of ``repeat`` runs of each, the functions interleaved round by round."""
    best = dict.fromkeys(fns, np.inf)
    for fn in fns.values():
        fn()  # warm: caches, allocator
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run(frames: list[int], *, B: int, N: int, D: int, H: int, repeat: int) -> list[dict]:
    joint = JointSpaceTimeAttention(D, H, dtype=np.float32, rng=0)
    divided = DividedSpaceTimeAttention(D, H, dtype=np.float32, rng=0)
    rows = []
    for T in frames:
        rng = np.random.default_rng(T)
        x = rng.standard_normal((B, T, N, D), dtype=np.float32)
        d_out = rng.standard_normal((B, T, N, D), dtype=np.float32)
        fns = {
            "joint": partial(step, joint, x, d_out),
            "divided": partial(step, divided, x, d_out),
        }
        times = best_times(fns, repeat)
        rows.append(
            {
                "T": T,
                "tokens": T * N,
                "joint_scores": scores("joint", B, H, T, N),
                "divided_scores": scores("divided", B, H, T, N),
                "joint_mib": peak_bytes(fns["joint"]) / MiB,
                "divided_mib": peak_bytes(fns["divided"]) / MiB,
                "joint_ms": 1e3 * times["joint"],
                "divided_ms": 1e3 * times["divided"],
            }
        )
        print(f"  T = {T:>3} done", flush=True)
    return rows


def table(rows: list[dict], *, B: int, N: int, D: int, H: int) -> str:
    lines = [
        f"forward + backward, B={B} clips, N={N} patches a frame, d_model={D}, H={H}, float32",
        "",
        f"{'T':>3} {'tokens':>6} | {'joint scores':>12} {'divided':>9} | {'joint MiB':>9} {'divided':>8} | "
        f"{'joint ms':>9} {'divided':>8} | {'scores x':>8} {'mem x':>6} {'time x':>6}",
        "-" * 104,
    ]
    for r in rows:
        lines.append(
            f"{r['T']:>3} {r['tokens']:>6} | {r['joint_scores']:>12,} {r['divided_scores']:>9,} | "
            f"{r['joint_mib']:>9.2f} {r['divided_mib']:>8.2f} | "
            f"{r['joint_ms']:>9.2f} {r['divided_ms']:>8.2f} | "
            f"{r['joint_scores'] / r['divided_scores']:>8.1f} {r['joint_mib'] / r['divided_mib']:>6.1f} "
            f"{r['joint_ms'] / r['divided_ms']:>6.1f}"
        )
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in FIELDS})


def read_csv(path: Path) -> list[dict]:
    """The rows :func:`write_csv` wrote, numbers parsed (for the notebook)."""
    with open(path) as f:
        return [{k: (float(v) if "." in v else int(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def plot(rows: list[dict], path: Path, *, B: int, N: int, D: int, H: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from mmt_numpy.viz_video import plot_spacetime_cost

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    plot_spacetime_cost(fig, rows, title=f"B={B}, N={N}, d_model={D}, H={H}, float32")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patches", type=int, default=16, help="patches a frame")
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs per module (best kept)")
    figures = Path(__file__).resolve().parent.parent / "figures"
    parser.add_argument("--csv", type=Path, default=figures / "spacetime_cost.csv")
    parser.add_argument("--figure", type=Path, default=figures / "spacetime_cost.png")
    args = parser.parse_args(argv)
    for name in ("batch", "patches", "d_model", "heads", "repeat"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}"
            )
    if any(T < 1 for T in args.frames):
        parser.error(f"--frames: expected positive integers, got {args.frames}")
    if args.d_model % args.heads:
        parser.error(f"--heads: expected a divisor of --d-model {args.d_model}, got {args.heads}")
    shape = dict(B=args.batch, N=args.patches, D=args.d_model, H=args.heads)
    with blas_threads(1):
        rows = run(args.frames, repeat=args.repeat, **shape)
    print()
    print(table(rows, **shape))
    write_csv(rows, args.csv)
    plot(rows, args.figure, **shape)
    print(f"\ncsv: {args.csv}\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
