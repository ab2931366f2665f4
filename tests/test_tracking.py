"""Trackers without Ray: the spec's ``tracking`` key, MLflow runs and artifacts, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tuner import tracking
from tuner.run import main
from tuner.tracking import Tracking

mlflow = pytest.importorskip("mlflow")


def _toy(tmp_path: Path, **extra) -> str:
    spec = {
        "experiment": "tracked",
        "trainable": "toy",
        "hyperparameters": {"lr": [1e-3, 1e-2], "epochs": 2},
        "search": {"algorithm": "grid"},
        **extra,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_tracker_that_is_not_installed_is_a_spec_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "installed", lambda module: module != "wandb")
    results = tmp_path / "results"
    spec = _toy(tmp_path, tracking=["tensorboard", "wandb"])
    assert main([spec, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "tracking[1]: tracking: wandb needs the optional package 'wandb'" in err
    assert 'pip install -e ".[tracking]"' in err and not results.exists()


def test_tracking_needs_a_local_results_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = _toy(tmp_path, tracking=["tensorboard"])
    assert main([spec, "--results", "s3://bucket/tuner"]) == 2
    assert "need a local --results folder" in capsys.readouterr().err


def _row(trial_id: str, status: str, checkpoint: Path | None) -> dict:
    return {
        "trial_id": trial_id,
        "status": status,
        "epochs_run": 2,
        "best_epoch": 2,
        "best_val_acc": 0.75,
        "test_acc": 0.7 if status == "completed" else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
    }


def test_mlflow_runs_params_metrics_artifact_and_status(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    exp = tmp_path / "results" / "exp"
    checkpoint = tmp_path / "checkpoint_000001"
    checkpoint.mkdir()
    (checkpoint / "best.pt").write_bytes(b"weights")
    params = {"lr": 0.01, "model": "tiny_cnn", "dropout": None}
    t = Tracking(["mlflow"], exp, "exp")
    t.epoch("a", params, {"epoch": 1, "val_acc": 0.5, "train_loss": 1.2})
    t.epoch("a", params, {"epoch": 2, "val_acc": 0.75, "train_loss": 0.9})
    t.end(_row("a", "completed", checkpoint), params)
    t.epoch("b", params, {"epoch": 1, "val_acc": 0.1})
    t.end(_row("b", "error", None), params)
    t.close()
    # a resumed search finds the trial's run by its tag instead of starting another
    again = Tracking(["mlflow"], exp, "exp")
    again.epoch("a", params, {"epoch": 3, "val_acc": 0.8})
    again.close()

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{exp}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("exp")
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["a", "b"]
    a, b = runs["a"], runs["b"]
    assert a.data.params == {"lr": "0.01", "model": "tiny_cnn"}  # nulls left out
    history = client.get_metric_history(a.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75), (3, 0.8)]
    assert a.data.metrics["test_acc"] == 0.7 and a.data.tags["status"] == "completed"
    assert b.info.status == "FAILED" and b.data.tags["status"] == "error"
    artifact = exp / "mlruns" / "artifacts" / a.info.run_id / "artifacts" / "checkpoint"
    assert (artifact / "best.pt").read_bytes() == b"weights"


def test_a_failing_tracker_only_warns(tmp_path, capsys):
    class Broken:
        name = "broken"

        def epoch(self, *args):
            raise OSError("disk full")

    t = Tracking([], tmp_path, "exp")
    t.trackers.append(Broken())
    t.epoch("a", {}, {"epoch": 1})
    t.epoch("a", {}, {"epoch": 2})
    err = capsys.readouterr().err
    assert err.count("warning: tracking broken: OSError: disk full") == 1
