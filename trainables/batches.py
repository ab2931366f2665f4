"""A trial's batches per split: decoded images through a DataLoader, or stored features.

Both sources visit the samples in the same order for the same generator, so a frozen trial
trained on backbone features computed once (:mod:`trainables.features`) trains exactly
like one that runs the backbone every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from trainables.augment import eval_transform, train_transform
from trainables.config import TrialConfig
from trainables.data.dataset import PreparedData, batched

SPLITS = ("train", "val", "test")


def allocated_cpus() -> int:
    """CPUs this process may use (Ray sets the affinity / OMP_NUM_THREADS of its workers)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp and omp.isdigit() and int(omp) > 0:
        return int(omp)
    return len(os.sched_getaffinity(0))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation draws, from the trial's seed."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


class Batches:
    """Batches of one split: images through a DataLoader, or ``features`` when they are set.

    Args:
        loader_args: The DataLoader's arguments (dataset, batch size, workers...).
        features: (inputs, labels) tensors to batch instead of the images.
        before_batch: Called before each image batch (not feature batches): a CPU trial
            widens its threads there (:class:`trainables.cpushare.CpuShare`).
    """

    def __init__(
        self,
        loader_args: dict,
        features: tuple[torch.Tensor, torch.Tensor] | None,
        before_batch: Callable[[], object] | None = None,
    ):
        self.loader_args, self.features = loader_args, features
        self.before_batch = before_batch

    def _count(self) -> int:
        return len(self.features[1]) if self.features else len(self.loader_args["dataset"])

    def __len__(self) -> int:
        bs = self.loader_args["batch_size"]
        return (self._count() + bs - 1) // bs

    def iterate(self, generator: torch.Generator | None, limit: int | None) -> Iterator:
        """Yield (inputs, labels), at most ``limit`` batches; shuffled with ``generator``."""
        n = self._count()
        order = torch.randperm(n, generator=generator) if generator is not None else None
        if self.features is not None:
            x, y = self.features
            order = order if order is not None else torch.arange(n)
            source = ((x[i], y[i]) for i in order.split(self.loader_args["batch_size"]))
        else:
            source = iter(
                DataLoader(
                    **self.loader_args,
                    sampler=order.tolist() if order is not None else None,
                    generator=generator,
                    collate_fn=batched,
                )
            )
        for n, batch in enumerate(source):
            if limit is not None and n >= limit:
                break
            if self.before_batch is not None and self.features is None:
                self.before_batch()  # backbone passes only: a head fit runs on one thread
            yield batch


def image_batches(
    cfg: TrialConfig,
    data: PreparedData,
    pin_memory: bool,
    before_batch: Callable[[], object] | None = None,
) -> dict[str, Batches]:
    """The image batches of each split: training augmentation on ``train`` only, loader
    workers on ``train`` only (``cfg.num_workers``; default none without augmentation, else
    up to 8 of the allocated CPUs less one)."""
    workers = cfg.num_workers
    if workers is None:
        workers = 0 if cfg.augmentation == "none" else min(8, max(0, allocated_cpus() - 1))
    out = {}
    for split in SPLITS:
        aug = train_transform if split == "train" else eval_transform
        args = {
            "dataset": data.dataset(split, aug(cfg.augmentation, cfg.data.image_size)),
            "batch_size": cfg.batch_size,
            "num_workers": workers if split == "train" else 0,
            "pin_memory": pin_memory,
            "persistent_workers": False,
        }
        out[split] = Batches(args, None, before_batch)
    return out
