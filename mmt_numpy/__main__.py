"""The command line: ``python -m mmt_numpy <command>``.

Commands:
    gradcheck   check every op's and module's backward against finite differences
    figures     redraw the attention maps and the gradient-check chart in figures/
    train       train the §5 model on the toy VQA task (§6.1) and save it with its plots
    longtext    train readers at 128 tokens, test them up to 2048 with each position scheme
"""

from __future__ import annotations

import argparse
import sys


def _gradcheck(args: argparse.Namespace) -> int:
    from mmt_numpy.checks import all_cases
    from mmt_numpy.gradcheck import EPS, RTOL, format_table

    cases = [c for c in all_cases() if args.filter is None or args.filter in c.name]
    reports = []
    for case in cases:
        report = case.run()
        reports.append(report)
        if args.verbose:
            print(report)
    print(format_table(reports))
    failed = [r.name for r in reports if not r.passed]
    print(
        f"\n{len(reports) - len(failed)} passed, {len(failed)} failed "
        f"(central differences in float64, eps={EPS:g}; pass when max rel err <= {RTOL:g})"
    )
    return 1 if failed else 0


def _figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, and the same pixels on every machine
    from mmt_numpy.figures import FIGURES, make_figures

    unknown = [name for name in args.only or [] if name not in FIGURES]
    if unknown:
        print(f"--only: unknown figure {unknown}; choose among {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    for path in make_figures(args.out, args.only):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from mmt_numpy.tasks import task_module

    out = args.out if args.out is not None else f"runs/{args.task}"
    task_module(args.task).main(out=out, epochs=args.epochs, seed=args.seed)
    return 0


def _longtext(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"--out: expected a folder, but {out} is an existing file", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"--seed: expected an integer >= 0, got {args.seed}", file=sys.stderr)
        return 2
    from mmt_numpy.data.longtext import TASKS
    from mmt_numpy.tasks.longtext import main as longtext_main

    unknown = [t for t in args.tasks or [] if t not in TASKS]
    if unknown:
        print(f"--tasks: unknown task {unknown}; choose among {', '.join(TASKS)}", file=sys.stderr)
        return 2
    longtext_main(out=out, quick=args.quick, seed=args.seed, tasks=tuple(args.tasks) if args.tasks else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmt_numpy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    gradcheck = commands.add_parser("gradcheck", help="check every backward by finite differences")
    gradcheck.add_argument("--filter", help="only the checks whose name contains this text")
    gradcheck.add_argument("-v", "--verbose", action="store_true", help="a line per tensor")
    gradcheck.set_defaults(run=_gradcheck)

    figures = commands.add_parser("figures", help="redraw the PNG figures (attention maps, gradcheck chart)")
    figures.add_argument("--out", default="figures", help="output folder (default: figures)")
    figures.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="only these figures (names as in mmt_numpy.figures.FIGURES, e.g. rollout)",
    )
    figures.set_defaults(run=_figures)

    from mmt_numpy.tasks import TASKS

    train = commands.add_parser(
        "train", help="train a task (default: the toy VQA of §6.1); save it and its plots"
    )
    train.add_argument("--task", choices=list(TASKS), default="vqa", help="what to train (default: vqa)")
    train.add_argument("--out", default=None, help="output folder (default: runs/<task>, e.g. runs/vqa)")
    train.add_argument("--epochs", type=int, default=None, help="passes over the training set (default 12)")
    train.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order")
    train.set_defaults(run=_train)

    longtext = commands.add_parser(
        "longtext", help="length extrapolation: accuracy against length for each position scheme"
    )
    longtext.add_argument("--out", default="runs/longtext", help="output folder (default: runs/longtext)")
    longtext.add_argument("--quick", action="store_true", help="a few-second configuration (for tests)")
    longtext.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order")
    longtext.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (passkey, image)")
    longtext.set_defaults(run=_longtext)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
