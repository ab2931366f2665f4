"""The feature store: frozen features computed once, reused with identical results."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.fixtures import synthetic_data
from trainables.classify import train
from trainables.config import DataConfig, TrialConfig
from trainables.features import FeatureKey, FeatureStore, weights_identity
from trainables.models import create_model

CLASSES = ["farmland", "water", "forest"]
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "val_kappa")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    data = synthetic_data(root, CLASSES, per_class=20)
    weights = root / "tiny.pt"
    torch.manual_seed(0)
    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), weights)
    return data, weights


def _run(data: DataConfig, weights: Path, cache: Path, **kw) -> tuple[dict, list[dict]]:
    base = dict(
        model="tiny_cnn",
        transfer="frozen",
        weights=str(weights),
        epochs=3,
        batch_size=8,
        lr=3e-3,
        num_threads=1,
    )
    cfg = TrialConfig(data=data.model_copy(update={"cache_dir": str(cache)}), **{**base, **kw})
    rows: list[dict] = []
    summary = train(cfg, on_epoch=lambda m, d: rows.append(m), log=lambda s: None)
    return summary, rows


@pytest.mark.parametrize("augmentation", ["none", "aerial"])
def test_reused_features_give_identical_metrics_and_zero_feature_time(
    setup, tmp_path, augmentation
):
    data, weights = setup
    first, first_rows = _run(data, weights, tmp_path, augmentation=augmentation)
    again, again_rows = _run(data, weights, tmp_path, augmentation=augmentation)
    alone, alone_rows = _run(
        data, weights, tmp_path / "unused", augmentation=augmentation, feature_store=False
    )
    assert first_rows[0]["feature_time_s"] > 0
    if augmentation == "aerial":  # one new view per epoch
        assert all(r["feature_time_s"] > 0 for r in first_rows)
    assert [r["feature_time_s"] for r in again_rows] == [0.0] * 3
    assert all(r["feature_time_s"] > 0 for r in alone_rows[:1])
    assert not (tmp_path / "unused" / "features").exists()
    for a, b, c in zip(first_rows, again_rows, alone_rows, strict=True):
        for key in COMPARED:
            assert a[key] == b[key] == c[key], (key, a["epoch"])
    assert first["test_acc"] == again["test_acc"] == alone["test_acc"]


def test_trials_differing_in_lr_batch_and_head_share_the_features(setup, tmp_path):
    data, weights = setup
    _run(data, weights, tmp_path)
    _, rows = _run(data, weights, tmp_path, lr=1e-2, batch_size=4, head="mlp", optimizer="sgd")
    assert [r["feature_time_s"] for r in rows] == [0.0] * 3
    _, other_seed = _run(data, weights, tmp_path, augmentation="aerial", seed=1)
    assert other_seed[0]["feature_time_s"] > 0, "another seed draws other views"


def test_a_bank_of_views_is_replayed(setup, tmp_path):
    data, weights = setup
    _, rows = _run(data, weights, tmp_path, augmentation="aerial", epochs=4, feature_views=2)
    stored = list((tmp_path / "features").glob("*.pt"))
    assert len(stored) == 2 + 2, "val, test and two training views"
    assert rows[2]["feature_time_s"] == rows[3]["feature_time_s"] == 0.0
    _, alone = _run(
        data,
        weights,
        tmp_path / "x",
        augmentation="aerial",
        epochs=4,
        feature_views=2,
        feature_store=False,
    )
    assert alone[2]["feature_time_s"] == 0.0, "a small bank is kept in memory without a store"
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in alone]


def test_views_off_augments_every_epoch_through_the_backbone(setup, tmp_path):
    data, weights = setup
    _, rows = _run(data, weights, tmp_path, augmentation="aerial", feature_views=0)
    assert all(r["feature_time_s"] is None for r in rows)
    assert not (tmp_path / "features").exists()


def test_key_covers_weights_bytes_split_and_view(tmp_path):
    w = tmp_path / "w.pt"
    w.write_bytes(b"one")
    first = weights_identity(str(w))
    time.sleep(0.01)
    w.write_bytes(b"two")
    assert weights_identity(str(w)) != first and first.startswith("sha256:")
    assert weights_identity("imagenet") == "imagenet"
    base = FeatureKey("resnet18", "sha256:x", "h1", 64, "fp32", "val:eval:stored64:as-stored")
    variants = [
        FeatureKey("resnet50", "sha256:x", "h1", 64, "fp32", base.view),
        FeatureKey("resnet18", "sha256:y", "h1", 64, "fp32", base.view),
        FeatureKey("resnet18", "sha256:x", "h2", 64, "fp32", base.view),
        FeatureKey("resnet18", "sha256:x", "h1", 96, "fp32", base.view),
        FeatureKey("resnet18", "sha256:x", "h1", 64, "bf16", base.view),
        FeatureKey("resnet18", "sha256:x", "h1", 64, "fp32", "train:aerial:seed0:view1"),
        FeatureKey("resnet18", "sha256:x", "h1", 64, "fp32", base.view, limit=8),
    ]
    assert len({base.digest(), *(v.digest() for v in variants)}) == 1 + len(variants)


def test_a_damaged_file_is_recomputed(tmp_path):
    store = FeatureStore(tmp_path)
    key = FeatureKey("m", "w", "h", 16, "p", "val:eval")
    tensors, seconds = store.fetch(key, lambda: {"x": torch.ones(2, 3)})
    store.path(key).write_bytes(b"not a tensor file")
    again, _ = store.fetch(key, lambda: {"x": torch.full((2, 3), 2.0)})
    assert torch.equal(again["x"], torch.full((2, 3), 2.0))
    read, seconds = store.fetch(key, lambda: pytest.fail("must be read"))
    assert seconds == 0.0 and torch.equal(read["x"], again["x"])


def _fetch_in_process(root: str, barrier, calls: str, out: str) -> None:
    """Child process: wait for the other, then ask the store for the same key."""

    def compute() -> dict:
        with open(calls, "a") as f:
            f.write("computed\n")
        time.sleep(0.5)  # long enough for the other process to arrive at the lock
        return {"x": torch.arange(6.0).view(2, 3)}

    barrier.wait()
    tensors, _ = FeatureStore(root).fetch(FeatureKey("m", "w", "h", 16, "p", "v"), compute)
    torch.save(tensors, out)


def test_two_processes_asking_at_once_compute_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    calls = tmp_path / "calls.txt"
    procs = [
        ctx.Process(
            target=_fetch_in_process,
            args=(str(tmp_path / "store"), barrier, str(calls), str(tmp_path / f"out{i}.pt")),
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    assert calls.read_text().splitlines() == ["computed"]
    a, b = (torch.load(tmp_path / f"out{i}.pt", weights_only=True) for i in range(2))
    assert torch.equal(a["x"], b["x"])
    assert not list((tmp_path / "store").glob(".*tmp*")), "no temporary file left behind"


def test_bad_feature_views_name_the_key(setup):
    data, weights = setup
    with pytest.raises(ValidationError, match="feature_views"):
        TrialConfig(data=data, transfer="frozen", weights=str(weights), feature_views=-1)


def test_frozen_checkpoints_keep_the_head_and_resume_exactly(setup, tmp_path):
    data, weights = setup
    cfg = TrialConfig(
        data=data.model_copy(update={"cache_dir": str(tmp_path / "cache")}),
        model="tiny_cnn",
        transfer="frozen",
        weights=str(weights),
        augmentation="aerial",
        epochs=3,
        batch_size=8,
        num_threads=1,
    )
    full: list[dict] = []
    train(cfg, checkpoint_dir=tmp_path / "a", on_epoch=lambda m, d: full.append(m), log=print)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["model"] and not any(k.startswith("backbone.") for k in state["model"])
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert any(k.startswith("backbone.") for k in best["model"]), "best.pt stays whole"

    class Interrupt(Exception):
        pass

    def stop_after_one(metrics, directory):
        if metrics["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, checkpoint_dir=tmp_path / "b", on_epoch=stop_after_one, log=print)
    part: list[dict] = []
    train(
        cfg,
        checkpoint_dir=tmp_path / "b",
        resume=tmp_path / "b",
        on_epoch=lambda m, d: part.append(m),
        log=print,
    )
    assert [m["epoch"] for m in part] == [2, 3]
    for a, b in zip(full[1:], part, strict=True):
        for key in COMPARED:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key

    other = tmp_path / "other.pt"
    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), other)
    with pytest.raises(ValueError, match="frozen backbone came from weights"):
        train(
            cfg.model_copy(update={"weights": str(other)}),
            checkpoint_dir=tmp_path / "b",
            resume=tmp_path / "b",
            log=print,
        )
