"""Trackers, the Optuna study export and the time budget, end to end through ``tuner.run``.

A toy search (local Ray, 2 CPUs) runs with ``tracking: [tensorboard, mlflow, wandb]``; the
event files, the MLflow store, the offline W&B runs and ``optuna.db`` are read back and
compared with the Parquet tables. A second search runs under ``--time-budget``.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.results import load
from tuner.run import main

pytestmark = pytest.mark.slow

TRACKERS = ["tensorboard", "mlflow", "wandb"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-default"))


def _write(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-7)  # TB keeps float32


def _wandb_records(path: Path) -> list:
    """The records of an offline ``.wandb`` file (a LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, buf = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        buf = chunk if kind == 2 else buf + chunk
        if kind in (1, 4):
            out.append(pb.Record.FromString(buf))
            buf = b""
    return out


def test_trackers_and_optuna_study_match_the_parquet_tables(tmp_path, monkeypatch, capsys):
    for module in ("tensorboard", "mlflow", "wandb"):  # the tracking extra
        pytest.importorskip(module)
    monkeypatch.setenv("TUNER_TOY_EPOCH_S", "0.05")
    spec = {
        "experiment": "eco",
        "trainable": "toy",
        "hyperparameters": {
            "lr": {"loguniform": [1.0e-4, 1.0e-1]},
            "batch_size": [16, 64],
            "epochs": 4,
        },
        "search": {"algorithm": "optuna", "num_samples": 5, "max_concurrent": 2},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "tracking": TRACKERS,
    }
    results = tmp_path / "results"
    argv = [_write(tmp_path, spec), "--results", str(results), "--num-cpus", "2"]
    assert main(argv) == 0
    assert "optuna:     sqlite:///" in capsys.readouterr().out
    exp = results / "eco"
    trials, epochs = load(exp)
    assert len(trials) == 5 and set(trials["status"]) <= {"completed", "early-stopped"}
    rows = {r["trial_id"]: r for r in trials.to_dict("records")}
    curves = {
        t: dict(zip(g["epoch"].astype(int), g["val_acc"], strict=True))
        for t, g in epochs.groupby("trial_id")
    }

    # Optuna: one trial per row, value = the metric at the best epoch, a curve per epoch
    study = optuna.load_study(study_name="eco", storage=f"sqlite:///{exp}/optuna.db")
    assert len(study.trials) == len(trials)
    for t in study.trials:
        row = rows[t.user_attrs["trial_id"]]
        assert t.value == row["best_val_acc"] and t.params["lr"] == row["lr"]
        assert t.state.name == {"completed": "COMPLETE", "early-stopped": "PRUNED"}[row["status"]]
        assert t.intermediate_values == curves[row["trial_id"]]

    # TensorBoard: a run per trial, val_acc per epoch, final figures and the HParams view
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = sorted(p.name for p in (exp / "tensorboard").iterdir())
    assert runs == sorted(rows)
    for trial_id, row in rows.items():
        ea = EventAccumulator(str(exp / "tensorboard" / trial_id))
        ea.Reload()
        scalars = {e.step: e.value for e in ea.Scalars("val_acc")}
        assert scalars.keys() == curves[trial_id].keys()
        assert all(_close(scalars[s], curves[trial_id][s]) for s in scalars)
        assert _close(ea.Scalars("final/best_val_acc")[-1].value, row["best_val_acc"])
        content = ea.PluginTagToContent("hparams")
        starts = [plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()]
        hp = next(s.session_start_info.hparams for s in starts if s.HasField("session_start_info"))
        assert (
            _close(hp["lr"].number_value, row["lr"]) and hp["status"].string_value == row["status"]
        )

    # MLflow: a run per trial with the params, per-epoch metrics, final figures and status
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{exp}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("eco")
    mruns = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial_id"] for r in mruns) == sorted(rows)
    for run in mruns:
        row = rows[run.data.tags["trial_id"]]
        assert run.data.params["lr"] == str(row["lr"])
        assert run.data.params["batch_size"] == str(row["batch_size"])
        assert run.data.tags["status"] == row["status"] and run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert {m.step: m.value for m in history} == curves[row["trial_id"]]
        assert run.data.metrics["best_val_acc"] == row["best_val_acc"]
        if row["status"] == "completed":
            assert run.data.metrics["test_acc"] == row["test_acc"]
        else:
            assert "test_acc" not in run.data.metrics

    # W&B (offline): a run per trial; history and summary are the tables' numbers
    files = sorted((exp / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == len(rows)
    for path in files:
        records = _wandb_records(path)
        run_id = next(r.run.run_id for r in records if r.WhichOneof("record_type") == "run")
        trial_id = run_id.removeprefix("eco-")
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item}
                history[int(items["_step"])] = json.loads(items["val_acc"])
        assert history == curves[trial_id]
        summary = {}
        for r in records:
            if r.WhichOneof("record_type") == "summary":
                summary.update({i.key: i.value_json for i in r.summary.update if i.key})
        assert json.loads(summary["best_val_acc"]) == rows[trial_id]["best_val_acc"]
        assert json.loads(summary["status"]) == rows[trial_id]["status"]


def test_time_budget_stops_launching_and_records_stopped_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNER_TOY_EPOCH_S", "0.5")
    spec = {
        "experiment": "budget",
        "trainable": "toy",
        "hyperparameters": {
            "lr": [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3],
            "batch_size": [16, 32, 64, 128],
            "epochs": 8,
        },
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "scheduler": {"type": "none"},
    }
    results = tmp_path / "results"
    argv = [_write(tmp_path, spec), "--results", str(results), "--num-cpus", "2"]
    assert main([*argv, "--time-budget", "15s"]) == 0
    out = capsys.readouterr().out
    trials, epochs = load(results / "budget")
    statuses = trials["status"].value_counts().to_dict()
    assert set(statuses) <= {"completed", "stopped-budget"}, statuses
    assert statuses.get("stopped-budget", 0) >= 1 and len(trials) < 16
    stopped = trials[trials["status"] == "stopped-budget"]
    assert (stopped["epochs_run"] < 8).all() and stopped["test_acc"].isna().all()
    per_trial = epochs.groupby("trial_id")["epoch"].max()
    assert (per_trial.reindex(trials["trial_id"]).to_numpy() == trials["epochs_run"]).all()
    assert "time budget 15s spent: no more trials are launched" in out
    assert f"time budget 15s spent: {len(trials)} of 16 grid trials" in out
    assert "stopped by budget" in out
    saved = yaml.safe_load((results / "budget" / "spec.yaml").read_text())
    assert saved["search"]["time_budget"] == "15s"
    study = optuna.load_study(study_name="budget", storage=f"sqlite:///{results}/budget/optuna.db")
    assert len(study.trials) == len(trials)
