"""``python -m tuner.rank DIR/<experiment> [--by test_acc] [--group model,transfer]``.

Prints the ranking of an experiment's configurations (mean ± std over seeds where a
configuration repeats), at any time during or after a search.
"""

from __future__ import annotations

import argparse
import sys

from tuner.results import CorruptResultsError, format_ranking, load, rank


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m tuner.rank", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment_dir", help="results/<experiment>")
    p.add_argument("--by", default="test_acc", help="metric column (default test_acc)")
    p.add_argument("--group", help="comma-separated configuration columns, e.g. model,transfer")
    p.add_argument("--top", type=int, default=10, help="rows to show (0: all)")
    p.add_argument("--ascending", action="store_true", help="lower is better (losses)")
    p.add_argument(
        "--status", help="only trials with this status (completed, early-stopped, error)"
    )
    p.add_argument(
        "--quarantine", action="store_true", help="move unreadable result files to _quarantine/"
    )
    args = p.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
