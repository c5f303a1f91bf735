"""Greedy decoding speed: our KV cache, our recomputation, and torch.nn.TransformerDecoder, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/generation.py
    (add --quick for a smoke run of a few seconds, --repeats N for more samples)

The model: an :class:`~mmt_numpy.nn.ImageCaptioner` with width 256, 8 heads, d_ff 1024, 2
encoder and 2 decoder layers (pre-LN, final norms), a vocabulary of 1000 tokens, 64 image
patches (an 8 x 8 grid), float32, batch 1, random weights.  Its end token is made unreachable
(output bias -1e9), so every run writes exactly N new tokens; N = 16, 64, 256.

Three ways to write the same N tokens, in one process:

* ``ours, KV cache``: ``model.generate(patches, max_len=N)``: the image's cross-attention keys
  and values projected once, one new position per step through every layer;
* ``ours, recompute``: ``model.generate(patches, max_len=N, use_cache=False)``: every step
  runs the decoder over the whole prefix (and the cross-attention over the memory) again;
* ``torch, recompute``: ``torch.nn.TransformerDecoder`` (``batch_first=True``, ``tgt_mask``
  causal, ``torch.no_grad()``, eval mode) with the same weights (``mmt_numpy.torch_bridge``:
  the decoder, the word table, the positions and the tied output layer), fed the same memory
  (our encoder's output, computed before its timer starts), recomputing the prefix every step:
  ``TransformerDecoder`` keeps no cache.

Ours includes the image encoder in its time (one pass over 64 patches, under 1% of a run).
Before timing, all three must write the same 64 tokens (in float64) or the script stops.  Each
figure is the median over ``--repeats`` runs, each after a warm-up run of the same kind, with
a pause between ours and torch (their idle BLAS/OpenMP threads would steal each other's core).
Both libraries use ``--threads`` threads (default 2, the machine's cores).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np

from mmt_numpy import ops
from mmt_numpy.nn import ImageCaptioner

try:
    import torch
except ImportError:  # the torch column then reads "n/a"
    torch = None

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

THREADS = 2
MODEL = dict(d_model=256, num_heads=8, d_ff=1024, encoder_layers=2, decoder_layers=2, vocab=1000, grid=(8, 8))
PATCH_DIM = 48  # 4 x 4 pixel patches, RGB
BOS, EOS, PAD = 1, 2, 0
PAUSE = 0.15  # seconds between ours and torch (see the module docstring)


def build(dtype: np.dtype, max_tokens: int) -> tuple[ImageCaptioner, np.ndarray]:
    c = MODEL
    model = ImageCaptioner(
        c["vocab"],
        PATCH_DIM,
        c["grid"],
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        d_model=c["d_model"],
        num_heads=c["num_heads"],
        d_ff=c["d_ff"],
        encoder_layers=c["encoder_layers"],
        decoder_layers=c["decoder_layers"],
        max_len=max_tokens,
        dtype=dtype,
        rng=0,
    )
    model.output.b.data[EOS] = -1e9  # never end: every run writes exactly N tokens
    rng = np.random.default_rng(1)
    patches = rng.random((1, c["grid"][0] * c["grid"][1], PATCH_DIM)).astype(dtype)
    return model, patches


def ours_fn(model: ImageCaptioner, patches: np.ndarray, n: int, use_cache: bool) -> Callable[[], np.ndarray]:
    return lambda: model.generate(patches, max_len=n, use_cache=use_cache)[0]


def torch_fn(model: ImageCaptioner, patches: np.ndarray, n: int) -> Callable[[], np.ndarray]:
    """Greedy decoding with torch.nn.TransformerDecoder, recomputing the prefix at every step."""
    from mmt_numpy.torch_bridge import to_torch, torch_mask

    decoder = to_torch(model.decoder).eval()
    embedding = to_torch(model.token_embedding).eval()
    positions = to_torch(model.text_position).eval()
    output = to_torch(model.output).eval()
    memory_np, _ = model.encode(patches)
    memory = torch.from_numpy(memory_np)
    masks = [torch_mask(ops.causal_mask(t)) for t in range(1, n + 1)]
    unwritable = [model.bos_id, model.pad_id]

    def run() -> np.ndarray:
        tokens = torch.full((1, 1), model.bos_id, dtype=torch.long)
        with torch.no_grad():
            for t in range(n):
                x = embedding(tokens) + positions(torch.arange(t + 1))
                h = decoder(x, memory, tgt_mask=masks[t], tgt_is_causal=True)
                logits = output(h[:, -1])
                logits[:, unwritable] = -torch.inf  # as ours: the start and padding tokens are never written
                tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        return tokens[:, 1:].numpy()

    return run


CHECK_TOKENS = 64  # the float64 agreement check writes this many tokens (or fewer, if the run does)


def check_same_tokens(lengths: list[int]) -> None:
    """In float64 the three write the same tokens (else a speed comparison means nothing)."""
    n = min(max(lengths), CHECK_TOKENS)
    model, patches = build(np.float64, n)
    cached = ours_fn(model, patches, n, True)()
    recomputed = ours_fn(model, patches, n, False)()
    if not np.array_equal(cached, recomputed):
        raise RuntimeError("ours with and without the KV cache wrote different tokens")
    if torch is not None and not np.array_equal(cached, torch_fn(model, patches, n)()):
        raise RuntimeError("ours and torch.nn.TransformerDecoder wrote different tokens")


def median_seconds(fn: Callable[[], np.ndarray], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        fn()  # warm: the same kind of run just before
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(lengths: list[int], repeats: int, dtype: np.dtype) -> list[dict]:
    check_same_tokens(lengths)
    rows = []
    for n in lengths:
        model, patches = build(dtype, n)
        row = {"tokens": n}
        row["cached"] = median_seconds(ours_fn(model, patches, n, True), repeats)
        row["recompute"] = median_seconds(ours_fn(model, patches, n, False), repeats)
        row["torch"] = float("nan")
        if torch is not None:
            time.sleep(PAUSE)
            row["torch"] = median_seconds(torch_fn(model, patches, n), repeats)
            time.sleep(PAUSE)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    header = (
        f"{'new tokens':>10}  {'ours, KV cache':>16}  {'ours, recompute':>16}  {'torch, recompute':>17}  "
        f"{'cache / recompute':>17}  {'cache / torch':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        n = r["tokens"]
        rates = [n / r[k] for k in ("cached", "recompute", "torch")]
        lines.append(
            f"{n:>10}  {rates[0]:>10.0f} tok/s  {rates[1]:>10.0f} tok/s  {rates[2]:>11.0f} tok/s  "
            f"{r['recompute'] / r['cached']:>16.1f}x  {r['torch'] / r['cached']:>12.1f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 and 32 tokens, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median; default 3)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--threads", type=int, default=THREADS, help=f"BLAS and torch threads (default {THREADS})"
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    lengths = [16, 32] if args.quick else [16, 64, 256]
    repeats = 1 if args.quick else args.repeats
    if torch is not None:
        torch.set_num_threads(args.threads)
    limits = threadpoolctl.threadpool_limits(args.threads) if threadpoolctl is not None else nullcontext()
    with limits:
        rows = run(lengths, repeats, np.dtype(args.dtype))
    c = MODEL
    print(
        f"greedy decoding, batch 1, width {c['d_model']}, {c['num_heads']} heads, d_ff {c['d_ff']}, "
        f"{c['decoder_layers']} decoder layers, {c['grid'][0] * c['grid'][1]} image patches, "
        f"vocabulary {c['vocab']}, {args.dtype}, {args.threads} threads, median of {repeats}"
    )
    print(
        f"numpy {np.__version__}, torch {torch.__version__ if torch else 'n/a'}, "
        f"{platform.processor() or platform.machine()}"
    )
    same = "ours cached = ours recomputed" + (" = torch" if torch is not None else "")
    print(f"same {min(max(lengths), CHECK_TOKENS)} tokens in float64: {same}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
