"""Frozen backbone, no augmentation, 10 epochs: backbone once per trial vs every epoch.

With ``transfer: frozen`` and augmentation ``none`` the backbone's features do not change,
so the trainable computes them once and trains the head on them. This times both ways on
the same data, weights and seed (wall time of building the :class:`Trial` plus
:meth:`Trial.fit`, after data preparation; the backbone-once pass happens in the build).
The pretrained weights are a randomly initialised checkpoint written here (ImageNet weights
cannot be downloaded on this machine; the cost does not depend on the values).

Both paths must run the backbone over the validation images (every epoch in the baseline,
once in the backbone-once path) and over the test images once, so the speed-up is bounded
by ``(epochs * (train + val) + test) / (train + val + test)`` backbone passes; the script
prints that bound next to the measured figure. A pre-split tree (such as NWPU-RESISC12,
``train/`` + ``test/``, 80/20) is pooled into one folder-per-class tree of symbolic links
so that the ``--split`` ratios apply; ``--keep-presplit`` keeps the tree's own test split
instead (a larger test share, hence a lower bound).

    python benchmarks/frozen.py [--root ../shared/datasets/NWPU-RESISC12] [--model resnet18]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from trainables.classify import Trial
from trainables.config import DataConfig, SplitConfig, TrialConfig
from trainables.data.dataset import prepare
from trainables.data.folder import SPLITS

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "NWPU-RESISC12"


def pooled(root: Path, into: Path) -> Path:
    """A folder-per-class tree of links to every image of a pre-split tree (else ``root``)."""
    if not all((root / s).is_dir() for s in ("train", "test")):
        return root
    for split in SPLITS:
        for folder in sorted(p for p in (root / split).glob("*") if p.is_dir()):
            (into / folder.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(p for p in folder.iterdir() if p.is_file()):
                (into / folder.name / f"{split}_{image.name}").symlink_to(image.resolve())
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar="R")
    p.add_argument("--keep-presplit", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="alternate the two ways N times")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root)
        if not args.keep_presplit:
            root = pooled(root, Path(tmp) / "pooled")
        weights = Path(tmp) / f"{args.model}-random.pth"
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(args.model).state_dict(), weights)
        train, val, test = args.split
        data_cfg = DataConfig(
            preset="folder",
            root=str(root),
            image_size=args.image_size,
            split=SplitConfig(train=train, val=val, test=test),
            cache_dir=str(Path(tmp) / "cache"),
        )
        data = prepare(data_cfg, "none")
        counts = {s: int((data.manifest["split"] == s).sum()) for s in ("train", "val", "test")}
        cfg = TrialConfig(
            data=data_cfg,
            model=args.model,
            transfer="frozen",
            weights=str(weights),
            augmentation="none",
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=1e-3,
            num_threads=args.threads,
        )
        bound = (args.epochs * (counts["train"] + counts["val"]) + counts["test"]) / sum(
            counts.values()
        )
        print(
            f"{args.model} frozen at {args.image_size} px, {args.epochs} epochs, "
            f"{args.threads} threads, {args.root}"
            f"{' (own test split kept)' if args.keep_presplit else ''}: "
            f"train {counts['train']} / val {counts['val']} / test {counts['test']} images; "
            f"bound {bound:.2f}x"
        )
        warm = Trial(cfg, data, log=lambda s: None, backbone_once=False)
        warm.evaluate("val")  # untimed: first-call kernel selection would favour the 2nd run
        ratios = []
        for repeat in range(args.repeats):
            times, accs = {}, {}
            for once in (True, False):
                t0 = time.perf_counter()
                trial = Trial(cfg, data, log=lambda s: None, backbone_once=once)
                accs[once] = trial.fit()["test_acc"]
                times[once] = time.perf_counter() - t0
            ratios.append(times[False] / times[True])
            print(
                f"run {repeat + 1}: backbone once {times[True]:6.1f} s, every epoch "
                f"{times[False]:6.1f} s -> {ratios[-1]:.2f}x ({ratios[-1] / bound:.0%} of the "
                f"bound); test acc {accs[True]:.4f} / {accs[False]:.4f}"
            )
    median = statistics.median(ratios)
    print(f"speed-up: {median:.2f}x (median of {len(ratios)}; bound {bound:.2f}x; target >= 8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
