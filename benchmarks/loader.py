"""Loader benchmark: decoded cache vs torchvision ImageFolder + DataLoader, images/s.

Both pipelines serve the same images (a pre-split tree's ``train/`` folder, else the whole
tree) at 224 px with paper 1's augmentation (resize to 254, RandomResizedCrop 224, horizontal
flip) with the same number of DataLoader workers (default: every CPU core). The baseline is
the usual ImageFolder pipeline (decode, resize, crop, flip, ToTensor, Normalize in the
workers). The cache serves uint8 channels-last batches: tuner's training step
converts and normalises them on the device (the GPU, where it costs nothing measurable), so
that figure is the loader's; the figure with normalisation on this CPU is printed too. The
cache is built once before timing (its build time is printed separately); ImageFolder
decodes and resizes every JPEG every epoch, which is what the cache removes.

    python benchmarks/loader.py [--root ../shared/datasets/NWPU-RESISC12] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from trainables.augment import Normalize, train_transform
from trainables.config import DataConfig, SplitConfig
from trainables.data.dataset import CachedImages, batched, prepare

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "NWPU-RESISC12"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _time(loader, epochs: int, finish) -> float:
    """Images per second over ``epochs`` passes (after one warm-up batch)."""
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        source = it if epoch == 0 else iter(loader)
        for x, _ in source:
            x = finish(x)
            n += len(x)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    root = Path(args.root)
    print(f"dataset {root} | {args.workers} workers | batch {args.batch_size} | paper augmentation")

    baseline_tf = v2.Compose(
        [
            v2.Resize((254, 254), antialias=True),
            v2.RandomResizedCrop(args.size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    subdir = "train" if (root / "train").is_dir() else ""  # a pre-split tree: its train/
    folder = datasets.ImageFolder(str(root / subdir), transform=baseline_tf)
    base_loader = DataLoader(
        folder,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    base = _time(base_loader, args.epochs, lambda x: x)
    print(f"torchvision ImageFolder + DataLoader: {base:8.0f} images/s ({len(folder)} images)")

    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = DataConfig(
            preset="folder",
            root=str(root),
            image_size=args.size,
            split=SplitConfig(train=0.8, val=0.1, test=0.1),
            cache_dir=cache_dir,
        )
        t0 = time.perf_counter()
        data = prepare(cfg, "paper")
        build = time.perf_counter() - t0
        # The same files as ImageFolder's: every image under ``subdir``.
        prefix = f"{subdir}/" if subdir else ""
        rows = np.flatnonzero([f.startswith(prefix) for f in data.scan.files])
        train = CachedImages(
            data.cache, rows, data.scan.labels[rows], train_transform("paper", args.size)
        )
        norm = Normalize(MEAN, STD)
        loader = DataLoader(
            train,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            collate_fn=batched,
        )
        ours = _time(loader, args.epochs, lambda x: x)
        ours_cpu_norm = _time(loader, args.epochs, norm)
    print(
        f"decoded cache (built once in {build:.1f} s): {ours:8.0f} images/s ({len(train)} "
        "images; uint8 batches, normalised by the training step on the device)"
    )
    print(f"decoded cache + normalising on this CPU: {ours_cpu_norm:8.0f} images/s")
    print(
        f"speed-up: {ours / base:.1f}x (target >= 5x); "
        f"with normalisation on this CPU {ours_cpu_norm / base:.1f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
