"""Forward + backward of an encoder layer and of the §5 model, side by side with PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/encoder_layer.py
    (add --quick for a ~20-second smoke run, --repeats N for more samples)

What is timed, in one process, for float32 and float64:

* ``layer``: ``mmt_numpy.nn.TransformerEncoderLayer`` against ``torch.nn.TransformerEncoderLayer``
  (``batch_first=True``), B = 8, L = 128, d_model = 256, 8 heads, d_ff = 1024, relu,
  dropout 0, post-LN, no mask.
* ``§5 model``: ``mmt_numpy.nn.MultimodalTransformer`` against the same model written in
  PyTorch (below), B = 8, 32 text tokens (width 300) + 64 image patches (width 768),
  hidden 256, 8 heads, 2 layers, d_ff = 1024, 100 outputs, sinusoidal positions, text
  padding (lengths 17 … 32, so the key-padding mask is exercised).

One iteration is: zero the parameter gradients (ours ``zero_grad()``; PyTorch sets every
``.grad`` to None), forward, backward of a fixed upstream gradient ``G`` (PyTorch:
``out.backward(G)``), input gradients included on both sides.  Both sides get the same
parameters and inputs, and the script checks that both give the same input gradients
before timing anything.  After warm-up, every repeat runs ours, the roofline and PyTorch of
every case in turn, ``--repeats`` times, with a pause before and after each PyTorch run (see
``PAUSE_BEFORE_TORCH``: one library's idle threads would otherwise slow the other down); each
timed run follows an untimed run of the same side, so that both are timed warm, as inside a
training loop.  The table shows medians.  The machine may be shared: the BLAS peak is
measured before and after, and a warning is printed when it moved or when the roofline (the
same fixed work every time) varied by more than ``MAX_SPREAD`` between runs.

FLOPs count the matrix products only (2·m·n·k each): the forward's, and twice that for the
backward (each product ``A @ B`` needs ``dA`` and ``dB``, one product each).  The
roofline is the time of plain ``np.matmul`` calls on exactly those shapes and operand
layouts (the forward products, then the backward's ``d @ Wᵀ`` and ``xᵀ @ d``, and the
batched per-head products), on contiguous arrays of the same dtype, measured in the same
run: what this machine's BLAS does with this work and nothing else (no softmax, layer
norm, activation or bias).  For reference the script also prints the rate of one large
square matmul (the BLAS peak).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmt_numpy.nn import MultimodalTransformer, TransformerEncoderLayer

try:
    import torch
except ImportError:  # the torch columns then read "n/a"
    torch = None

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

THREADS = 2
LAYER = dict(B=8, L=128, D=256, H=8, F=1024)
MODEL = dict(B=8, Lt=32, Li=64, text_dim=300, image_dim=768, D=256, H=8, layers=2, F=1024, out=100)
# After a call, OpenBLAS's worker threads keep spinning for about 2^28 cycles (~0.1 s) before
# they sleep, and torch's OpenMP threads spin briefly too.  On 2 cores the spinning pool steals
# a core from the other library: measured here, torch ran 2x slower right after numpy, ours
# 1.4x slower right after torch.  So each side starts on a quiet machine, as when run alone.
PAUSE_BEFORE_TORCH = 0.15  # seconds
PAUSE_AFTER_TORCH = 0.03
MAX_SPREAD = 0.10  # above this run-to-run spread of the roofline, the machine was not steady

# ---------------------------------------------------------------- matrix products and FLOPs

# A product is (batch, m, k, n, a_transposed, b_transposed): batch × (m, k) @ (k, n), where a
# transposed operand is stored as the transpose (as xᵀ in dW = xᵀ d) so BLAS sees the same layout.
Product = tuple[int, int, int, int, bool, bool]


def linear_products(rows: int, d_in: int, d_out: int) -> list[Product]:
    """out = x @ W; backward dx = d @ Wᵀ, dW = xᵀ @ d (rows = every leading dimension folded)."""
    return [
        (1, rows, d_in, d_out, False, False),
        (1, rows, d_out, d_in, False, True),
        (1, d_in, rows, d_out, True, False),
    ]


def attention_products(B: int, H: int, Lq: int, Lk: int, dh: int) -> list[Product]:
    """scores = q kᵀ, out = w v; backward d_w = d_out vᵀ, dv = wᵀ d_out, dq = d_s k, dk = d_sᵀ q."""
    n = B * H
    return [
        (n, Lq, dh, Lk, False, True),
        (n, Lq, Lk, dh, False, False),
        (n, Lq, dh, Lk, False, True),
        (n, Lk, Lq, dh, True, False),
        (n, Lq, Lk, dh, False, False),
        (n, Lk, Lq, dh, True, False),
    ]


def layer_products(B: int, L: int, D: int, H: int, F: int) -> list[Product]:
    rows = B * L
    products = []
    for _ in range(4):  # W_q, W_k, W_v, W_o
        products += linear_products(rows, D, D)
    products += attention_products(B, H, L, L, D // H)
    products += linear_products(rows, D, F) + linear_products(rows, F, D)
    return products


def model_products(
    B: int, Lt: int, Li: int, text_dim: int, image_dim: int, D: int, H: int, layers: int, F: int, out: int
) -> list[Product]:
    products = linear_products(B * Lt, text_dim, D) + linear_products(B * Li, image_dim, D)
    for _ in range(layers):
        products += layer_products(B, Lt + Li, D, H, F)
    return products + linear_products(B * (Lt + Li), D, out)


def flops(products: list[Product]) -> int:
    return sum(2 * batch * m * k * n for batch, m, k, n, _, _ in products)


def roofline_fn(products: list[Product], dtype: np.dtype) -> Callable[[], None]:
    """Plain np.matmul over the products' shapes, operands and outputs allocated beforehand
    (so, unlike a model, it never pays for touching fresh memory)."""
    rng = np.random.default_rng(0)
    calls = []
    for batch, m, k, n, a_t, b_t in products:
        lead = (batch,) if batch > 1 else ()
        a = rng.standard_normal(lead + ((k, m) if a_t else (m, k))).astype(dtype)
        b = rng.standard_normal(lead + ((n, k) if b_t else (k, n))).astype(dtype)
        a = a.swapaxes(-1, -2) if a_t else a
        b = b.swapaxes(-1, -2) if b_t else b
        calls.append((a, b, np.empty(lead + (m, n), dtype)))

    def run() -> None:
        for a, b, c in calls:
            np.matmul(a, b, out=c)

    return run


# ---------------------------------------------------------------- the PyTorch counterparts


def torch_dtype(dtype: np.dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


def torch_twin(ours):
    """Our module's PyTorch twin with the same weights (``mmt_numpy.torch_bridge``)."""
    from mmt_numpy.torch_bridge import to_torch

    return to_torch(ours)


# ---------------------------------------------------------------- one case: build, check, time


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))


def build_layer(dtype: np.dtype):
    c = LAYER
    rng = np.random.default_rng(1)
    ours = TransformerEncoderLayer(c["D"], c["H"], c["F"], dtype=dtype, rng=0)
    x = rng.standard_normal((c["B"], c["L"], c["D"])).astype(dtype)
    G = rng.standard_normal((c["B"], c["L"], c["D"])).astype(dtype)

    def ours_step() -> list:
        ours.zero_grad()
        _, cache = ours.forward(x)
        return list(ours.backward(G, cache))

    theirs_step = None
    if torch is not None:
        theirs = torch_twin(ours)
        x_t = torch.from_numpy(x.copy()).requires_grad_()
        G_t = torch.from_numpy(G)

        def theirs_step() -> list:
            for p in theirs.parameters():
                p.grad = None
            x_t.grad = None
            theirs(x_t).backward(G_t)
            return [x_t.grad]

    return ours_step, theirs_step, layer_products(**LAYER)


def build_model(dtype: np.dtype):
    c = MODEL
    rng = np.random.default_rng(1)
    ours = MultimodalTransformer(
        c["text_dim"], c["image_dim"], c["D"], c["H"], c["layers"], c["out"], d_ff=c["F"], dtype=dtype, rng=0
    )
    text = rng.standard_normal((c["B"], c["Lt"], c["text_dim"])).astype(dtype)
    image = rng.standard_normal((c["B"], c["Li"], c["image_dim"])).astype(dtype)
    text_lengths = np.linspace(c["Lt"] // 2 + 1, c["Lt"], c["B"]).astype(np.int64)
    G = rng.standard_normal((c["B"], c["Lt"] + c["Li"], c["out"])).astype(dtype)

    def ours_step() -> list:
        ours.zero_grad()
        _, cache = ours.forward(text, image, text_lengths=text_lengths)
        return list(ours.backward(G, cache))

    theirs_step = None
    if torch is not None:
        theirs = torch_twin(ours)
        text_t = torch.from_numpy(text.copy()).requires_grad_()
        image_t = torch.from_numpy(image.copy()).requires_grad_()
        lengths_t = torch.from_numpy(text_lengths)
        G_t = torch.from_numpy(G)

        def theirs_step() -> list:
            for p in theirs.parameters():
                p.grad = None
            text_t.grad = image_t.grad = None
            theirs(text_t, image_t, lengths_t).backward(G_t)
            return [text_t.grad, image_t.grad]

    return ours_step, theirs_step, model_products(**MODEL)


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def spread(times: list[float]) -> float:
    """Interquartile range over median: 0 for a perfectly steady machine."""
    if len(times) < 4:
        return 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / statistics.median(times)


def prepare(build, dtype: np.dtype) -> dict:
    """Build one case: its steps (ours, roofline, torch) and FLOPs, after checking that ours
    and PyTorch compute the same thing (or the timing means nothing)."""
    ours_step, theirs_step, products = build(dtype)
    check = float("nan")
    if theirs_step is not None:
        ours_grads, their_grads = ours_step(), theirs_step()
        check = max(relative_error(a, b.numpy()) for a, b in zip(ours_grads, their_grads, strict=True))
        tolerance = 1e-3 if dtype == np.float32 else 1e-9
        if not check < tolerance:
            raise RuntimeError(f"ours and torch disagree ({np.dtype(dtype).name}): {check:.2e}")
    steps = {"ours": ours_step, "roofline": roofline_fn(products, dtype), "torch": theirs_step}
    return {
        "steps": {name: fn for name, fn in steps.items() if fn is not None},
        "flops": flops(products),
        "check": check,
    }


def time_cases(cases: list[dict], repeats: int, warmup: int) -> None:
    """Add the median ms of every step to each case.

    Every repeat visits every case and every side in turn, so that a slow spell of the
    machine (it is shared) hits all columns alike instead of one case.
    """
    for case in cases:
        for _ in range(warmup):
            for fn in case["steps"].values():
                fn()
        case["times"] = {name: [] for name in case["steps"]}
    gc.collect()
    for _ in range(repeats):
        for case in cases:
            for name, fn in case["steps"].items():
                if name == "torch":
                    time.sleep(PAUSE_BEFORE_TORCH)
                fn()  # untimed: caches, thread pool and clock warm again after the other side ran
                t0 = time.perf_counter()
                fn()
                case["times"][name].append(time.perf_counter() - t0)
                if name == "torch":
                    time.sleep(PAUSE_AFTER_TORCH)
    for case in cases:
        case.update({name: median_ms(t) for name, t in case["times"].items()})


# ---------------------------------------------------------------- report


def blas_peak(dtype: np.dtype, repeats: int) -> float:
    """GFLOP/s of one (1024 × 1024) @ (1024 × 1024) matmul, best of ``repeats``."""
    n = 1024
    a = np.ones((n, n), dtype)
    c = np.empty((n, n), dtype)
    np.matmul(a, a, out=c)
    best = min(_timed(lambda: np.matmul(a, a, out=c)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def environment() -> list[str]:
    lines = [
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{platform.processor() or 'cpu'}"
    ]
    if threadpoolctl is not None:
        for info in threadpoolctl.threadpool_info():
            version = f" {info['version']}" if info.get("version") else ""
            kernels = f", kernels {info['architecture']}" if info.get("architecture") else ""
            lines.append(
                f"{info['user_api']}: {info['internal_api']}{version}{kernels}, "
                f"{info['num_threads']} threads ({Path(info['filepath']).name})"
            )
    else:
        lines.append("BLAS: unknown (pip install threadpoolctl to see library, kernels and threads)")
    if torch is not None:
        lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    else:
        lines.append("torch: not installed (its columns read n/a)")
    return lines


def table(rows: list[tuple[str, str, dict]]) -> str:
    header = (
        "| case | dtype | ours ms | torch ms | ours/torch | ours GFLOP/s | roofline GFLOP/s | % of roofline |"
    )
    lines = [header, "|" + "---|" * 8]
    for case, dtype, r in rows:
        gflop = r["flops"] / 1e9
        torch_ms = f"{r['torch']:.1f}" if "torch" in r else "n/a"
        ratio = f"{r['ours'] / r['torch']:.2f}" if "torch" in r else "n/a"
        ours_rate = gflop / (r["ours"] / 1e3)
        roof_rate = gflop / (r["roofline"] / 1e3)
        lines.append(
            f"| {case} | {dtype} | {r['ours']:.1f} | {torch_ms} | {ratio} | {ours_rate:.0f} "
            f"| {roof_rate:.0f} | {100 * ours_rate / roof_rate:.0f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs of each side (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up")
    args = parser.parse_args()
    repeats, warmup = (5, 1) if args.quick else (max(1, args.repeats), max(0, args.warmup))

    if torch is not None:
        torch.set_num_threads(THREADS)
    limits = threadpoolctl.threadpool_limits(THREADS, user_api="blas") if threadpoolctl else None
    try:
        print("\n".join(environment()))
        peaks_before = {dt: blas_peak(dt, 5) for dt in (np.float32, np.float64)}
        rows = [
            (case, np.dtype(dtype).name, prepare(build, dtype))
            for case, build in (("layer", build_layer), ("§5 model", build_model))
            for dtype in (np.float32, np.float64)
        ]
        time_cases([r for _, _, r in rows], repeats, warmup)
        c, m = LAYER, MODEL
        print(
            f"\nlayer: B={c['B']}, L={c['L']}, d_model={c['D']}, heads={c['H']}, d_ff={c['F']}, relu, "
            f"dropout 0, post-LN; {rows[0][2]['flops'] / 1e9:.2f} GFLOP of matmuls per forward+backward"
        )
        print(
            f"§5 model: B={m['B']}, {m['Lt']} text tokens (width {m['text_dim']}, padded) + {m['Li']} "
            f"image patches (width {m['image_dim']}), hidden {m['D']}, heads {m['H']}, {m['layers']} "
            f"layers, d_ff {m['F']}, {m['out']} outputs; {rows[2][2]['flops'] / 1e9:.2f} GFLOP"
        )
        print(
            f"medians of {repeats} alternating runs (forward + backward, gradients zeroed each run); "
            "roofline = np.matmul on the same shapes and layouts\n"
        )
        print(table(rows))
        checks = ", ".join(f"{case} {dt} {r['check']:.0e}" for case, dt, r in rows)
        if torch is not None:
            print(f"\nours vs torch, worst relative difference of the input gradients: {checks}")
        peaks_after = {dt: blas_peak(dt, 5) for dt in (np.float32, np.float64)}
        peaks = ", ".join(
            f"{np.dtype(dt).name} {peaks_before[dt]:.0f} before, {peaks_after[dt]:.0f} after"
            for dt in peaks_before
        )
        print(f"one 1024³ matmul (BLAS peak), GFLOP/s: {peaks}")
        # The machine may be shared.  The roofline does the same fixed work every time, so its
        # spread between runs measures the machine's own noise.
        spreads = [spread(r["times"]["roofline"]) for _, _, r in rows]
        print(
            "roofline run-to-run spread (interquartile range / median): "
            + ", ".join(f"{100 * x:.0f}%" for x in spreads)
        )
        moved = any(abs(peaks_after[dt] / peaks_before[dt] - 1) > 0.15 for dt in peaks_before)
        if moved or max(spreads) > MAX_SPREAD:
            print(
                "warning: the machine's speed changed during the run (other load on it?); "
                "rerun before quoting these numbers"
            )
    finally:
        if limits is not None:
            limits.restore_original_limits()


if __name__ == "__main__":
    main()
