"""Tiny, seeded dataset trees in the real folder layouts and file formats, made offline.

In the spirit of TorchGeo's ``tests/data/<dataset>/data.py``: each ``make_*`` function writes
a handful of small images where the real dataset keeps them, with its file names and format,
and returns the dataset root. Pixels come from :func:`trainables.data.synthetic.render`, with
every fixture class mapped onto a *different* synthetic class (``airplane`` -> ``runway``,
``lake`` -> ``water``, ...), so the classes are learnable and a model can beat chance.

Everything is deterministic for a given ``seed``, and a whole tree takes milliseconds.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from trainables.data.presets import RSSCN7_FOLDERS
from trainables.data.synthetic import CLASSES, render

__all__ = [
    "add_oddities",
    "make_nwpu",
    "make_presplit",
    "make_rsscn7",
    "make_ucmerced",
    "synthetic_classes",
]

ALIASES: dict[str, str] = {
    "agricultural": "farmland",
    "field": "farmland",
    "bField": "farmland",
    "rectangular_farmland": "farmland",
    "grass": "meadow",
    "aGrass": "meadow",
    "airplane": "runway",
    "airport": "runway",
    "bridge": "river",
    "riverlake": "river",
    "dRiverLake": "river",
    "lake": "water",
    "palace": "industrial",
    "buildings": "industrial",
    "industry": "industrial",
    "cIndustry": "industrial",
    "industrial_area": "industrial",
    "stadium": "baseball_field",
    "baseball_diamond": "baseball_field",
    "baseballdiamond": "baseball_field",
    "eForest": "forest",
    "resident": "dense_residential",
    "fResident": "dense_residential",
    "denseresidential": "dense_residential",
    "sparseresidential": "sparse_residential",
    "parking_lot": "parking",
    "parkinglot": "parking",
    "gParking": "parking",
    "freeway": "road",
}
"""Real dataset class (or folder) name -> the synthetic class that looks most like it."""

JPEG_QUALITY = 90
RENDER_LIMIT = 128


def synthetic_classes(names: Sequence[str]) -> dict[str, str]:
    """Map fixture class names onto distinct synthetic classes.

    A name that is a synthetic class, or has an entry in :data:`ALIASES`, gets that class
    unless an earlier name took it; otherwise it gets the first synthetic class still free.

    Raises:
        ValueError: more names than synthetic classes.
    """
    if len(names) > len(CLASSES):
        raise ValueError(
            f"at most {len(CLASSES)} fixture classes can look different, but got {len(names)}"
        )
    used: set[str] = set()
    out: dict[str, str] = {}
    for name in names:
        wanted = name if name in CLASSES else ALIASES.get(name)
        if wanted is None or wanted in used:
            wanted = next(c for c in CLASSES if c not in used)
        used.add(wanted)
        out[name] = wanted
    return out


def _rng(tree: str, seed: int, *keys: int) -> np.random.Generator:
    """Generator for one image: independent per tree, seed and key tuple."""
    return np.random.default_rng([seed, zlib.crc32(tree.encode()), *keys])


def _pixels(tree: str, synthetic: str, size: int, seed: int, *keys: int) -> np.ndarray:
    """``size`` x ``size`` x 3 uint8 scene of ``synthetic`` class for one fixture image.

    Sizes above :data:`RENDER_LIMIT` are rendered at that size and upsampled, which keeps a
    400-pixel RSSCN7 tree fast; the files still have the requested size.
    """
    rng = _rng(tree, seed, CLASSES.index(synthetic), *keys)
    if size <= RENDER_LIMIT:
        return render(synthetic, size, rng)
    small = Image.fromarray(render(synthetic, RENDER_LIMIT, rng), "RGB")
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))


def _save_jpeg(arr: np.ndarray, path: Path) -> Path:
    Image.fromarray(arr, "RGB").save(path, format="JPEG", quality=JPEG_QUALITY)
    return path


def make_nwpu(
    root: Path,
    classes: Sequence[str] = ("airplane", "bridge", "palace", "stadium", "dense_residential"),
    per_class: int = 6,
    size: int = 32,
    *,
    seed: int = 0,
) -> Path:
    """NWPU-RESISC45 layout: ``<root>/<class>/<class>_NNN.jpg``, NNN from 001, JPEG.

    Returns:
        ``root``, the folder holding the class folders.
    """
    root = Path(root)
    for cls, synth in synthetic_classes(classes).items():
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, per_class + 1):
            _save_jpeg(_pixels("nwpu", synth, size, seed, i), folder / f"{cls}_{i:03d}.jpg")
    return root


def make_ucmerced(
    root: Path,
    classes: Sequence[str] = ("agricultural", "airplane", "beach"),
    per_class: int = 5,
    size: int = 32,
    *,
    seed: int = 0,
) -> Path:
    """UC-Merced layout: ``<root>/Images/<class>/<class>NN.tif``, NN from 00, RGB TIFF.

    Like the real set (mostly 256 x 256, a few 247 x 247 and 256 x 253), two images are not
    ``size`` x ``size``: the first image of the first class is ``size - 3`` square and the
    last image of the last class is ``size`` wide and ``size - 2`` high.

    Returns:
        ``root``, the folder holding ``Images/``.
    """
    root = Path(root)
    mapping = synthetic_classes(classes)
    for c, (cls, synth) in enumerate(mapping.items()):
        folder = root / "Images" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = _pixels("ucmerced", synth, size, seed, i)
            if c == 0 and i == 0:
                arr = arr[: size - 3, : size - 3]
            elif c == len(mapping) - 1 and i == per_class - 1:
                arr = arr[: size - 2, :]
            Image.fromarray(np.ascontiguousarray(arr), "RGB").save(
                folder / f"{cls}{i:02d}.tif", format="TIFF"
            )
    return root


def make_rsscn7(root: Path, per_class: int = 3, size: int = 40, *, seed: int = 0) -> Path:
    """RSSCN7 layout: ``<root>/aGrass/a001.jpg`` ... ``<root>/gParking/...``, JPEG.

    The real images are 400 x 400; pass ``size=400`` for a test that needs that.

    Returns:
        ``root``, the folder holding the seven letter-prefixed class folders.
    """
    root = Path(root)
    folders = list(RSSCN7_FOLDERS.values())
    for folder_name, synth in synthetic_classes(folders).items():
        folder = root / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder_name[0]
        for i in range(1, per_class + 1):
            _save_jpeg(_pixels("rsscn7", synth, size, seed, i), folder / f"{prefix}{i:03d}.jpg")
    return root


def make_presplit(
    root: Path,
    classes: Sequence[str] = ("beach", "forest", "lake"),
    train_per_class: int = 6,
    test_per_class: int = 2,
    size: int = 32,
    with_val: bool = False,
    *,
    val_per_class: int = 2,
    seed: int = 0,
) -> Path:
    """A pre-split tree: ``<root>/{train,val,test}/<class>/<class>_<n>.jpg``, JPEG.

    ``n`` counts on across the splits of a class, so every file name and every image is
    unique (no train/test duplicates). ``val/`` is written only ``with_val``.

    Returns:
        ``root``, the folder holding ``train/``, ``test/`` (and ``val/``).
    """
    root = Path(root)
    splits = [("train", train_per_class), ("test", test_per_class)]
    if with_val:
        splits.insert(1, ("val", val_per_class))
    for cls, synth in synthetic_classes(classes).items():
        n = 0
        for split, count in splits:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(count):
                _save_jpeg(_pixels("presplit", synth, size, seed, n), folder / f"{cls}_{n}.jpg")
                n += 1
    return root


def add_oddities(class_dir: Path, *, size: int = 32, seed: int = 0) -> dict[str, Path]:
    """Add the awkward files real datasets contain to an existing class folder.

    Files written (key: file name):

    * ``corrupt``: ``broken.jpg``, random bytes behind an image suffix;
    * ``truncated``: ``truncated.jpg``, a valid JPEG header and the first half of its data;
    * ``gray``: ``gray.png``, 8-bit grayscale (mode ``L``);
    * ``rgba``: ``rgba.png``, RGB with a varying alpha channel (mode ``RGBA``);
    * ``palette``: ``palette.png``, 64-colour palette image (mode ``P``);
    * ``gray16``: ``gray16.tif``, 16-bit grayscale (mode ``I;16``) with values up to 65535.

    Returns:
        Key -> path of each file written.
    """
    class_dir = Path(class_dir)
    synth = synthetic_classes([class_dir.name])[class_dir.name]
    rng = _rng("oddities", seed, CLASSES.index(synth))
    rgb = Image.fromarray(render(synth, size, rng), "RGB")
    paths = {
        "corrupt": class_dir / "broken.jpg",
        "truncated": class_dir / "truncated.jpg",
        "gray": class_dir / "gray.png",
        "rgba": class_dir / "rgba.png",
        "palette": class_dir / "palette.png",
        "gray16": class_dir / "gray16.tif",
    }
    paths["corrupt"].write_bytes(b"\x00not an image\x00" + rng.bytes(512))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    data = buffer.getvalue()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    gray = rgb.convert("L")
    gray.save(paths["gray"], format="PNG")
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1)), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    rgba.save(paths["rgba"], format="PNG")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(paths["palette"], format="PNG")
    deep = np.asarray(gray, dtype=np.uint16) * np.uint16(257)
    Image.fromarray(deep).save(paths["gray16"], format="TIFF")
    return paths


def synthetic_data(root: Path, classes: Sequence[str], *, per_class: int, size: int = 32):
    """A :class:`~trainables.config.DataConfig` of generated scenes under ``root`` (images
    and decoded cache), ``per_class`` images of ``size`` px for each of ``classes``."""
    from trainables.config import DataConfig

    return DataConfig(
        preset="synthetic",
        root=str(root / "images"),
        classes=list(classes),
        synthetic={"per_class": per_class, "size": size, "seed": 0},
        image_size=size,
        cache_dir=str(root / "cache"),
    )
