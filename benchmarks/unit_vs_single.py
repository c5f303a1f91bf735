"""UniT (§3.2) against single-task models of the same size, trained for the same steps per task.

    python benchmarks/unit_vs_single.py               # the full command's configuration
    python benchmarks/unit_vs_single.py --quick       # the tests' small configuration, seconds
    python benchmarks/unit_vs_single.py --json out.json   # also write the table (notebook 12)

Trains, on the same data and seed:

* **UniT**: the model of ``python -m mmt_numpy train --task unit``, one set of weights for
  ``vqa``, ``video_qa`` and ``itm``, the tasks taking turns;
* **single-task**: one model per task with the same sizes (width, heads, depths, queries)
  and the same number of steps of that task, alone (``tasks="vqa"`` ...).

and prints the final test accuracy of each task for both, the difference, the parameter
counts and the training time of each run.  Each single-task model has only its own
modality's encoder and one head, so UniT's total is smaller than the three single models'
together, and larger than any one of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmt_numpy.tasks.unit import TASK_NAMES, accuracy_by_kind, make_config, train_unit


def run(epochs: int | None, seed: int, quick: bool) -> dict[str, dict[str, float]]:
    """``{task: {"unit", "single", "steps", "unit params", "single params", "unit s", "single s", "kinds"}}``,
    ``kinds``: ``{kind: {"unit", "single", "rows"}}``, the test accuracy per kind of row."""
    unit = train_unit(
        make_config(epochs, seed, quick=quick), log=lambda line: print(f"  [unit] {line}", flush=True)
    )
    unit_kinds = accuracy_by_kind(unit)
    table = {}
    for task in TASK_NAMES:
        single = train_unit(
            make_config(epochs, seed, quick=quick, tasks=task),
            log=lambda line, task=task: print(f"  [{task} alone] {line}", flush=True),
        )
        assert len(single.step_losses[task]) == len(unit.step_losses[task])  # the same steps of that task
        table[task] = {
            "unit": unit.test_accuracy[task][-1],
            "single": single.test_accuracy[task][-1],
            "steps": len(unit.step_losses[task]),
            "unit params": unit.model.num_parameters(),
            "single params": single.model.num_parameters(),
            "unit s": unit.seconds,
            "single s": single.seconds,
            "kinds": {
                kind: {"unit": acc, "single": accuracy_by_kind(single)[task][kind][0], "rows": n}
                for kind, (acc, n) in unit_kinds[task].items()
            },
        }
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'task':<10}{'steps':>7}{'UniT':>9}{'alone':>9}{'UniT - alone':>14}{'params alone':>14}",
        "-" * 63,
    ]
    for task, row in table.items():
        lines.append(
            f"{task:<10}{row['steps']:>7}{row['unit']:>9.4f}{row['single']:>9.4f}"
            f"{row['unit'] - row['single']:>+14.4f}{row['single params']:>14}"
        )
    for task, row in table.items():
        for kind, k in row.get("kinds", {}).items():
            lines.append(
                f"  {task + ': ' + kind:<24}{k['unit']:>9.4f}{k['single']:>9.4f}"
                f"{k['unit'] - k['single']:>+14.4f}"
            )
    first = next(iter(table.values()))
    alone = sum(r["single params"] for r in table.values())
    lines.append(
        f"UniT: {first['unit params']} parameters for all tasks; the single models: {alone} together"
    )
    lines.append(
        f"training time: UniT {first['unit s']:.0f} s, the single models "
        f"{sum(r['single s'] for r in table.values()):.0f} s together (measured in this run)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of every run (default: the command's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the tests' small configuration")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: expected a positive integer, got {args.epochs}")
    table = run(args.epochs, args.seed, args.quick)
    print(format_table(table))
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return table


if __name__ == "__main__":
    main()
