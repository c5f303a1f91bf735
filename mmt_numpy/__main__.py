"""The command line: ``python -m mmt_numpy <command>``.

Commands:
    gradcheck   check every op's and module's backward against finite differences
    figures     redraw the attention maps and the gradient-check chart in figures/
    train       train the §5 model on VQA (§6.1: toy scenes or easy-VQA) and save it with its plots
    explore     write the attention explorer, one self-contained HTML page
    ask         answer a question about a PNG image with a saved VQA model
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

    dataset = {} if args.dataset is None else {"dataset": args.dataset}
    if args.dataset == "easy-vqa" and (problem := _easy_vqa_missing()):
        return _usage_error("--dataset", problem)
    default_out = f"runs/{args.task}" if args.dataset in (None, "toy") else f"runs/{args.dataset}"
    out = args.out if args.out is not None else default_out
    quick = {"quick": True} if args.quick else {}
    task_module(args.task).main(out=out, epochs=args.epochs, seed=args.seed, **dataset, **quick)
    return 0


def _usage_error(argument: str, problem: str) -> int:
    """One line naming the argument, on stderr; exit status 2 (argparse's, for a usage error)."""
    print(f"{argument}: {' '.join(problem.split())}", file=sys.stderr)
    return 2


def _easy_vqa_missing() -> str | None:
    """Why easy-VQA cannot be read here, or None."""
    from mmt_numpy.data.easy_vqa import require_package

    try:
        require_package()
    except ModuleNotFoundError as error:
        return str(error)
    return None


def _check_params(path: str) -> tuple[object, object, dict] | str:
    """``load_model(path)``, or the one-line reason it cannot be loaded."""
    from mmt_numpy.tasks.vqa_inputs import load_model

    try:
        return load_model(path)
    except (FileNotFoundError, ValueError) as error:
        return str(error).removeprefix("params: ")


def _explore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmt_numpy.tasks.vqa import explore_vqa

    if not 1 <= args.examples <= 64:
        return _usage_error("--examples", f"expected an integer from 1 to 64, got {args.examples}")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        return _usage_error("--out", f"expected a file name ending in .html, got {args.out!r}")
    if out.is_dir():
        return _usage_error("--out", f"expected a file, got the folder {args.out!r}")
    if args.screenshot is not None and Path(args.screenshot).suffix.lower() != ".png":
        return _usage_error("--screenshot", f"expected a file name ending in .png, got {args.screenshot!r}")
    dataset = args.dataset or "toy"
    if args.params is not None:
        loaded = _check_params(args.params)
        if isinstance(loaded, str):
            return _usage_error("--params", loaded)
        dataset = loaded[1].dataset
        if args.dataset is not None and args.dataset != dataset:
            return _usage_error("--dataset", f"{args.params} was trained on {dataset}, not {args.dataset}")
    if dataset == "easy-vqa" and (problem := _easy_vqa_missing()):
        return _usage_error("--dataset" if args.params is None else "--params", problem)
    if args.screenshot is not None:
        from mmt_numpy.explorer.browser import browser_problem

        if problem := browser_problem():
            return _usage_error("--screenshot", problem)

    page = explore_vqa(args.params, dataset=dataset, examples=args.examples, seed=args.seed)
    page.save(out)
    print(f"wrote {out} ({page.nbytes} bytes, {args.examples} examples); open it in a browser")
    if args.screenshot is not None:
        from mmt_numpy.explorer.browser import screenshot

        path = screenshot(out, args.screenshot)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from mmt_numpy.data import split_words
    from mmt_numpy.data.image_files import read_png
    from mmt_numpy.tasks.vqa_inputs import answer

    if args.top < 0:
        return _usage_error("--top", f"expected a number of alternatives >= 0, got {args.top}")
    loaded = _check_params(args.params)
    if isinstance(loaded, str):
        return _usage_error("--params", loaded)
    model, inputs, _ = loaded
    try:
        image = read_png(args.image)
    except (FileNotFoundError, ValueError) as error:
        return _usage_error("--image", str(error).removeprefix("path: "))
    H, W = inputs.image_size
    if image.shape[:2] != (H, W):
        return _usage_error(
            "--image",
            f"expected a {W}x{H} picture (the size the {inputs.dataset} model was trained on), "
            f"got {image.shape[1]}x{image.shape[0]}",
        )
    words = split_words(args.question)
    if not words:
        return _usage_error("--question", "expected a question, got an empty string")
    if len(words) + 1 > inputs.question_length:
        return _usage_error(
            "--question",
            f"expected at most {inputs.question_length - 1} words (this model's longest question), "
            f"got {len(words)}",
        )
    unknown = sorted({w for w in words if w not in inputs.words})
    ranked = answer(model, inputs, image, args.question)
    print(f"question: {' '.join(words)}")
    if unknown:
        print(f"note: words this model never saw, read as [UNK]: {', '.join(unknown)}")
    best, p = ranked[0]
    print(f"answer: {best} (probability {p:.3f})")
    for rank, (name, q) in enumerate(ranked[1 : 1 + args.top], start=2):
        print(f"  {rank}. {name} ({q:.3f})")
    return 0


def _add_explore_and_ask(commands: argparse._SubParsersAction) -> None:
    """The ``explore`` and ``ask`` subcommands (both read a model that ``train`` saved)."""
    from mmt_numpy.tasks import TASKS
    from mmt_numpy.tasks.vqa_inputs import DATASETS

    explore = commands.add_parser(
        "explore",
        help="write the attention explorer: one self-contained HTML page (head, model, cross-modal view)",
    )
    explore.add_argument("--params", help="a params.npz saved by train (default: an untrained, seeded model)")
    explore.add_argument(
        "--task", choices=[t for t in TASKS if t == "vqa"], default="vqa", help="(default: vqa)"
    )
    explore.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="the seeded model's data (default toy; with --params: its own)",
    )
    explore.add_argument("--examples", type=int, default=8, help="test questions on the page (default 8)")
    explore.add_argument("--seed", type=int, default=0, help="seed of the untrained model (default 0)")
    explore.add_argument(
        "--out", default="runs/explorer.html", help="the page to write (default runs/explorer.html)"
    )
    explore.add_argument(
        "--screenshot",
        metavar="PNG",
        help="also save a screenshot taken in headless Chromium (needs selenium)",
    )
    explore.set_defaults(run=_explore)

    ask = commands.add_parser("ask", help="answer a question about a PNG image with a saved VQA model")
    ask.add_argument("--params", required=True, help="a params.npz saved by train (toy VQA or easy-VQA)")
    ask.add_argument(
        "--image", required=True, metavar="PNG", help="the picture, at the size the model was trained on"
    )
    ask.add_argument("--question", required=True, help='e.g. "what shape is in the image?"')
    ask.add_argument("--top", type=int, default=3, help="alternatives to list after the answer (default 3)")
    ask.set_defaults(run=_ask)


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
    train.add_argument(
        "--dataset",
        choices=["toy", "easy-vqa"],
        default=None,
        help="vqa: the toy scenes (default) or easy-VQA (needs the [data] extra)",
    )
    train.add_argument(
        "--quick", action="store_true", help="a few seconds' run on a small slice (a smoke test)"
    )
    train.set_defaults(run=_train)

    _add_explore_and_ask(commands)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
