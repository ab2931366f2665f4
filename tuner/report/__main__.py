"""``python -m tuner.report PATH [PATH ...] [--out DIR]``: write an experiment report.

PATH is an experiment folder (``results/<experiment>``) or a results root; several
experiments (several paths, or a root holding several) are compared. Writes
``report.html`` (self-contained: open it anywhere), ``report.md`` and ``figures/`` into
``--out`` (default ``<PATH>/report/``). Works while a search is still running.
"""

from __future__ import annotations

import argparse
import sys

from trainables.clihelp import HelpFormatter
from tuner.report import NoResultsError, build_report


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner.report``."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="results/<experiment> folder(s) or results root(s)"
    )
    p.add_argument("--out", help="output folder (default: <PATH>/report/)")
    p.add_argument(
        "--no-figures",
        action="store_true",
        help="skip the augmented views and feature maps (no dataset or checkpoint needed)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2: a path with no results)."""
    args = build_parser().parse_args(argv)
    try:
        page = build_report(args.paths, args.out, figures=not args.no_figures)
    except NoResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    print(f"        {page.with_name('report.md')} (Markdown; figures in {page.parent / 'figures'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
