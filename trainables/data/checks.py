"""What a dataset must satisfy before training, class by class: refused or warned, and why.

The rules, declared once (``prepare``, ``python -m trainables.data inspect`` and
``tuner.run`` all apply them):

* **Refused** (``error``): a class without a single readable image, because its folder holds
  no image file or every file in it is unreadable. Such a class can be neither learned nor
  tested, yet it takes an output of the model and would be reported with accuracy 0.
* **Warned** (``warning``): a class without images in a split. With no test image its test
  accuracy is undefined (NaN in ``test_per_class_acc``); with no validation image it does
  not count in model selection; with no training image it is never learned. A class of one
  image is split 1 / 0 / 0. Training still runs: the other classes are measured as usual.
* **Warned**: the same image (identical bytes) under two or more classes: one picture
  labelled two ways, whatever splits the copies fall in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from trainables.data.folder import Scan

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Finding:
    """One problem of a dataset.

    Attributes:
        level: ``error`` (the dataset is refused) or ``warning``.
        cls: The class it concerns (the first one, for duplicates across classes).
        message: What is wrong, with the class named, and what it means.
    """

    level: Literal["error", "warning"]
    cls: str
    message: str


def class_findings(
    scan: Scan,
    ok: np.ndarray,
    errors: dict[str, str],
    manifest: pd.DataFrame,
    digests: list[str],
) -> list[Finding]:
    """Check every class of a scanned, decoded and split dataset.

    Args:
        scan: The files found.
        ok: Whether each file of the scan decoded.
        errors: File -> error text, for the files that did not.
        manifest: The split manifest (usable files only).
        digests: Content digest of each file of the scan.
    """
    found: list[Finding] = []
    counts = pd.crosstab(manifest["class"], manifest["split"]) if len(manifest) else None
    for label, name in enumerate(scan.class_names):
        mine = scan.labels == label
        usable = int((mine & ok).sum())
        if usable == 0:
            files = [f for f, m in zip(scan.files, mine, strict=True) if m]
            if files:
                why = (
                    f"all {len(files)} of its files are unreadable, e.g. {files[0]} "
                    f"({errors.get(files[0], 'unreadable')})"
                )
            else:
                why = "its folder holds no image file"
            found.append(
                Finding(
                    "error",
                    name,
                    f"class {name!r} has no readable image: {why}. A class without images "
                    "can be neither learned nor tested (its accuracy would read 0): fix or "
                    "add the images, or leave the class out (dataset.classes)",
                )
            )
            continue
        per_split = {
            s: int(counts.at[name, s])
            if counts is not None and name in counts.index and s in counts.columns
            else 0
            for s in SPLIT_NAMES
        }
        empty = [s for s in SPLIT_NAMES if per_split[s] == 0]
        if empty:
            meaning = {
                "test": "its test accuracy is undefined (NaN in test_per_class_acc)",
                "val": "it does not count in model selection (validation)",
                "train": "it is never learned",
            }
            split_text = ", ".join(f"{s} {per_split[s]}" for s in SPLIT_NAMES)
            found.append(
                Finding(
                    "warning",
                    name,
                    f"class {name!r} has {usable} usable image(s), split {split_text}: with "
                    f"no {' / '.join(empty)} image, "
                    + "; ".join(meaning[s] for s in empty)
                    + ". Add images to the class or leave it out (dataset.classes)",
                )
            )
    found.extend(_duplicates_across_classes(scan, ok, digests))
    return found


def _duplicates_across_classes(scan: Scan, ok: np.ndarray, digests: list[str]) -> list[Finding]:
    by_digest: dict[str, list[int]] = {}
    for i, (digest, good) in enumerate(zip(digests, ok, strict=True)):
        if good and digest:
            by_digest.setdefault(digest, []).append(i)
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for idx in by_digest.values():
        labels = {int(scan.labels[i]) for i in idx}
        if len(labels) < 2:
            continue
        first = {}
        for i in idx:
            first.setdefault(int(scan.labels[i]), scan.files[i])
        names = sorted(first, key=lambda lab: scan.class_names[lab])
        for a, b in zip(names, names[1:], strict=False):
            key = (scan.class_names[a], scan.class_names[b])
            pairs.setdefault(key, []).append((first[a], first[b]))
    found = []
    for (a, b), examples in sorted(pairs.items()):
        fa, fb = examples[0]
        found.append(
            Finding(
                "warning",
                a,
                f"{len(examples)} image(s) appear with identical bytes under classes {a!r} and "
                f"{b!r}, e.g. {fa} == {fb}: one picture labelled two ways (label noise, and "
                "a test copy cannot be classified right under both labels); remove the copies "
                "from the class they do not belong to",
            )
        )
    return found


def raise_errors(findings: list[Finding]) -> None:
    """Raise ``ValueError`` listing the ``error`` findings, if any."""
    errors = [f.message for f in findings if f.level == "error"]
    if errors:
        raise ValueError("\n".join(errors))
