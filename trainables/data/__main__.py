"""``python -m trainables.data inspect ROOT --preset NAME``: what a dataset folder holds.

Prints the classes, images per class and split, the image sizes seen, unreadable files that
would be skipped, and exact duplicates that fall in both train and test.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

from trainables.config import DataConfig, SplitConfig
from trainables.data.dataset import prepare
from trainables.data.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m trainables.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="summarise a dataset folder")
    p.add_argument("root")
    p.add_argument("--preset", default="folder", choices=list(PRESETS))
    p.add_argument("--classes", nargs="+", default=None, help="subset of class names")
    p.add_argument(
        "--split", nargs=3, type=float, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--size", type=int, default=64, help="pixel size of the decoded cache")
    p.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

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
            data = prepare(config)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
