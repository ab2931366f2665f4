"""The training loop: learning, resume, frozen backbone-once, checkpoints, CLI."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures import synthetic_data
from trainables import classify
from trainables.classify import BEST, CHECKPOINT, Trial, train
from trainables.config import DataConfig, TrialConfig
from trainables.models import create_model

CLASSES = ["farmland", "water", "dense_residential", "forest"]


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    return synthetic_data(tmp_path_factory.mktemp("synthetic"), CLASSES, per_class=40)


def _cfg(data_cfg, **kw) -> TrialConfig:
    base = dict(
        model="tiny_cnn", transfer="scratch", epochs=3, batch_size=16, lr=3e-3, num_threads=1
    )
    base.update(kw)
    return TrialConfig(data=data_cfg, **base)


def test_short_training_beats_chance_clearly(data_cfg):
    summary = train(_cfg(data_cfg, epochs=6, augmentation="aerial"), log=lambda s: None)
    chance = 1 / len(CLASSES)
    assert summary["test_acc"] > 2 * chance, summary
    assert 0 <= summary["test_kappa"] <= 1 and summary["test_f1"] > chance
    assert summary["best_epoch"] >= 1 and summary["epochs_run"] == 6


def test_resume_reproduces_the_uninterrupted_run(data_cfg, tmp_path):
    cfg = _cfg(data_cfg, epochs=4, augmentation="paper")
    full: list[dict] = []
    train(
        cfg, checkpoint_dir=tmp_path / "a", on_epoch=lambda m, d: full.append(m), log=lambda s: None
    )

    class Interrupt(Exception):
        pass

    part: list[dict] = []

    def stop_after_two(metrics, directory):
        part.append(metrics)
        if metrics["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, checkpoint_dir=tmp_path / "b", on_epoch=stop_after_two, log=lambda s: None)
    train(
        cfg,
        checkpoint_dir=tmp_path / "b",
        resume=tmp_path / "b",
        on_epoch=lambda m, d: part.append(m),
        log=lambda s: None,
    )
    assert [m["epoch"] for m in part] == [1, 2, 3, 4]
    for a, b in zip(full, part, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_kappa"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (key, a["epoch"])
    assert full[-1]["test_acc"] == pytest.approx(part[-1]["test_acc"])


def test_frozen_without_augmentation_runs_the_backbone_once(data_cfg, tmp_path, monkeypatch):
    source = tmp_path / "source"
    train(_cfg(data_cfg, epochs=1), checkpoint_dir=source, log=lambda s: None)
    cfg = _cfg(data_cfg, transfer="frozen", weights=str(source / BEST), epochs=3)
    trial = Trial(cfg, log=lambda s: None)
    calls = {"n": 0}
    hook = trial.model.backbone.register_forward_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1)
    )
    before_backbone = {k: v.clone() for k, v in trial.model.backbone.state_dict().items()}
    before_head = {k: v.clone() for k, v in trial.model.head.state_dict().items()}
    assert trial.backbone_once
    batches = sum(len(b) for b in trial.splits.values())
    assert calls["n"] == 0  # features were computed before the hook was attached
    trial.fit()
    hook.remove()
    assert calls["n"] == 0, "the backbone must not run again during the epochs"
    for k, v in trial.model.backbone.state_dict().items():
        assert torch.equal(v, before_backbone[k]), k
    assert any(not torch.equal(v, before_head[k]) for k, v in trial.model.head.state_dict().items())
    assert batches > 0


def test_frozen_backbone_once_matches_per_epoch_forward(data_cfg, tmp_path):
    source = tmp_path / "source"
    train(_cfg(data_cfg, epochs=1), checkpoint_dir=source, log=lambda s: None)
    cfg = _cfg(data_cfg, transfer="frozen", weights=str(source / BEST), epochs=2)
    once = train(cfg, log=lambda s: None)
    every = Trial(cfg, log=lambda s: None, backbone_once=False)
    assert all(b.features is None for b in every.splits.values())
    summary = every.fit()
    assert summary["best_val_acc"] == pytest.approx(once["best_val_acc"], abs=1e-6)
    assert summary["test_acc"] == pytest.approx(once["test_acc"], abs=1e-6)


def test_checkpoints_and_best_weights_transfer(data_cfg, tmp_path):
    summary = train(_cfg(data_cfg, epochs=2), checkpoint_dir=tmp_path, log=lambda s: None)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "scheduler", "rng"} <= set(state)
    best = torch.load(tmp_path / BEST, weights_only=True)
    assert best["epoch"] == summary["best_epoch"]
    model = create_model("tiny_cnn", 7, transfer="finetune", weights=str(tmp_path / BEST))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, best["model"][f"backbone.{k}"]), k
    assert model.normalization == tuple(tuple(x) for x in best["normalization"])


def test_frozen_best_weights_share_the_backbone_and_best_pt_stays_whole(data_cfg, tmp_path):
    """A new best epoch of a frozen trial copies the head only: the backbone tensors of
    every best-weights copy are one copy of the weights file's, and ``best.pt`` still holds
    the whole model, with the head of the best epoch."""
    source = tmp_path / "source"
    train(_cfg(data_cfg, epochs=1), checkpoint_dir=source, log=lambda s: None)
    cfg = _cfg(data_cfg, transfer="frozen", weights=str(source / BEST), epochs=4, lr=3e-2)
    trial = Trial(cfg, log=lambda s: None)
    copies: list[dict] = []

    def keep(metrics, directory):
        if metrics["best_epoch"] == metrics["epoch"]:
            copies.append(trial.best_state)

    trial.fit(tmp_path / "trial", keep)
    assert len(copies) >= 2, "the test needs two new best epochs"
    live = trial.model.state_dict()
    backbone = [k for k in live if k.startswith("backbone.")]
    head = [k for k in live if not k.startswith("backbone.")]
    for k in backbone:
        assert all(c[k].data_ptr() == copies[0][k].data_ptr() for c in copies), k
        assert copies[0][k].data_ptr() != live[k].data_ptr(), k
    assert any(not torch.equal(copies[0][k], copies[-1][k]) for k in head)
    assert all(copies[0][k].data_ptr() != copies[-1][k].data_ptr() for k in head)
    best = torch.load(tmp_path / "trial" / BEST, weights_only=True)
    assert set(best["model"]) == set(live) and best["epoch"] == trial.best["epoch"]
    source_state = torch.load(source / BEST, weights_only=True)["model"]
    for k in backbone:
        assert torch.equal(best["model"][k], source_state[k]), k
    for k in head:
        assert torch.equal(best["model"][k], copies[-1][k]), k


@pytest.mark.parametrize(("optimizer", "fused"), [("adam", True), ("adamw", True), ("sgd", None)])
def test_adam_steps_with_the_fused_kernel_on_the_cpu(data_cfg, optimizer, fused):
    trial = Trial(_cfg(data_cfg, optimizer=optimizer, max_batches=1, epochs=1), log=lambda s: None)
    assert trial.optimizer.defaults.get("fused") is fused
    before = [p.detach().clone() for p in trial.model.head.parameters()]
    trial.fit()
    assert any(
        not torch.equal(b, p) for b, p in zip(before, trial.model.head.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("optimizer", "schedule", "head"), [("sgd", "step", "svm"), ("adamw", "cosine", "mlp")]
)
def test_optimizers_schedules_heads(data_cfg, optimizer, schedule, head):
    cfg = _cfg(
        data_cfg,
        epochs=2,
        optimizer=optimizer,
        lr_schedule=schedule,
        lr_step=1,
        head=head,
        max_batches=2,
    )
    history: list[dict] = []
    train(cfg, on_epoch=lambda m, d: history.append(m), log=lambda s: None)
    if schedule == "step":
        assert history[1]["lr"] == pytest.approx(history[0]["lr"] * 0.1)
    else:
        assert history[1]["lr"] < history[0]["lr"]


def test_cli(data_cfg, tmp_path, capsys):
    code = classify.main(
        [
            "--preset",
            "synthetic",
            "--root",
            data_cfg.root,
            "--classes",
            *CLASSES,
            "--image-size",
            "32",
            "--cache-dir",
            data_cfg.cache_dir,
            "--model",
            "tiny_cnn",
            "--transfer",
            "scratch",
            "--epochs",
            "2",
            "--max-batches",
            "2",
            "--num-threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "epoch   1/2" in out and "test_acc" in out and "split_hash" in out
    assert classify.main(["--root", data_cfg.root, "--transfer", "scratch", "--lr", "-1"]) == 2
    assert "error: --lr: Input should be greater than 0 (got -1.0)" in capsys.readouterr().err
    assert classify.main(["--root", data_cfg.root, "--transfer", "frozen"]) == 2
    err = capsys.readouterr().err
    assert "transfer 'frozen' needs pretrained weights" in err and "'imagenet'" in err
