"""Tests of the procedural aerial-scene generator (:mod:`trainables.data.synthetic`)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainables.data import synthetic
from trainables.data.synthetic import CLASSES, generate, render

OLD = 1_000_000_000  # an mtime (2001) no fresh write can have


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_classes_are_many_distinct_and_snake_case():
    assert len(CLASSES) >= 12
    assert len(set(CLASSES)) == len(CLASSES)
    assert all(c.replace("_", "").isalpha() and c.islower() for c in CLASSES)
    for a, b in [
        ("dense_residential", "sparse_residential"),
        ("road", "runway"),
        ("water", "river"),
    ]:
        assert a in CLASSES and b in CLASSES


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("name", CLASSES)
def test_every_class_renders_rgb_uint8(name: str, size: int):
    img = render(name, size, _rng(3))
    assert img.shape == (size, size, 3)
    assert img.dtype == np.uint8
    assert img.std() > 1.0, "a scene should not be a flat colour"


@pytest.mark.parametrize("name", ["forest", "parking", "runway"])
def test_render_is_deterministic_per_seed(name: str):
    a = render(name, 32, _rng(7))
    assert np.array_equal(a, render(name, 32, _rng(7)))
    assert not np.array_equal(a, render(name, 32, _rng(8)))


def test_render_draws_different_scenes_from_one_generator():
    rng = _rng(0)
    first, second = render("beach", 32, rng), render("beach", 32, rng)
    assert not np.array_equal(first, second)


def test_render_rejects_unknown_class_with_suggestion():
    with pytest.raises(ValueError, match="'forrest'") as err:
        render("forrest", 32, _rng(0))
    assert "'forest'" in str(err.value)
    assert "dense_residential" in str(err.value), "the allowed names are listed"


@pytest.mark.parametrize("size", [8, 15, 0, -4])
def test_render_rejects_small_size(size: int):
    with pytest.raises(ValueError, match=f"size={size}"):
        render("water", size, _rng(0))


def test_render_requires_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        render("water", 32, 0)  # type: ignore[arg-type]


def test_generate_writes_folder_per_class_tree(tmp_path: Path):
    root = generate(tmp_path / "ds", classes=["water", "forest"], per_class=3, size=16)
    assert root == tmp_path / "ds"
    names = [str(p.relative_to(root)) for p in _files(root)]
    assert names == [f"{c}/{c}_{i:04d}.png" for c in ("forest", "water") for i in range(3)]
    assert (root / ".complete").is_file()
    with Image.open(root / "water" / "water_0002.png") as img:
        assert (img.mode, img.size) == ("RGB", (16, 16))


def test_generate_matches_render_with_per_index_seeds(tmp_path: Path):
    root = generate(tmp_path, classes=["runway"], per_class=2, size=16, seed=5)
    k = CLASSES.index("runway")
    expected = render("runway", 16, np.random.default_rng([5, k, 1]))
    assert np.array_equal(np.asarray(Image.open(root / "runway" / "runway_0001.png")), expected)


def test_generate_is_bit_identical_for_same_parameters(tmp_path: Path):
    a = generate(tmp_path / "a", classes=["road", "beach"], per_class=2, size=16, seed=1)
    b = generate(tmp_path / "b", classes=["road", "beach"], per_class=2, size=16, seed=1)
    c = generate(tmp_path / "c", classes=["road", "beach"], per_class=2, size=16, seed=2)
    for fa, fb, fc in zip(_files(a), _files(b), _files(c), strict=True):
        assert fa.read_bytes() == fb.read_bytes()
        assert fa.read_bytes() != fc.read_bytes()


def test_adding_classes_or_images_keeps_existing_images(tmp_path: Path):
    small = generate(tmp_path / "small", classes=["river"], per_class=2, size=16)
    big = generate(tmp_path / "big", classes=["water", "river"], per_class=3, size=16)
    for name in ("river_0000.png", "river_0001.png"):
        assert (small / "river" / name).read_bytes() == (big / "river" / name).read_bytes()


def test_generate_is_idempotent(tmp_path: Path):
    kwargs = dict(classes=["desert", "meadow"], per_class=2, size=16)
    root = generate(tmp_path, **kwargs)
    files = _files(root) + [root / ".complete"]
    for f in files:
        os.utime(f, ns=(OLD * 10**9, OLD * 10**9))
    generate(tmp_path, **kwargs)
    assert [f.stat().st_mtime_ns for f in files] == [OLD * 10**9] * len(files)


def test_generate_redoes_an_interrupted_run(tmp_path: Path):
    root = generate(tmp_path, classes=["parking"], per_class=3, size=16)
    reference = (root / "parking" / "parking_0002.png").read_bytes()
    (root / ".complete").unlink()
    (root / "parking" / "parking_0002.png").unlink()
    (root / "parking" / ".parking_0002.png.part").write_bytes(b"half a file")
    generate(tmp_path, classes=["parking"], per_class=3, size=16)
    assert (root / "parking" / "parking_0002.png").read_bytes() == reference
    assert not (root / "parking" / ".parking_0002.png.part").exists()
    assert (root / ".complete").is_file()


def test_generate_with_new_parameters_removes_stale_images(tmp_path: Path):
    generate(tmp_path, classes=["forest", "water"], per_class=3, size=16)
    (tmp_path / "notes.txt").write_text("kept")
    generate(tmp_path, classes=["forest"], per_class=2, size=16)
    assert [str(p.relative_to(tmp_path)) for p in _files(tmp_path)] == [
        "forest/forest_0000.png",
        "forest/forest_0001.png",
        "notes.txt",
    ]


@pytest.mark.parametrize(
    ("fmt", "suffix", "pil"), [("jpg", "jpg", "JPEG"), ("tiff", "tif", "TIFF")]
)
def test_generate_other_formats(tmp_path: Path, fmt: str, suffix: str, pil: str):
    root = generate(tmp_path, classes=["industrial"], per_class=1, size=16, image_format=fmt)
    with Image.open(root / "industrial" / f"industrial_0000.{suffix}") as img:
        assert (img.format, img.mode, img.size) == (pil, "RGB", (16, 16))


def test_generate_is_safe_from_several_threads(tmp_path: Path):
    errors: list[Exception] = []

    def work() -> None:
        try:
            generate(tmp_path, classes=["farmland", "road"], per_class=4, size=16)
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_files(tmp_path)) == 8
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"classes": ["forrest"]}, ["'forrest'", "'forest'"]),
        ({"classes": ["water", "water"]}, ["distinct", "'water'"]),
        ({"classes": "water"}, ["string", "'water'"]),
        ({"per_class": 0}, ["per_class=0", "positive"]),
        ({"per_class": -3}, ["per_class=-3"]),
        ({"size": 8}, ["size=8", "16"]),
        ({"seed": -1}, ["seed=-1"]),
        ({"image_format": "bmp"}, ["'bmp'", "png", "jpg", "tif"]),
    ],
)
def test_generate_validates_arguments(tmp_path: Path, kwargs: dict, needles: list[str]):
    with pytest.raises(ValueError) as err:
        generate(tmp_path / "never", **kwargs)
    for needle in needles:
        assert needle in str(err.value)
    assert not (tmp_path / "never").exists(), "nothing is written for bad arguments"


def _features(img: np.ndarray) -> np.ndarray:
    """Colour and texture statistics: channel means and stds, gradient energy."""
    x = img.astype(np.float32) / 255
    g = x.mean(axis=2)
    grad = np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()
    return np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1)), [grad]])


def _feature_set(seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            feats.append(_features(render(name, 32, np.random.default_rng([seed, k, i]))))
            labels.append(k)
    return np.asarray(feats), np.asarray(labels)


def test_classes_are_learnable_but_not_from_colour_statistics_alone():
    """Nearest class mean on simple statistics, fit on one seed and scored on another.

    Above twice chance shows class structure is present; clearly below perfect shows that
    colour and texture statistics alone do not solve the task (spatial structure is needed).
    """
    x_train, y_train = _feature_set(seed=0, per_class=20)
    x_test, y_test = _feature_set(seed=1, per_class=20)
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    means = np.stack([x_train[y_train == k].mean(axis=0) for k in range(len(CLASSES))])
    pred = np.argmin(((x_test[:, None] - means[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((pred == y_test).mean())
    chance = 1 / len(CLASSES)
    print(f"nearest-class-mean accuracy {accuracy:.3f} (chance {chance:.3f})")
    assert accuracy > 2 * chance
    assert accuracy < 0.8


def test_generator_version_is_recorded(tmp_path: Path):
    generate(tmp_path, classes=["water", "beach"], per_class=1, size=16)
    marker = (tmp_path / ".complete").read_text()
    assert f'"generator_version": {synthetic.GENERATOR_VERSION}' in marker
