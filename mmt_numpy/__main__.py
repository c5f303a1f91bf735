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
from pathlib import Path
from typing import NamedTuple

from mmt_numpy import cli

DESCRIPTION = """The multimodal Transformer of the article, in NumPy: check every backward pass,
redraw the figures, train the toy tasks, explore attention in the browser, ask a saved model."""
EPILOG = """examples:
  python -m mmt_numpy gradcheck --filter attention
  python -m mmt_numpy figures --out figures --only rollout
  python -m mmt_numpy train --epochs 4 --out runs/vqa
  python -m mmt_numpy longtext --out runs/longtext
  python -m mmt_numpy train --dataset easy-vqa
  python -m mmt_numpy explore --params runs/easy-vqa/params.npz --out runs/easy-vqa/explorer.html
  python -m mmt_numpy ask --params runs/vqa/params.npz --image a.png --question "what colour is the circle?"

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
    from mmt_numpy.tasks.vqa_inputs import DATASETS

    parser.add_argument("--task", choices=list(TASKS), default="vqa", help="what to train (default: vqa)")
    parser.add_argument(
        "--out", type=cli.output_dir, default=None, help="output folder (default: runs/<task>, e.g. runs/vqa)"
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="passes over the training set (default: the task's)",
    )
    parser.add_argument(
        "--seed", type=cli.non_negative_int, default=0, help="seed of data, initialisation and order"
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="vqa: the toy scenes (default) or easy-VQA (the [data] extra; default --out runs/easy-vqa)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds' run on a small slice (a smoke test)"
    )


def _train(args: argparse.Namespace) -> int:
    from mmt_numpy.tasks import task_module

    task = task_module(args.task)
    datasets = getattr(task, "DATASETS", ("toy",))
    if args.dataset is not None and args.dataset not in datasets:
        raise cli.CommandLineError(
            "--dataset", f"--task {args.task} trains on {', '.join(datasets)}, not {args.dataset}"
        )
    if args.dataset == "easy-vqa":
        _require_easy_vqa("--dataset")
    out = args.out
    if out is None:  # the default depends on --task and --dataset, so it is checked here, as --out would be
        default = f"runs/{args.task}" if args.dataset in (None, "toy") else f"runs/{args.dataset}"
        try:
            out = cli.output_dir(default)
        except argparse.ArgumentTypeError as exc:
            raise cli.CommandLineError("--out", str(exc)) from None
    cli.make_output_dir("--out", out)
    # --dataset and --quick are handed on only when given, so a task without them still runs
    options = {"dataset": args.dataset} if args.dataset is not None else {}
    options.update({"quick": True} if args.quick else {})
    task.main(out=str(out), epochs=args.epochs, seed=args.seed, **options)
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


def _require_easy_vqa(argument: str) -> None:
    """Refuse, naming ``argument``, when the optional easy-VQA package is not installed."""
    from mmt_numpy.data.easy_vqa import require_package

    try:
        require_package()
    except ModuleNotFoundError as exc:
        raise cli.CommandLineError(argument, str(exc)) from None


def _load_vqa_model(path: Path) -> tuple:
    """``load_model(path)`` for ``--params``: ``(model, inputs, config)`` or a one-line error."""
    from mmt_numpy.tasks.vqa_inputs import load_model

    try:
        return load_model(path)
    except (FileNotFoundError, ValueError) as exc:
        raise cli.CommandLineError("--params", str(exc).removeprefix("params: ")) from None


# ----------------------------------------------------------------------------- explore

MAX_EXAMPLES = 64  # each example adds layers * heads * L * L bytes to the page


def _explore_arguments(parser: argparse.ArgumentParser) -> None:
    from mmt_numpy.tasks.vqa_inputs import DATASETS

    parser.add_argument(
        "--params",
        type=cli.input_file,
        help="a params.npz saved by train (default: an untrained, seeded model)",
    )
    parser.add_argument(
        "--task", choices=["vqa"], default="vqa", help="whose model and questions (default: vqa)"
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="the untrained model's data (default toy; --params: its own)",
    )
    parser.add_argument(
        "--examples",
        type=cli.positive_int,
        default=8,
        help=f"test questions on the page (default 8, at most {MAX_EXAMPLES})",
    )
    parser.add_argument(
        "--seed", type=cli.non_negative_int, default=0, help="seed of the untrained model (default 0)"
    )
    parser.add_argument(
        "--out",
        type=cli.output_file(".html", ".htm"),
        default=Path("runs/explorer.html"),
        help="the page to write (default: runs/explorer.html)",
    )
    parser.add_argument(
        "--screenshot",
        type=cli.output_file(".png"),
        metavar="PNG",
        help="also save a screenshot of the page taken in headless Chromium (needs chromium and selenium)",
    )


def _explore(args: argparse.Namespace) -> int:
    from mmt_numpy.tasks.vqa import explore_vqa

    if args.examples > MAX_EXAMPLES:
        raise cli.CommandLineError("--examples", f"expected at most {MAX_EXAMPLES}, got {args.examples}")
    dataset = args.dataset or "toy"
    if args.params is not None:
        dataset = _load_vqa_model(args.params)[1].dataset
        if args.dataset is not None and args.dataset != dataset:
            raise cli.CommandLineError(
                "--dataset", f"{args.params} was trained on {dataset}, not {args.dataset}"
            )
    if dataset == "easy-vqa":
        _require_easy_vqa("--dataset" if args.params is None else "--params")
    if args.screenshot is not None:
        from mmt_numpy.explorer.browser import browser_problem

        if problem := browser_problem():
            raise cli.CommandLineError("--screenshot", problem)

    page = explore_vqa(args.params, dataset=dataset, examples=args.examples, seed=args.seed)
    cli.make_output_dir("--out", args.out.parent)
    page.save(args.out)
    print(f"wrote {args.out} ({page.nbytes} bytes, {args.examples} examples); open it in a browser")
    if args.screenshot is not None:
        from mmt_numpy.explorer.browser import screenshot

        cli.make_output_dir("--screenshot", args.screenshot.parent)
        path = screenshot(args.out, args.screenshot)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


# ----------------------------------------------------------------------------- ask


def _ask_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        type=cli.input_file,
        required=True,
        help="a params.npz saved by train (toy VQA or easy-VQA)",
    )
    parser.add_argument(
        "--image",
        type=cli.input_file,
        required=True,
        metavar="PNG",
        help="the picture, at the size trained on",
    )
    parser.add_argument("--question", required=True, help='e.g. "what shape is in the image?"')
    parser.add_argument(
        "--top", type=cli.non_negative_int, default=3, help="alternatives listed after the answer (default 3)"
    )


def _ask(args: argparse.Namespace) -> int:
    from mmt_numpy.data import split_words
    from mmt_numpy.data.image_files import read_png
    from mmt_numpy.tasks.vqa_inputs import answer

    model, inputs, _ = _load_vqa_model(args.params)
    try:
        image = read_png(args.image)
    except (FileNotFoundError, ValueError) as exc:
        raise cli.CommandLineError("--image", str(exc).removeprefix("path: ")) from None
    H, W = inputs.image_size
    if image.shape[:2] != (H, W):
        raise cli.CommandLineError(
            "--image",
            f"expected a {W}x{H} picture (the size the {inputs.dataset} model was trained on), "
            f"got {image.shape[1]}x{image.shape[0]}",
        )
    words = split_words(args.question)
    if not words:
        raise cli.CommandLineError("--question", "expected a question, got an empty string")
    if len(words) + 1 > inputs.question_length:
        raise cli.CommandLineError(
            "--question",
            f"expected at most {inputs.question_length - 1} words (the longest this model reads), "
            f"got {len(words)}",
        )
    unknown = sorted({w for w in words if w not in inputs.words})
    ranked = answer(model, inputs, image, args.question)
    print(f"question: {' '.join(words)}")
    if unknown:
        print(f"note: words this model never saw, read as [UNK]: {', '.join(unknown)}")
    best, p = ranked[0]
    print(f"answer: {best} (probability {_probability(p)})")
    for rank, (name, q) in enumerate(ranked[1 : 1 + args.top], start=2):
        print(f"  {rank}. {name} ({_probability(q)})")
    return 0


def _probability(p: float) -> str:
    """Three decimals, or two significant digits below 0.001 (a trained model is often that sure)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


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
        "train a task (default: the toy VQA of §6.1; --dataset easy-vqa); save it and its plots",
        _train_arguments,
        _train,
    ),
    "longtext": Command(
        "train readers at 128 tokens, test them up to 2048 with each position scheme",
        _longtext_arguments,
        _longtext,
    ),
    "explore": Command(
        "write the attention explorer: one self-contained HTML page (head, model, cross-modal view)",
        _explore_arguments,
        _explore,
    ),
    "ask": Command("answer a question about a PNG picture with a model saved by train", _ask_arguments, _ask),
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
