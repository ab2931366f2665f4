"""Folder layouts, image modes, splits, manifest hash, decoded cache, inspect CLI."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from tests.fixtures import add_oddities, make_nwpu, make_presplit, make_rsscn7, make_ucmerced
from trainables.augment import (
    AUGMENTATIONS,
    PRESETS,
    BatchAugment,
    Normalize,
    eval_transform,
    stored_size,
    train_transform,
)
from trainables.config import DataConfig, SplitConfig, TrialConfig
from trainables.data.__main__ import main as inspect_main
from trainables.data.cache import DecodedCache
from trainables.data.dataset import prepare
from trainables.data.folder import scan
from trainables.data.presets import get_preset

NWPU12 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "NWPU-RESISC12"


def _prepare(root, tmp_path, preset="folder", **kw):
    cfg = DataConfig(preset=preset, root=str(root), cache_dir=str(tmp_path / "cache"), **kw)
    return prepare(cfg, kw.pop("augmentation", "none"), num_workers=1)


def test_nwpu_layout_subset_and_unknown_class(tmp_path):
    root = make_nwpu(tmp_path / "nwpu", per_class=5)
    data = _prepare(root, tmp_path, "nwpu_resisc45", classes=["bridge", "airplane"], image_size=16)
    assert data.class_names == ["bridge", "airplane"]
    assert set(data.manifest["class"]) == {"bridge", "airplane"}
    assert all(f.endswith(".jpg") for f in data.manifest["file"])
    with pytest.raises(ValueError, match=r"class 'bridg' is not present.*did you mean 'bridge'"):
        scan(root, get_preset("nwpu_resisc45"), ["bridg"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan(tmp_path / "missing", get_preset("nwpu_resisc45"))


def test_ucmerced_odd_sizes_are_resized_and_images_dir_accepted(tmp_path):
    root = make_ucmerced(tmp_path / "ucm", per_class=4, size=32)
    data = _prepare(root, tmp_path, "ucmerced", image_size=24)
    sizes = {s for s, ok in zip(data.cache.original_sizes, data.cache.ok, strict=True) if ok}
    assert any(w != h or w != 32 for w, h in sizes), sizes  # odd sizes really are there
    assert data.cache.ok.all() and data.cache.images.shape[1:] == (24, 24, 3)
    via_images = _prepare(root / "Images", tmp_path, "ucmerced", image_size=24)
    assert via_images.split_hash == data.split_hash
    assert len(data.manifest) == 3 * 4


def test_rsscn7_class_names_drop_the_letter_prefix(tmp_path):
    root = make_rsscn7(tmp_path / "rsscn7", per_class=2, size=400)
    data = _prepare(root, tmp_path, "rsscn7", image_size=16)
    assert data.class_names == sorted(
        ["grass", "field", "industry", "riverlake", "forest", "resident", "parking"]
    )
    assert {w for w, _ in data.cache.original_sizes} == {400}


@pytest.mark.parametrize("with_val", [False, True])
def test_presplit_tree_keeps_its_test_split(tmp_path, with_val):
    root = make_presplit(tmp_path / "pre", train_per_class=8, test_per_class=2, with_val=with_val)
    data = _prepare(root, tmp_path, image_size=16)
    m = data.manifest
    assert (m.loc[m["split"] == "test", "file"].str.startswith("test/")).all()
    assert (m["split"] == "test").sum() == 3 * 2
    val_files = m.loc[m["split"] == "val", "file"]
    assert len(val_files) > 0
    prefix = "val/" if with_val else "train/"
    assert val_files.str.startswith(prefix).all()


def test_corrupt_files_skipped_with_warning_and_modes_converted(tmp_path):
    root = make_nwpu(tmp_path / "odd", classes=("airplane", "bridge"), per_class=4)
    odd = add_oddities(root / "airplane")
    preset = get_preset("folder")
    with pytest.warns(UserWarning, match="skipped 2 unreadable") as rec:
        cache = DecodedCache.build(scan(root, preset), 16, tmp_path / "cache", num_workers=1)
    message = str(rec[0].message)
    assert "broken" in message or odd["corrupt"].name in message
    assert odd["truncated"].name in message
    skipped = {Path(f).name for f in cache.errors}
    assert skipped == {odd["corrupt"].name, odd["truncated"].name}
    by_name = {Path(f).name: i for i, f in enumerate(cache.files)}
    for key in ("gray", "rgba", "palette", "gray16"):
        i = by_name[odd[key].name]
        assert cache.ok[i], key
        pixels = np.asarray(cache.images[i])
        assert pixels.shape == (16, 16, 3) and pixels.max() > 0, key
    gray16 = np.asarray(cache.images[by_name[odd["gray16"].name]])
    assert gray16.max() > 128  # scaled down from 16 bits, not clipped to black or white
    assert gray16.min() < 255


def test_split_is_stratified_deterministic_and_hashed(tmp_path):
    root = make_nwpu(tmp_path / "s", classes=("airplane", "bridge", "palace"), per_class=20)
    a = _prepare(root, tmp_path, image_size=16)
    b = _prepare(root, tmp_path, image_size=16)
    assert a.split_hash == b.split_hash
    assert a.manifest.equals(b.manifest)
    counts = a.counts()
    assert (counts["train"] == 14).all() and (counts["val"] == 2).all()
    assert (counts["test"] == 4).all()
    other = _prepare(root, tmp_path, image_size=16, split=SplitConfig(seed=1))
    assert other.split_hash != a.split_hash
    assert len(a.split_hash) == 16
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.8, val=0.1, test=0.2)


def test_duplicates_across_train_and_test_are_reported(tmp_path):
    root = make_nwpu(tmp_path / "d", classes=("airplane", "bridge"), per_class=10)
    for f in sorted((root / "airplane").iterdir()):
        shutil.copy(f, f.with_name("copy_" + f.name))
    data = _prepare(root, tmp_path, image_size=16)
    assert data.duplicates, "identical files in both splits must be reported"
    for a, b in data.duplicates:
        assert (root / a).read_bytes() == (root / b).read_bytes()


def test_cache_is_reused_and_invalidated_when_files_change(tmp_path):
    root = make_nwpu(tmp_path / "c", classes=("airplane", "bridge"), per_class=3)
    s = scan(root, get_preset("folder"))
    first = DecodedCache.build(s, 16, tmp_path / "cache", num_workers=1)
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    again = DecodedCache.build(s, 16, tmp_path / "cache", num_workers=1)
    assert again.directory == first.directory
    assert (again.directory / "meta.json").stat().st_mtime_ns == stamp
    assert DecodedCache.build(s, 20, tmp_path / "cache").directory != first.directory
    victim = root / s.files[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    changed = DecodedCache.build(scan(root, get_preset("folder")), 16, tmp_path / "cache")
    assert changed.directory != first.directory


def test_scan_lists_image_files_by_suffix_case_blind_and_follows_links(tmp_path):
    root = make_nwpu(tmp_path / "s", classes=("airplane", "bridge"), per_class=2)
    folder = root / "airplane"
    image = sorted(folder.iterdir())[0]
    shutil.copy(image, folder / "LOUD.JPG")
    (folder / "notes.txt").write_text("not an image")
    (folder / "album.jpg").mkdir()  # a folder with an image suffix
    (folder / "linked.jpg").symlink_to(image)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    s = scan(root, get_preset("folder"))
    airplane = [f for f, label in zip(s.files, s.labels, strict=True) if label == 0]
    originals = [f"airplane/{p.name}" for p in folder.glob("airplane_*")]
    assert airplane == sorted([*originals, "airplane/LOUD.JPG", "airplane/linked.jpg"])
    bridge = sorted(f"bridge/{p.name}" for p in (root / "bridge").iterdir())
    assert s.files == [*airplane, *bridge]
    assert s.fixed_split == [None] * len(s.files)


def test_inspect_cli(tmp_path, capsys):
    root = make_nwpu(tmp_path / "i", classes=("airplane", "bridge"), per_class=5)
    add_oddities(root / "bridge")
    code = inspect_main(
        [
            "inspect",
            str(root),
            "--preset",
            "folder",
            "--size",
            "16",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "airplane" in out and "bridge" in out and "skipped files: 2" in out
    assert inspect_main(["inspect", str(tmp_path / "nope")]) == 2


@pytest.mark.skipif(not NWPU12.is_dir(), reason="shared NWPU-RESISC12 not present")
def test_inspect_real_nwpu12(tmp_path, capsys):
    code = inspect_main(
        [
            "inspect",
            str(NWPU12),
            "--preset",
            "nwpu_resisc45",
            "--size",
            "16",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "classes: 12" in out and "256x256 (3600)" in out and "skipped files: 0" in out


def test_augmentation_presets():
    image = torch.randint(
        0, 256, (3, stored_size("paper", 32), stored_size("paper", 32)), dtype=torch.uint8
    )
    assert stored_size("none", 224) == 224 and stored_size("paper", 224) == 254
    for name in AUGMENTATIONS:
        t = train_transform(name, 32)
        e = eval_transform(name, 32)
        src = image if PRESETS[name].crop_scale else image[:, :32, :32]  # no crop: as stored
        out = t(src) if t is not None else src
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        assert (e(src) if e is not None else src).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        train_transform("papr", 32)
    norm = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = norm(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 3, 2, 1))
    assert torch.allclose(x[0, 0, :, 0], torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize(("name", "views"), [("paper", 2), ("aerial", 8)])
def test_batch_augment_draws_per_image(name, views):
    """Identical images get independent flips / rotations: every view of the preset occurs."""
    image = torch.randint(0, 256, (3, 36, 36), dtype=torch.uint8)
    augment = train_transform(name, 32)
    assert isinstance(augment, BatchAugment)
    augment.crop = v2.RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(1.0, 1.0))  # fixed box
    base = v2.functional.resize(image, [32, 32])
    dihedral = [torch.rot90(v, k, (1, 2)) for v in (base, base.flip(1)) for k in range(4)]
    torch.manual_seed(0)
    out = augment(image.expand(400, -1, -1, -1))
    seen = [next(i for i, v in enumerate(dihedral) if torch.equal(o, v)) for o in out]
    counts = torch.bincount(torch.tensor(seen), minlength=8)
    assert (counts > 0).sum() == views and counts.sum() == 400
    assert counts.max() < 1.5 * 400 / views  # about uniform over the views
    torch.manual_seed(0)
    assert torch.equal(augment(image.expand(400, -1, -1, -1)), out)  # seeded


def test_rotate90_turns_each_image_by_a_random_quarter_and_does_nothing_else():
    """``rotate90``: each image one of its four rotations (no flip, no crop), about uniformly."""
    assert "rotate90" in AUGMENTATIONS
    assert TrialConfig(data={"root": "."}, transfer="scratch", augmentation="rotate90")
    assert stored_size("rotate90", 32) == 32 and eval_transform("rotate90", 32) is None
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    turns = [torch.rot90(image, k, (1, 2)) for k in range(4)]
    torch.manual_seed(0)
    out = train_transform("rotate90", 32)(image.expand(400, -1, -1, -1))
    seen = [next(k for k, v in enumerate(turns) if torch.equal(o, v)) for o in out]
    counts = torch.bincount(torch.tensor(seen), minlength=4)
    assert (counts > 0).all() and counts.max() < 1.5 * 400 / 4


def test_aerial_evaluates_the_whole_image_and_paper_its_centre():
    """``aerial`` resizes the whole stored image; ``paper`` centre-crops it (its protocol)."""
    for name, border_seen in (("aerial", True), ("paper", False)):
        side = stored_size(name, 32)
        image = torch.zeros((1, 3, side, side), dtype=torch.uint8)
        image[..., :, :2] = 255  # a bright left border
        out = eval_transform(name, 32)(image)
        assert out.shape == (1, 3, 32, 32)
        assert bool(out[..., :, 0].float().mean() > 100) == border_seen, name


def test_crop_scales_follow_the_preset():
    """Crops cover the preset's share of the image: 60-100 % for aerial, 8-100 % for paper."""
    for name, low in (("aerial", 0.6), ("paper", 0.08)):
        crop = train_transform(name, 32).crop
        side = stored_size(name, 32)
        torch.manual_seed(0)
        boxes = [crop.make_params([torch.zeros(3, side, side)]) for _ in range(500)]
        areas = [b["height"] * b["width"] / side**2 for b in boxes]
        assert min(areas) >= low - 0.02 and min(areas) < low + 0.1 and max(areas) <= 1.0
    assert stored_size("aerial", 64) == 128 and stored_size("paper", 64) == 73


def test_a_preset_is_one_entry_of_the_table(monkeypatch):
    """Adding a preset is data: a new entry works through the transforms and stored sizes."""
    from trainables import augment

    monkeypatch.setitem(augment.PRESETS, "flips", augment.Preset(hflip=True, dihedral=True))
    monkeypatch.setattr(augment, "AUGMENTATIONS", tuple(augment.PRESETS))
    image = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = train_transform("flips", 32)(image)
    assert out.shape == image.shape and stored_size("flips", 32) == 32
    assert eval_transform("flips", 32) is None
    assert sorted(o.sum().item() for o in out) == sorted(i.sum().item() for i in image)


def test_batch_augment_crops_each_image_differently():
    image = torch.randint(0, 256, (3, 36, 36), dtype=torch.uint8)
    out = train_transform("color", 32)(image.expand(16, -1, -1, -1))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.uint8
    assert len({o.numpy().tobytes() for o in out}) == 16


def test_cached_dataset_batches(tmp_path):
    root = make_nwpu(tmp_path / "b", classes=("airplane", "bridge"), per_class=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = _prepare(root, tmp_path, image_size=16)
    ds = data.dataset("train")
    images, labels = ds.__getitems__([0, 1, 2])
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8
    assert labels.tolist() == [int(data.scan.labels[r]) for r in ds.rows[:3]]
