"""Datasets: scan a folder tree, decode it once into a cache, split it, serve uint8 batches.

:func:`prepare` is the entry point: it turns a :class:`~trainables.config.DataConfig` into a
:class:`PreparedData` holding the manifest, its hash and one dataset per split.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from trainables.augment import stored_size
from trainables.data.cache import DecodedCache
from trainables.data.checks import Finding, class_findings, raise_errors
from trainables.data.folder import Scan, scan
from trainables.data.presets import PRESETS, get_preset
from trainables.data.split import (
    assign_splits,
    build_manifest,
    cross_split_duplicates,
    manifest_hash,
)

if TYPE_CHECKING:
    from trainables.config import DataConfig

__all__ = ["PRESETS", "CachedImages", "PreparedData", "prepare", "scan_config"]


class CachedImages(Dataset):
    """uint8 CHW images of one split, read from the decoded cache.

    ``__getitems__`` reads a whole batch with one indexing operation, applies ``transform``
    to the whole ``(N, C, H, W)`` batch (it must treat the images independently, as
    :class:`~trainables.augment.BatchAugment` and deterministic v2 transforms do) and
    returns it stacked, channels-last in memory (the cache's own layout, so the common case
    copies nothing), so use it with ``collate_fn=`` :func:`batched`.
    """

    def __init__(self, cache: DecodedCache, rows: np.ndarray, labels: np.ndarray, transform=None):
        self.cache, self.rows, self.labels, self.transform = cache, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([i])
        return images[0], int(labels[0])

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx)
        pixels = torch.from_numpy(self.cache.images[self.rows[idx]]).permute(0, 3, 1, 2)
        if self.transform is not None:
            pixels = self.transform(pixels)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        return pixels, torch.from_numpy(self.labels[idx])


def batched(batch):
    """``collate_fn`` for :class:`CachedImages`: the batch is already collated."""
    return batch


@dataclass
class PreparedData:
    """A dataset ready for training.

    Attributes:
        config: The data configuration.
        scan: Files found.
        cache: Decoded pixels.
        manifest: One row per usable file: file, label, class, split.
        split_hash: Hash of the manifest (identical for every trial of a search).
        class_names: Class names, indexed by label.
        duplicates: (train file, test file) pairs with identical bytes.
        findings: Problems of the classes (see :mod:`trainables.data.checks`).
    """

    config: DataConfig
    scan: Scan
    cache: DecodedCache
    manifest: pd.DataFrame
    split_hash: str
    class_names: list[str]
    duplicates: list[tuple[str, str]]
    findings: list[Finding] = field(default_factory=list)

    def dataset(self, split: str, transform=None) -> CachedImages:
        """The images of ``split`` (``train``, ``val`` or ``test``)."""
        rows = np.flatnonzero(self._splits == split)
        return CachedImages(self.cache, rows, self.scan.labels[rows], transform)

    @property
    def _splits(self) -> np.ndarray:
        out = self.__dict__.get("_split_per_file")
        if out is None:
            by_file = dict(zip(self.manifest["file"], self.manifest["split"], strict=True))
            out = np.asarray([by_file.get(f, "") for f in self.scan.files], dtype=object)
            self.__dict__["_split_per_file"] = out
        return out

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns)."""
        table = pd.crosstab(self.manifest["class"], self.manifest["split"])
        table = table.reindex(index=self.class_names, columns=["train", "val", "test"])
        return table.fillna(0).astype(int)


def scan_config(config: DataConfig) -> Scan:
    """Scan (and for ``synthetic`` first generate) the files of ``config``."""
    preset = get_preset(config.preset)
    if config.preset == "synthetic":
        from trainables.data import synthetic

        opts = config.synthetic
        kwargs = {} if opts is None else opts.model_dump()
        synthetic.generate(config.root, classes=config.classes, **kwargs)
    return scan(config.root, preset, config.classes)


def prepare(
    config: DataConfig,
    augmentation: str = "none",
    num_workers: int | None = None,
    *,
    check: bool = True,
) -> PreparedData:
    """Scan, decode (once, cached), split and hash a dataset.

    Args:
        config: What to load.
        augmentation: Augmentation preset (decides the stored pixel size).
        num_workers: Decoding threads (default: CPUs available).
        check: Apply the rules of :mod:`trainables.data.checks`: a class without a
            readable image raises ``ValueError``, the other findings are warnings. Without
            it they are only listed in ``findings`` (for ``inspect``).
    """
    files = scan_config(config)
    size = stored_size(augmentation, config.image_size)
    workers = num_workers or len(os.sched_getaffinity(0))
    cache = DecodedCache.build(files, size, config.cache_dir, workers)
    split = config.split
    splits = assign_splits(files, cache.ok, (split.train, split.val, split.test), split.seed)
    manifest = build_manifest(files, splits)
    digests = dict(zip(cache.files, cache.digests, strict=True))
    findings = class_findings(files, cache.ok, cache.errors, manifest, cache.digests)
    if check:
        raise_errors(findings)
        for f in findings:
            warnings.warn(f.message, stacklevel=2)
    return PreparedData(
        config=config,
        scan=files,
        cache=cache,
        manifest=manifest,
        split_hash=manifest_hash(manifest),
        class_names=files.class_names,
        duplicates=cross_split_duplicates(manifest, digests),
        findings=findings,
    )
