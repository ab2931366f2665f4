"""What several benchmarks share."""

from __future__ import annotations

from pathlib import Path

import torch

from trainables.config import DataConfig
from trainables.models import create_model


def smoke_setup(work: Path) -> tuple[DataConfig, str, str]:
    """A ``--smoke`` run's data, model and frozen weights: 3 synthetic classes of 12 images
    at 32 px, split 50/25/25, and a randomly initialised ``tiny_cnn`` saved under ``work``.

    Returns:
        (data config, model name, weights file)
    """
    data = DataConfig(
        preset="synthetic",
        root=str(work / "images"),
        classes=["farmland", "water", "forest"],
        synthetic={"per_class": 12, "size": 32, "seed": 0},
        image_size=32,
        split={"train": 0.5, "val": 0.25, "test": 0.25},
    )
    weights = work / "tiny_cnn-random.pt"
    torch.manual_seed(0)
    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), weights)
    return data, "tiny_cnn", str(weights)


def frozen_setup(args, work: Path, smoke_epochs: int) -> tuple[DataConfig, str, str]:
    """The data, model and weights of a frozen-trial benchmark from its arguments: the
    ``--smoke`` set-up (epochs capped at ``smoke_epochs``), else ``--root`` / ``--preset`` /
    ``--classes`` / ``--image-size`` with ``--model`` and ``--weights``; the caches go under
    ``work``.
    """
    if args.smoke:
        data, model, weights = smoke_setup(work)
        args.epochs = min(args.epochs, smoke_epochs)
    else:
        data = DataConfig(
            preset=getattr(args, "preset", "folder"),
            root=args.root,
            classes=args.classes,
            image_size=args.image_size,
        )
        model, weights = args.model, args.weights
    return data.model_copy(update={"cache_dir": str(work / "cache")}), model, weights
