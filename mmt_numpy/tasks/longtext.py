"""Can a model trained on 128 tokens read 2048?  The length-extrapolation experiment.

``python -m mmt_numpy longtext [--out DIR] [--quick] [--seed S] [--tasks T ...]`` trains small causal
readers (:class:`~mmt_numpy.nn.reader.LongTextReader`) at length 128 on the two retrieval
tasks of :mod:`mmt_numpy.data.longtext` (a pass key in filler; the sentence that describes
an image), then evaluates each at 128, 256, 512, 1024 and 2048 tokens with every position
scheme:

=====================  ==========================================================  =============
scheme                 positions                                                   trained model
=====================  ==========================================================  =============
sinusoidal             the fixed sin/cos code added to the inputs                  its own
RoPE                   rotary embeddings in attention, as trained                  RoPE
RoPE + interpolation   positions divided by s = L / 128 (Chen et al., 2023)        RoPE
RoPE + NTK             base multiplied by s^(d/(d−2)) (bloc97, 2023)               RoPE
ALiBi                  − m_h |i − j| on the scores (Press et al., 2022)            its own
window + sinks         RoPE over 4 sinks + the last 124 tokens, positions counted  RoPE
                       inside that cache (StreamingLLM, Xiao et al., 2024)
=====================  ==========================================================  =============

Three models per task are trained (sinusoidal, RoPE, ALiBi); the RoPE variants re-use the
RoPE model unchanged, as in the papers' training-free setting.  Each cell is the accuracy
on ``eval_samples`` fresh samples (the same samples for every scheme) with its standard
error √(p(1 − p)/n); chance is 1/16.  The table is printed and written, with a plot, to
``DIR`` (default ``runs/longtext``): ``results.json``, ``table.md``, ``accuracy.png``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmt_numpy import ops
from mmt_numpy.blas import available_cores, blas_threads
from mmt_numpy.data.longtext import CODES, PATCH_DIM, TASKS, VOCAB, make_longtext_batch
from mmt_numpy.nn.attention import PositionScheme
from mmt_numpy.nn.reader import LongTextReader
from mmt_numpy.optim import Adam

SCHEMES = ("sinusoidal", "RoPE", "RoPE + interpolation", "RoPE + NTK", "ALiBi", "window + sinks")
TRAINED = {"sinusoidal": "sinusoidal", "ALiBi": "alibi"}  # every other scheme re-uses the RoPE model
SINKS = 4


@dataclass
class LongTextConfig:
    """Everything that decides a run; ``quick()`` is the few-second version the tests use."""

    tasks: tuple[str, ...] = TASKS
    train_length: int = 128
    eval_lengths: tuple[int, ...] = (128, 256, 512, 1024, 2048)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 5e-3
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 128
    eval_samples: int = 64
    eval_batch_scores: int = 1 << 26  # attention scores per evaluation batch (memory bound)
    seed: int = 0
    schemes: tuple[str, ...] = SCHEMES
    log_every: int = field(default=100, repr=False)

    @classmethod
    def quick(cls) -> LongTextConfig:
        return cls(
            train_length=32, eval_lengths=(32, 64), steps=3, batch_size=4, d_model=16, num_heads=2, d_ff=32,
            eval_samples=4, log_every=1,
        )  # fmt: skip


def eval_scheme(name: str, train_length: int) -> PositionScheme | None:
    """The attention scheme of ``name`` at evaluation (None: the model's own)."""
    if name == "RoPE + interpolation":
        return PositionScheme("rope", scaling="interpolation", train_length=train_length)
    if name == "RoPE + NTK":
        return PositionScheme("rope", scaling="ntk", train_length=train_length)
    if name == "window + sinks":
        return PositionScheme("rope", window=train_length - SINKS, sinks=SINKS)
    return None


def _batch(task: str, length: int, n: int, seed: int, dtype: np.dtype):
    batch = make_longtext_batch(task, length, n, seed)
    patches = None if batch.patches is None else batch.patches.astype(dtype)
    return batch, patches


def train_reader(task: str, position: str, config: LongTextConfig, log=print) -> LongTextReader:
    """Train one reader at ``config.train_length`` with Adam; returns it in eval mode."""
    model = LongTextReader(
        len(VOCAB),
        len(CODES),
        position=position,
        patch_dim=PATCH_DIM if task == "image" else None,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        d_ff=config.d_ff,
        max_len=max(config.eval_lengths) + 1,
        dtype=np.float32,
        rng=config.seed,
    )
    optimizer = Adam(model.parameters(), lr=config.lr)
    for step in range(config.steps):
        # A fresh batch every step (seeded by the step, disjoint from the evaluation seeds).
        batch, patches = _batch(
            task, config.train_length, config.batch_size, 10_000 * config.seed + step, np.float32
        )
        lr_scale = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        optimizer.lr = config.lr * lr_scale  # warm-up, then cosine decay
        logits, cache = model.forward(batch.ids, patches)
        loss, loss_cache = ops.cross_entropy_forward(logits, batch.answers)
        optimizer.zero_grad()
        model.backward(ops.cross_entropy_backward(np.float32(1.0), loss_cache), cache)
        optimizer.step()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            accuracy = float((logits.argmax(-1) == batch.answers).mean())
            log(
                f"  [{task}, {position}] step {step + 1:>4}: loss {float(loss):.3f}, "
                f"batch accuracy {accuracy:.2f}"
            )
    return model


def evaluate(model: LongTextReader, task: str, length: int, config: LongTextConfig) -> tuple[float, float]:
    """Accuracy and its standard error on ``config.eval_samples`` samples of ``length`` tokens."""
    batch, patches = _batch(task, length, config.eval_samples, 1 + config.seed * 7919 + length, np.float32)
    per_batch = max(1, config.eval_batch_scores // (config.num_heads * length * length))
    correct = 0
    for s in range(0, config.eval_samples, per_batch):
        logits = model(batch.ids[s : s + per_batch], None if patches is None else patches[s : s + per_batch])
        correct += int((logits.argmax(-1) == batch.answers[s : s + per_batch]).sum())
    p = correct / config.eval_samples
    return p, math.sqrt(p * (1 - p) / config.eval_samples)


def _in_parallel(jobs: list, work, threads: int) -> list:
    """``[work(job) for job in jobs]`` on ``threads`` threads, BLAS held at one thread meanwhile.

    The readers are small (d_model = 64): their matrix products are too small for two BLAS
    threads to pay, and on a shared machine a multi-threaded BLAS waits for its second
    thread on every call.  One model per core instead keeps both cores busy (NumPy releases
    the GIL in BLAS and ufuncs).  Each job has its own seed, so results do not depend on
    the order the threads finish in.
    """
    with blas_threads(1):
        if threads == 1:
            return [work(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(work, jobs))


def run_experiment(
    config: LongTextConfig, log=print, threads: int | None = None, models_out: dict | None = None
) -> dict:
    """Train and evaluate every (task, scheme); returns the results as plain data.

    ``threads``: jobs run at once (default: one per core).  ``models_out``: if given, receives
    the trained readers by ``(task, "sinusoidal" | "rope" | "alibi")``, for pictures.
    """
    threads = available_cores() if threads is None else threads
    results: dict = {"config": asdict(config), "accuracy": {}, "stderr": {}, "train_seconds": {}}
    trained = [
        (task, position)
        for task in config.tasks
        for position in dict.fromkeys(TRAINED.get(n, "rope") for n in config.schemes)
    ]

    def train(job: tuple[str, str]) -> LongTextReader:
        start = time.perf_counter()
        model = train_reader(*job, config, log)
        results["train_seconds"]["/".join(job)] = round(time.perf_counter() - start, 1)
        return model

    models = dict(zip(trained, _in_parallel(trained, train, threads), strict=True))
    if models_out is not None:
        models_out.update(models)
    cells = [
        (task, name, length)
        for task in config.tasks
        for name in config.schemes
        for length in config.eval_lengths
    ]
    # Longest first, so that no thread is left with the slowest cell at the end.
    cells.sort(key=lambda cell: -cell[2])

    def score(cell: tuple[str, str, int]) -> tuple[float, float]:
        task, name, length = cell
        model = copy.deepcopy(models[(task, TRAINED.get(name, "rope"))])  # each cell its own scheme
        scheme = eval_scheme(name, config.train_length)
        if scheme is not None:
            model.set_position(scheme)
        return evaluate(model, task, length, config)

    scores = dict(zip(cells, _in_parallel(cells, score, threads), strict=True))
    for task in config.tasks:
        for name in config.schemes:
            accs, errs = zip(*(scores[(task, name, n)] for n in config.eval_lengths), strict=True)
            results["accuracy"][f"{task}/{name}"] = list(accs)
            results["stderr"][f"{task}/{name}"] = list(errs)
            log(f"  [{task}] {name:<22} " + "  ".join(f"{a:.2f}" for a in accs))
    return results


def format_table(results: dict) -> str:
    """A markdown table per task: accuracy ± standard error against length, one row per scheme."""
    config = results["config"]
    lengths = config["eval_lengths"]
    lines = []
    for task in config["tasks"]:
        lines += [
            f"task: {task} (trained at {config['train_length']} tokens; "
            f"{config['eval_samples']} samples a cell; chance {1 / len(CODES):.3f})",
            "",
            "| scheme | " + " | ".join(f"L = {n}" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for name in config["schemes"]:
            cells = zip(
                results["accuracy"][f"{task}/{name}"], results["stderr"][f"{task}/{name}"], strict=True
            )
            lines.append(f"| {name} | " + " | ".join(f"{a:.2f} ± {e:.2f}" for a, e in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    """Accuracy against length, one panel per task, one line per scheme, error bars, chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    lengths = config["eval_lengths"]
    tasks = config["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for name in config["schemes"]:
            ax.errorbar(
                lengths,
                results["accuracy"][f"{task}/{name}"],
                yerr=results["stderr"][f"{task}/{name}"],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.axhline(1 / len(CODES), color="grey", linestyle=":", label="chance (1/16)")
        ax.axvline(
            config["train_length"], color="black", linestyle="--", linewidth=0.8, label="trained length"
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: which schemes still find the answer past {config['train_length']} tokens")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    out: str | Path = "runs/longtext",
    quick: bool = False,
    seed: int = 0,
    tasks: tuple[str, ...] | None = None,
) -> dict:
    """Run the experiment, print the table, write results.json, table.md and accuracy.png to ``out``."""
    config = LongTextConfig.quick() if quick else LongTextConfig()
    config.seed = seed
    if tasks is not None:
        config.tasks = tasks
    start = time.perf_counter()
    results = run_experiment(config)
    results["seconds"] = round(time.perf_counter() - start, 1)
    table = format_table(results)
    print()
    print(table)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table)
    plot_results(results, out / "accuracy.png")
    print(
        f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'accuracy.png'} ({results['seconds']} s)"
    )
    return results
