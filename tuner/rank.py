"""``python -m tuner.rank DIR/<experiment> [--by test_acc] [--group model,transfer]``.

Prints the ranking of an experiment's configurations (mean ± std over seeds where a
configuration repeats), at any time during or after a search. ``--compact`` first packs the
finished trials' result files into one file per table (:mod:`tuner.compact`; ``tuner.run``
does it at the end of a search), under the experiment's lock: not while a driver runs it.
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
    p.add_argument(
        "--compact",
        action="store_true",
        help="first pack the finished trials' files into one file per table (faster reads); "
        "refused while a driver runs the experiment",
    )
    return p


def _has_tables(exp_dir: str) -> bool:
    """Whether a folder holds a trials table (``--compact`` creates nothing elsewhere)."""
    import pyarrow.fs as pafs

    from tuner.results import filesystem

    if "://" in exp_dir:
        return True  # compact() refuses it with the reason
    fs, base = filesystem(exp_dir)
    return fs.get_file_info(f"{base}/trials").type == pafs.FileType.Directory


def compact_locked(exp_dir: str) -> str:
    """Compact an experiment folder under its lock; returns what was done.

    Raises:
        ExperimentLocked: a driver runs the experiment.
        CompactionError: the folder cannot be compacted (not local, no atomic folder swap).
    """
    from tuner.compact import compact
    from tuner.lock import ExperimentLock
    from tuner.results import filesystem

    fs, base = filesystem(exp_dir)
    lock = ExperimentLock(fs, base)
    note = lock.acquire(base.rstrip("/").rsplit("/", 1)[-1])
    try:
        done = compact(exp_dir)
    finally:
        lock.release()
    return "\n".join(filter(None, [note, f"compacted: {done.describe()}"]))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.compact and _has_tables(args.experiment_dir):
        from tuner.compact import CompactionError
        from tuner.lock import ExperimentLocked

        try:
            print(compact_locked(args.experiment_dir), file=sys.stderr)
        except (ExperimentLocked, CompactionError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        trials, _ = load(
            args.experiment_dir,
            on_corrupt="quarantine" if args.quarantine else "raise",
            epochs=False,
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
