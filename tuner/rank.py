"""``python -m tuner.rank DIR/<experiment> [--by test_acc] [--group model,transfer]``.

Prints the ranking of an experiment's configurations (mean ± std over seeds where a
configuration repeats), at any time during or after a search.
"""

from __future__ import annotations

import argparse
import sys

from trainables.clihelp import HelpFormatter
from tuner.results import (
    ERROR,
    TRIAL_STATUSES,
    CorruptResultsError,
    format_ranking,
    load,
    rank,
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner.rank``."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.rank",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("experiment_dir", help="results/<experiment>")
    p.add_argument("--by", default="test_acc", help="metric column")
    p.add_argument("--group", help="comma-separated configuration columns, e.g. model,transfer")
    p.add_argument("--top", type=int, default=10, help="rows to show (0: all)")
    p.add_argument("--ascending", action="store_true", help="lower is better (losses)")
    p.add_argument("--status", choices=TRIAL_STATUSES, help="only trials with this status")
    p.add_argument(
        "--quarantine", action="store_true", help="move unreadable result files to _quarantine/"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        trials, _ = load(
            args.experiment_dir, on_corrupt="quarantine" if args.quarantine else "raise"
        )
    except CorruptResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trials.empty:
        print(f"error: no trials under {args.experiment_dir}/trials", file=sys.stderr)
        return 2
    if args.status:
        trials = trials[trials["status"] == args.status]
    group = [g.strip() for g in args.group.split(",")] if args.group else None
    try:
        table = rank(
            trials, by=args.by, group=group, top=args.top or None, ascending=args.ascending
        )
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    counts = trials["status"].value_counts().to_dict()
    print(f"{args.experiment_dir}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    print(format_ranking(table, args.by))
    failed = trials[trials["status"] == ERROR]
    if len(failed):
        print(f"\nfailed trials ({len(failed)}; tracebacks in the error_traceback column):")
        for trial_id, error in zip(failed["trial_id"], failed["error"], strict=True):
            print(f"  {trial_id}: {error if isinstance(error, str) else 'no error recorded'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
