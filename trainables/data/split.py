"""Stratified, seeded train/val/test splits written as a manifest with a hash.

Every trial of a search builds the same manifest from the same files, ratios and seed, and
records :func:`manifest_hash` with its results, so a result can be traced to its split.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from trainables.data.folder import Scan


def validate_ratios(train: float, val: float, test: float) -> None:
    """Check split ratios.

    Raises:
        ValueError: a ratio is outside (0, 1) or they do not sum to 1.
    """
    for name, value in (("train", train), ("val", val), ("test", test)):
        if not 0 < value < 1:
            raise ValueError(
                f"split ratio {name} must be in (0, 1), but got {value}; validation selects the "
                "best epoch and test is only used once at the end, so both must be non-empty"
            )
    if abs(train + val + test - 1) > 1e-6:
        raise ValueError(
            f"split ratios must sum to 1, but got train={train} + val={val} + test={test} "
            f"= {train + val + test:g}"
        )


def _take(n: int, ratio: float) -> int:
    return int(round(n * ratio))


def assign_splits(
    scan: Scan, ok: np.ndarray, ratios: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Split name per file (``""`` for files that are skipped).

    Stratified per class; each class is shuffled by its own generator seeded with
    ``(seed, label)``, so adding a class does not move the files of another. A pre-split tree
    keeps its ``test`` (and ``val``) folders; validation is otherwise carved from train.

    Args:
        scan: The files.
        ok: Which files could be read.
        ratios: (train, val, test) fractions.
        seed: Split seed.
    """
    train_r, val_r, test_r = ratios
    validate_ratios(train_r, val_r, test_r)
    out = np.full(len(scan.files), "", dtype=object)
    fixed = np.asarray([s or "" for s in scan.fixed_split], dtype=object)
    has_val_folder = bool((fixed == "val").any())
    for label in range(len(scan.class_names)):
        idx = np.flatnonzero((scan.labels == label) & ok)
        rng = np.random.default_rng([seed, label])
        if scan.presplit:
            for name in ("test", "val"):
                out[idx[fixed[idx] == name]] = name
            pool = idx[fixed[idx] == "train"]
            pool = pool[rng.permutation(len(pool))]
            n_val = 0 if has_val_folder else _take(len(pool), val_r / (train_r + val_r))
            out[pool[:n_val]] = "val"
            out[pool[n_val:]] = "train"
            continue
        idx = idx[rng.permutation(len(idx))]
        n_test = _take(len(idx), test_r)
        n_val = _take(len(idx), val_r)
        if len(idx) - n_test - n_val < 1 and len(idx) > 0:
            n_test, n_val = max(0, len(idx) - 1 - n_val), min(n_val, len(idx) - 1)
        out[idx[:n_test]] = "test"
        out[idx[n_test : n_test + n_val]] = "val"
        out[idx[n_test + n_val :]] = "train"
    return out


def build_manifest(scan: Scan, splits: np.ndarray) -> pd.DataFrame:
    """The manifest: one row per usable file with ``file``, ``label``, ``class``, ``split``."""
    keep = splits != ""
    return pd.DataFrame(
        {
            "file": np.asarray(scan.files, dtype=object)[keep],
            "label": scan.labels[keep],
            "class": np.asarray(scan.class_names, dtype=object)[scan.labels[keep]],
            "split": splits[keep],
        }
    )


def manifest_hash(manifest: pd.DataFrame) -> str:
    """A short, stable hash of (file, label, split) rows, independent of row order."""
    rows = sorted(
        f"{f}\t{lab}\t{s}"
        for f, lab, s in zip(manifest["file"], manifest["label"], manifest["split"], strict=True)
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def cross_split_duplicates(
    manifest: pd.DataFrame, digests: dict[str, str]
) -> list[tuple[str, str]]:
    """Pairs (train file, test file) whose bytes are identical.

    Args:
        manifest: The split manifest.
        digests: File -> content digest.
    """
    by_digest: dict[str, list[str]] = {}
    for f in manifest.loc[manifest["split"] == "train", "file"]:
        by_digest.setdefault(digests[f], []).append(f)
    pairs = []
    for f in manifest.loc[manifest["split"] == "test", "file"]:
        for g in by_digest.get(digests[f], []):
            pairs.append((g, f))
    return pairs
