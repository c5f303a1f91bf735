"""The video QA ablations (§6.3), side by side in one run: what time positions and sound are for.

    python benchmarks/video_ablations.py              # three trainings of the full command's size
    python benchmarks/video_ablations.py --quick      # the tests' small configuration, seconds
    python benchmarks/video_ablations.py --jobs 3     # the three trainings at once (same numbers)

Trains the model of ``python -m mmt_numpy train --task video`` three times on the same data
and seed, and prints test accuracy per question kind:

* **full**: frames with time positions, and sound;
* **no time positions**: ``time_positions="none"``: the video encoder sees the frames as an
  unordered set (it still knows which patches share a frame);
* **no sound**: ``sound=False``: no sound modality at all;

plus the full model evaluated with every sound track silenced (no retraining), and the
*chance* of each kind: the accuracy of always giving the answer most frequent for that kind
in the training set.  The beep questions cannot be answered without sound, so there they should
fall to about chance; the direction, "appears last" and "at the end" questions need the order
of the frames.  ``--json`` also writes the table for notebook 11.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from mmt_numpy.data import video as vdata
from mmt_numpy.tasks.video import make_config, silenced_accuracy, train_video

RUNS = {"full": {}, "no time positions": {"time_positions": "none"}, "no sound": {"sound": False}}


def chance(train: vdata.VideoQADataset, test: vdata.VideoQADataset) -> dict[str, float]:
    """Per kind: test accuracy of always answering the kind's most frequent training answer."""
    out = {}
    for kind in vdata.KINDS:
        majority = np.bincount(train.answers[train.questions_of(kind)]).argmax()
        out[kind] = float(np.mean(test.answers[test.questions_of(kind)] == majority))
    return out


def train_one(name: str, epochs: int | None, seed: int, quick: bool) -> dict[str, dict[str, float]]:
    """One of :data:`RUNS`: its row of the table (the full run adds the silenced and chance rows)."""
    config = make_config(epochs, seed, quick=quick, **RUNS[name])
    result = train_video(config, log=lambda line: print(f"  [{name}] {line}", flush=True))
    rows = {name: {**result.test_by_kind[-1], "seconds": result.seconds}}
    if name == "full":
        rows["full, sound silenced at test"] = silenced_accuracy(result)
        rows["chance"] = {**chance(result.train_set, result.test_set), "all": float("nan")}
    return rows


def run(epochs: int | None, seed: int, quick: bool, jobs: int = 1) -> dict[str, dict[str, float]]:
    """The three trainings, one after another or (``jobs > 1``) in that many processes at once;
    each is seeded and single-threaded, so the numbers are the same either way."""
    train = partial(train_one, epochs=epochs, seed=seed, quick=quick)
    if jobs == 1:
        parts = [train(name) for name in RUNS]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            parts = list(pool.map(train, RUNS))
    table: dict[str, dict[str, float]] = {}
    for part in parts:
        table.update(part)
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    kinds = ["all", *vdata.KINDS]
    lines = [f"{'run':<30}" + "".join(f"{k:>14}" for k in kinds), "-" * (30 + 14 * len(kinds))]
    for name, row in table.items():
        lines.append(f"{name:<30}" + "".join(f"{row[k]:>14.4f}" for k in kinds))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of each training (default: the command's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the small configuration of the tests")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--jobs", type=int, default=1, help="trainings run at once, in separate processes (1 to 3)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= len(RUNS):
        parser.error(f"--jobs: expected 1 to {len(RUNS)}, got {args.jobs}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    if args.seed < 0:
        parser.error(f"--seed: expected a non-negative integer, got {args.seed}")
    table = run(args.epochs, args.seed, args.quick, args.jobs)
    print()
    print(format_table(table))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=1))
        print(f"\njson: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
