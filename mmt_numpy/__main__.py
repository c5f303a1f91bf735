"""The command line: ``python -m mmt_numpy <command>``.

Commands:
    gradcheck   check every op's and module's backward against finite differences
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmt_numpy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    gradcheck = commands.add_parser("gradcheck", help="check every backward by finite differences")
    gradcheck.add_argument("--filter", help="only the checks whose name contains this text")
    gradcheck.add_argument("-v", "--verbose", action="store_true", help="a line per tensor")
    gradcheck.set_defaults(run=_gradcheck)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
