"""Frozen backbone, no augmentation, 10 epochs: backbone once per trial vs every epoch.

With ``transfer: frozen`` and augmentation ``none`` the backbone's features do not change,
so the trainable computes them once and trains the head on them. This times both ways on
the same data, weights and seed (wall time of :meth:`Trial.fit`, after data preparation).
The pretrained weights are a randomly initialised checkpoint written here (ImageNet weights
cannot be downloaded on this machine; the cost does not depend on the values).

    python benchmarks/frozen.py [--root ../shared/datasets/NWPU-RESISC12] [--model resnet18]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from trainables.classify import Trial
from trainables.config import DataConfig, SplitConfig, TrialConfig
from trainables.data.dataset import prepare

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "NWPU-RESISC12"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{args.model}-random.pth"
        torch.save(torchvision.models.get_model(args.model).state_dict(), weights)
        data_cfg = DataConfig(
            preset="folder",
            root=args.root,
            image_size=args.image_size,
            split=SplitConfig(train=0.8, val=0.1, test=0.1),
            cache_dir=str(Path(tmp) / "cache"),
        )
        data = prepare(data_cfg, "none")
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
        print(
            f"{args.model} frozen at {args.image_size} px, {args.epochs} epochs, "
            f"{len(data.manifest)} images ({args.root}), {args.threads} threads"
        )
        warm = Trial(cfg, data, log=lambda s: None, backbone_once=False)
        warm.evaluate("val")  # untimed: first-call kernel selection would favour the 2nd run
        times = {}
        results = {}
        for once in (True, False):
            t0 = time.perf_counter()
            trial = Trial(cfg, data, log=lambda s: None, backbone_once=once)
            summary = trial.fit()
            times[once] = time.perf_counter() - t0
            results[once] = summary
            label = "backbone once per trial" if once else "backbone every epoch   "
            print(f"{label}: {times[once]:7.1f} s   test acc {summary['test_acc']:.4f}")
    print(f"speed-up: {times[False] / times[True]:.1f}x (target >= 8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
