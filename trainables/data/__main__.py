"""``python -m trainables.data inspect|download``: what a dataset folder holds; fetch one.

``inspect ROOT --preset NAME`` prints the classes, images per class and split, the image
sizes seen, unreadable files that would be skipped, exact duplicates that fall in both train
and test, and the findings of :mod:`trainables.data.checks`: warnings, and errors for which
training refuses the dataset (exit status 2 then, after the summary).

``download PRESET --root DIR`` fetches a public dataset (with progress and resume), verifies
its published MD5 and extracts it into the preset's layout (:mod:`trainables.data.download`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

from trainables.clihelp import HelpFormatter
from trainables.config import DataConfig, SplitConfig
from trainables.data.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``trainables.data`` (``tuner inspect`` / ``download``)."""
    from trainables.data.download import DOWNLOADABLE, TIMEOUT_S

    parser = argparse.ArgumentParser(
        prog="python -m trainables.data",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect",
        help="summarise a dataset folder",
        description="Summarise a dataset folder: classes, images per split, sizes, problems.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("root", help="dataset folder")
    p.add_argument("--preset", default="folder", choices=list(PRESETS), help="folder layout")
    p.add_argument("--classes", nargs="+", default=None, help="subset of class names")
    p.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=(0.7, 0.1, 0.2),
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--size", type=int, default=64, help="pixel size of the decoded cache")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="decoded-cache folder (default $TUNER_CACHE or ~/.cache/tuner)",
    )
    d = sub.add_parser(
        "download",
        help="fetch, verify and extract a public dataset",
        description="Fetch a public dataset (progress, resume), verify its published MD5 and "
        "extract it into the preset's layout; exit status 2 on a checksum mismatch (only the "
        "partial file stays), 1 on a network failure (run again to resume).",
        formatter_class=HelpFormatter,
    )
    d.add_argument("preset", choices=DOWNLOADABLE, help="dataset preset")
    d.add_argument("--root", required=True, help="folder to extract into (created; empty)")
    d.add_argument("--url", help="a mirror of the archive (default: the preset's URL)")
    d.add_argument("--md5", help="expected MD5 of the archive (default: the preset's)")
    d.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    d.add_argument(
        "--timeout", type=float, default=TIMEOUT_S, help="seconds the server may stay silent"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "download":
        return _download(args)
    from trainables.data.dataset import prepare

    try:
        config = DataConfig(
            preset=args.preset,
            root=args.root,
            classes=args.classes,
            split=SplitConfig(
                train=args.split[0], val=args.split[1], test=args.split[2], seed=args.seed
            ),
            image_size=args.size,
            cache_dir=args.cache_dir,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = prepare(config, check=False)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(f"root:    {data.scan.root}")
    kept = " (pre-split tree: test split kept)" if data.scan.presplit else ""
    print(f"preset:  {args.preset}{kept}")
    n_classes, n_images = len(data.class_names), len(data.manifest)
    print(f"classes: {n_classes}   images: {n_images}   split hash: {data.split_hash}")
    for note in data.scan.notes:
        print(f"note:    {note}")
    counts = data.counts()
    counts.loc["total"] = counts.sum()
    counts["all"] = counts.sum(axis=1)
    print("\nimages per class and split:")
    print(counts.to_string())
    sizes = Counter(
        f"{w}x{h}"
        for (w, h), ok in zip(data.cache.original_sizes, data.cache.ok, strict=True)
        if ok
    )
    print("\nimage sizes seen: " + ", ".join(f"{s} ({n})" for s, n in sizes.most_common()))
    print(f"\nskipped files: {len(data.cache.errors)}")
    for f, e in sorted(data.cache.errors.items()):
        print(f"  {f}: {e}")
    print(f"exact duplicates in both train and test: {len(data.duplicates)}")
    for a, b in data.duplicates[:20]:
        print(f"  {a} == {b}")
    for finding in data.findings:
        print(f"\n{finding.level}: {finding.message}")
    if any(f.level == "error" for f in data.findings):
        print("\ntraining refuses this dataset (tuner.run exits with status 2)")
        return 2
    return 0


def _download(args: argparse.Namespace) -> int:
    from trainables.data.download import DownloadError, RefusedError, download

    try:
        download(
            args.preset,
            args.root,
            url=args.url,
            md5=args.md5,
            keep_archive=args.keep_archive,
            timeout=args.timeout,
        )
    except RefusedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
