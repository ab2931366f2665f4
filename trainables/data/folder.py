"""The one folder-dataset implementation: find class folders, list image files, read pixels.

Layouts understood (for every preset):

* ``<root>/<class>/<file>`` — one folder per class;
* ``<root>/<subdir>/<class>/<file>`` — e.g. UC-Merced's ``Images/`` (or the root pointing
  at ``Images/`` directly);
* ``<root>/{train,val,test}/<class>/<file>`` — a pre-split tree whose test split is kept.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from trainables.data.presets import Preset, close_matches

SPLITS = ("train", "val", "test")


@dataclass
class Scan:
    """The image files of a dataset, before any pixel is read.

    Attributes:
        root: Directory the relative file paths start from.
        files: File paths relative to ``root`` (POSIX separators), sorted by class, then name.
        labels: Class index of each file.
        class_names: Class names; ``labels`` index into this list.
        fixed_split: ``"train"``/``"val"``/``"test"`` per file for pre-split trees, else ``None``.
        notes: Human-readable remarks (unknown class folders, empty splits, ...).
    """

    root: Path
    files: list[str]
    labels: np.ndarray
    class_names: list[str]
    fixed_split: list[str | None]
    notes: list[str] = field(default_factory=list)

    @property
    def presplit(self) -> bool:
        """Whether the tree on disk fixes the test split."""
        return any(s is not None for s in self.fixed_split)


def resolve_root(root: str | Path, preset: Preset) -> Path:
    """The directory holding the class folders (or the split folders).

    Raises:
        FileNotFoundError: the root does not exist.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"dataset root {str(root)!r} does not exist or is not a directory; "
            f"set dataset.root to the folder that holds the {preset.name} class folders"
        )
    if preset.subdir and (path / preset.subdir).is_dir():
        return path / preset.subdir
    return path


def _class_folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_names(directory: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted names of the files (symbolic links followed) in ``directory`` whose suffix,
    lower-cased, is one of ``suffixes``.

    :func:`os.scandir` with plain strings: every trial scans its dataset again (a file
    added, removed or changed must not be missed), and ``pathlib`` per file cost three
    quarters of a scan of 3,600 images.
    """
    with os.scandir(directory) as entries:
        return sorted(
            e.name
            for e in entries
            if os.path.splitext(e.name)[1].lower() in suffixes and e.is_file()
        )


def scan(root: str | Path, preset: Preset, classes: list[str] | None = None) -> Scan:
    """List the image files of a dataset in ``preset``'s layout.

    Args:
        root: Dataset root.
        preset: Layout description.
        classes: Optional subset of class names (in this order); default all classes found.

    Raises:
        FileNotFoundError: the root is missing or holds no class folders / images.
        ValueError: a requested class is not present (with close matches).
    """
    base = resolve_root(root, preset)
    split_dirs = [s for s in SPLITS if (base / s).is_dir()]
    presplit = "train" in split_dirs and "test" in split_dirs
    parents = [base / s for s in split_dirs] if presplit else [base]
    notes: list[str] = []

    folders_found: set[str] = set()
    for parent in parents:
        folders_found.update(_class_folders(parent))
    if not folders_found:
        raise FileNotFoundError(
            f"no class folders under {str(base)!r}; expected the {preset.name} layout "
            f"<root>/<class>/<image> or <root>/train|test/<class>/<image>"
        )
    found = {preset.class_of(f): f for f in sorted(folders_found)}
    if preset.classes is not None:
        unknown = sorted(set(found) - set(preset.classes))
        if unknown:
            notes.append(f"class folders not in the {preset.name} class list: {unknown}")

    if classes is None:
        class_names = sorted(found)
    else:
        missing = [c for c in classes if c not in found]
        if missing:
            c = missing[0]
            raise ValueError(
                f"class {c!r} is not present under {str(base)!r}{close_matches(c, list(found))} "
                f"Classes found: {', '.join(sorted(found))}."
            )
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, but got {classes}")
        class_names = list(classes)

    files: list[str] = []
    labels: list[int] = []
    fixed: list[str | None] = []
    for label, cls in enumerate(class_names):
        folder = found[cls]
        for parent in parents:
            directory = parent / folder
            if not directory.is_dir():
                if presplit:
                    notes.append(f"class {cls!r} has no folder in split {parent.name!r}")
                continue
            prefix = directory.relative_to(base).as_posix()
            names = _image_names(directory, preset.suffixes)
            files.extend(f"{prefix}/{name}" for name in names)
            labels.extend([label] * len(names))
            fixed.extend([parent.name if presplit else None] * len(names))
    if not files:
        raise FileNotFoundError(
            f"no image files with suffixes {list(preset.suffixes)} under {str(base)!r}"
        )
    return Scan(base, files, np.asarray(labels, dtype=np.int64), class_names, fixed, notes)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB.

    Integer or float images with more than 8 bits are scaled linearly so that the image's
    maximum maps to 255 (16-bit TIFFs often use only 10-12 bits).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def read_rgb(path: str | Path, size: int | None = None) -> Image.Image:
    """Decode one image fully as RGB, optionally resized to ``size`` x ``size``.

    Raises:
        OSError: the file is unreadable, truncated or not an image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with Image.open(path) as image:
            if size is not None and image.format == "JPEG":
                image.draft("RGB", (size, size))
            image.load()
            rgb = to_rgb(image)
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return rgb.copy() if rgb is image else rgb
