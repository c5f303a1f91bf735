"""The command line: ``python -m mmt_numpy COMMAND [options]``.

Each command is two functions and one entry of :data:`COMMANDS`: ``arguments(parser)`` adds
its options (types from :mod:`mmt_numpy.cli`, so each is checked while parsing), and
``run(args)`` does the work and returns the exit code.  ``run`` checks whatever parsing
could not before it writes anything, raising :class:`~mmt_numpy.cli.CommandLineError`;
every error is one line naming the argument, with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NamedTuple

from mmt_numpy import cli

DESCRIPTION = """The multimodal Transformer of the article, in NumPy: check every backward pass,
redraw the figures, train the toy tasks."""
EPILOG = """examples:
  python -m mmt_numpy gradcheck --filter attention
  python -m mmt_numpy figures --out figures --only rollout
  python -m mmt_numpy train --epochs 4 --out runs/vqa
  python -m mmt_numpy longtext --out runs/longtext

'python -m mmt_numpy COMMAND --help' lists the options of a command."""


# ----------------------------------------------------------------------------- gradcheck


def _gradcheck_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", help="only the checks whose name contains this text")
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per tensor")


def _gradcheck(args: argparse.Namespace) -> int:
    from mmt_numpy.checks import all_cases
    from mmt_numpy.gradcheck import EPS, RTOL, format_table

    cases = all_cases()
    if args.filter is not None:
        names = [c.name for c in cases]
        cases = [c for c in cases if args.filter in c.name]
        if not cases:
            raise cli.CommandLineError(
                "--filter", f"no check name contains {args.filter!r}; the names are: {', '.join(names)}"
            )
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


# ----------------------------------------------------------------------------- figures


def _figures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=cli.output_dir, default="figures", help="output folder (default: figures)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="only these figures (names as in mmt_numpy.figures.FIGURES, e.g. rollout)",
    )


def _figures(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, and the same pixels on every machine
    from mmt_numpy.figures import FIGURES, make_figures

    unknown = [name for name in args.only or [] if name not in FIGURES]
    if unknown:
        raise cli.CommandLineError("--only", f"unknown figure {unknown}; choose among {', '.join(FIGURES)}")
    cli.make_output_dir("--out", args.out)
    for path in make_figures(args.out, args.only):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


# ----------------------------------------------------------------------------- train


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from mmt_numpy.tasks import TASKS

    parser.add_argument("--task", choices=list(TASKS), default="vqa", help="what to train (default: vqa)")
    parser.add_argument(
        "--out", type=cli.output_dir, default=None, help="output folder (default: runs/<task>, e.g. runs/vqa)"
    )
    parser.add_argument(
        "--epochs", type=cli.positive_int, default=None, help="passes over the training set (default 12)"
    )
    parser.add_argument(
        "--seed", type=cli.non_negative_int, default=0, help="seed of data, initialisation and order"
    )


def _train(args: argparse.Namespace) -> int:
    from mmt_numpy.tasks import task_module

    out = args.out
    if out is None:  # the default depends on --task, so it is checked here, as --out would be
        try:
            out = cli.output_dir(f"runs/{args.task}")
        except argparse.ArgumentTypeError as exc:
            raise cli.CommandLineError("--out", str(exc)) from None
    cli.make_output_dir("--out", out)
    task_module(args.task).main(out=str(out), epochs=args.epochs, seed=args.seed)
    return 0


# ----------------------------------------------------------------------------- longtext


def _longtext_arguments(parser: argparse.ArgumentParser) -> None:
    from mmt_numpy.data.longtext import TASKS

    parser.add_argument(
        "--out", type=cli.output_dir, default="runs/longtext", help="output folder (default: runs/longtext)"
    )
    parser.add_argument("--quick", action="store_true", help="a few-second configuration (for tests)")
    parser.add_argument(
        "--seed", type=cli.non_negative_int, default=0, help="seed of data, initialisation and order"
    )
    parser.add_argument(
        "--tasks", nargs="+", choices=TASKS, metavar="TASK", help="only these tasks (passkey, image)"
    )


def _longtext(args: argparse.Namespace) -> int:
    from mmt_numpy.tasks.longtext import main as longtext_main

    cli.make_output_dir("--out", args.out)
    longtext_main(
        out=args.out, quick=args.quick, seed=args.seed, tasks=tuple(args.tasks) if args.tasks else None
    )
    return 0


# ----------------------------------------------------------------------------- the table


class Command(NamedTuple):
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# name -> (one line of help, the function adding its options, the function running it)
COMMANDS: dict[str, Command] = {
    "gradcheck": Command(
        "check every op's and module's backward against finite differences", _gradcheck_arguments, _gradcheck
    ),
    "figures": Command(
        "redraw the attention maps and the gradient-check chart in figures/", _figures_arguments, _figures
    ),
    "train": Command(
        "train a task (default: the toy VQA of §6.1); save it and its plots", _train_arguments, _train
    ),
    "longtext": Command(
        "train readers at 128 tokens, test them up to 2048 with each position scheme",
        _longtext_arguments,
        _longtext,
    ),
}


def _command_list() -> str:
    """The commands, one line each, for the top-level help (argparse's own list shows them twice)."""
    width = max(map(len, COMMANDS)) + 2
    return "\n".join(f"  {name:<{width}}{command.help}" for name, command in COMMANDS.items())


def build_parser() -> cli.ArgumentParser:
    """The parser of every command in :data:`COMMANDS` (one-line errors, see :mod:`mmt_numpy.cli`)."""
    parser = cli.ArgumentParser(
        prog="python -m mmt_numpy",
        usage="%(prog)s [-h] COMMAND [options]",
        description=f"{DESCRIPTION}\n\ncommands:\n{_command_list()}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", help=argparse.SUPPRESS, required=True, prog=parser.prog
    )
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.arguments(sub)
        sub.set_defaults(run=command.run, parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its exit code.

    A parsing error exits at once (``SystemExit(2)``, as argparse does); an error found by the
    command before it writes anything prints the same one-line form and returns 2.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except cli.CommandLineError as exc:
        print(f"{args.parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
