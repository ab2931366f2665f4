"""End to end through ``tuner.run.main(argv)`` on a local Ray instance (tiny data, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from tuner import rank as rank_cli
from tuner.results import EPOCH_SCHEMA, TRIAL_SCHEMA, load, rank
from tuner.run import main

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_TOY_EPOCH_S", "0.05")


def _write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _classify_spec(**search) -> dict:
    return {
        "experiment": "e2e",
        "dataset": {
            "preset": "synthetic",
            "root": "${TUNER_DATA}/target",
            "classes": ["farmland", "water", "dense_residential", "forest"],
            "synthetic": {"per_class": 16, "size": 16, "seed": 0},
            "image_size": 16,
        },
        "pretrain": {
            "dataset": {
                "preset": "synthetic",
                "root": "${TUNER_DATA}/source",
                "classes": ["meadow", "river", "parking", "desert"],
                "synthetic": {"per_class": 16, "size": 16, "seed": 1},
            },
            "epochs": 2,
        },
        "factors": {
            "model": "tiny_cnn",
            "transfer": ["scratch", "frozen", "finetune"],
            "weights": "pretrain",
            "augmentation": ["none", "aerial"],
        },
        "hyperparameters": {"lr": {"loguniform": [1e-4, 1e-1]}, "batch_size": 16, "epochs": 4},
        "search": {"algorithm": "optuna", "num_samples": 8, "max_concurrent": 2, **search},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    }


def _toy_spec(**kw) -> dict:
    spec = {
        "experiment": "toy",
        "trainable": "toy",
        "hyperparameters": {"lr": [1e-4, 1e-3, 1e-2], "batch_size": [16, 64], "epochs": 3},
        "search": {"algorithm": "grid", "seeds": [0, 1]},
        "scheduler": {"type": "none"},
    }
    spec.update(kw)
    return spec


def test_optuna_asha_search_writes_typed_tables(tmp_path, capsys):
    spec = _write(tmp_path, _classify_spec())
    results = tmp_path / "results"
    assert main([spec, "--results", str(results), "--laptop", "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "top 10 by test_acc" in out and "stopped early" in out

    trials, epochs = load(results / "e2e")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert list(trials.columns) == TRIAL_SCHEMA.names
    assert list(epochs.columns) == EPOCH_SCHEMA.names
    statuses = trials["status"].value_counts()
    assert statuses.get("early-stopped", 0) >= 1, statuses
    assert statuses.get("completed", 0) >= 1, statuses
    assert "error" not in statuses
    # one epoch row per trial x epoch it ran
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    per_trial = epochs.groupby("trial_id")["epoch"].max()
    assert (per_trial.reindex(trials["trial_id"]).to_numpy() == trials["epochs_run"]).all()
    assert len(epochs) == trials["epochs_run"].sum()
    done = trials[trials["status"] == "completed"]
    stopped = trials[trials["status"] == "early-stopped"]
    assert done["test_acc"].notna().all() and stopped["test_acc"].isna().all()
    assert (stopped["epochs_run"] < 4).all() and (done["epochs_run"] == 4).all()
    # typed columns
    assert trials["lr"].dtype == "float64" and str(trials["batch_size"].dtype) == "Int64"
    assert str(trials["model"].dtype) == "string" and str(trials["epochs_run"].dtype) == "Int64"
    assert str(trials["start_time"].dtype).startswith("datetime64")
    assert set(trials["augmentation"]) <= {"none", "aerial"}
    assert trials["split_hash"].nunique() == 1 and trials["macs"].gt(0).all()
    scratch = trials["transfer"] == "scratch"
    assert (trials.loc[scratch, "params"] == trials.loc[scratch, "trainable_params"]).all()
    assert (trials.loc[~scratch, "weights"] == "pretrain").all()
    assert (trials.loc[scratch, "weights"] == "none").all()
    frozen = trials["transfer"] == "frozen"
    assert (trials.loc[frozen, "trainable_params"] < trials.loc[frozen, "params"]).all()
    assert "pretrain: training tiny_cnn" in out
    assert all(len(c) == 4 for c in done["test_confusion"])
    assert (results / "e2e" / "spec.yaml").is_file() and (
        results / "e2e" / "manifest.csv"
    ).is_file()
    # ranking API and CLI
    table = rank(trials, by="test_acc", group=["augmentation"])
    assert set(table["augmentation"]) <= {"none", "aerial"} and table["n"].sum() == len(done)
    assert rank_cli.main([str(results / "e2e"), "--group", "augmentation"]) == 0

    # re-running the same experiment name refuses; --name makes a new one
    assert main([spec, "--results", str(results)]) == 2
    assert "already has results" in capsys.readouterr().err
    assert len(load(results / "e2e")[0]) == 8
    # a new name runs again and reuses the pretraining stage's checkpoint
    again = [spec, "--results", str(results), "--name", "e2e_b", "--set", "search.num_samples=2"]
    assert main([*again, "--laptop", "--num-cpus", "2"]) == 0
    assert "pretrain: reusing tiny_cnn" in capsys.readouterr().out
    assert len(load(results / "e2e_b")[0]) == 2


def test_uri_results_share_the_pretraining_stage_through_the_results(tmp_path, monkeypatch):
    """With URI results (``file://`` here, as ``s3://``/``gs://``) the stage's checkpoint is
    uploaded to ``<results>/_pretrained/`` and trials read it from there; the driver's
    working directory gets nothing (before, ``./_pretrained`` was written there)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    spec = _write(tmp_path, _classify_spec(num_samples=2))
    monkeypatch.chdir(cwd)
    results = tmp_path / "results"
    argv = [spec, "--results", f"file://{results}", "--laptop", "--num-cpus", "2"]
    assert main([*argv, "--set", "factors.transfer=frozen"]) == 0
    assert list(cwd.iterdir()) == []
    (uploaded,) = (results / "_pretrained").glob("tiny_cnn-*/best.pt")
    local = tmp_path / "cache" / "pretrained" / uploaded.parent.name / "best.pt"
    assert local.read_bytes() == uploaded.read_bytes()
    trials, _ = load(results / "e2e")
    assert len(trials) == 2 and (trials["weights"] == "pretrain").all()
    assert trials["status"].isin(["completed", "early-stopped"]).all()


def test_grid_covers_every_cell_and_seed(tmp_path):
    results = tmp_path / "results"
    assert main([_write(tmp_path, _toy_spec()), "--results", str(results), "--num-cpus", "2"]) == 0
    trials, epochs = load(results / "toy")
    cells = trials.groupby(["lr", "batch_size", "seed"]).size()
    assert len(trials) == 3 * 2 * 2 and len(cells) == 12 and (cells == 1).all()
    assert (trials["status"] == "completed").all() and len(epochs) == 12 * 3


def test_optuna_runs_each_configuration_once_and_ends_with_the_space(tmp_path):
    spec = _toy_spec(
        search={"algorithm": "optuna", "num_samples": 20, "max_concurrent": 2, "seeds": 1}
    )
    results = tmp_path / "results"
    assert main([_write(tmp_path, spec), "--results", str(results), "--num-cpus", "2"]) == 0
    trials, _ = load(results / "toy")
    cells = trials.groupby(["lr", "batch_size"]).size()
    assert len(trials) == 3 * 2 and len(cells) == 6 and (cells == 1).all()
    assert (trials["status"] == "completed").all()


def test_fractional_gpus_pack_four_trials_per_logical_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_TOY_EPOCH_S", "0.6")
    spec = _toy_spec(
        experiment="gpu",
        resources={"cpu": 0.5, "gpu": 0.25},
        hyperparameters={"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1], "epochs": 3},
        search={"algorithm": "grid", "seeds": 1},
    )
    results = tmp_path / "results"
    args = [_write(tmp_path, spec), "--results", str(results), "--num-cpus", "8", "--num-gpus", "1"]
    assert main(args) == 0
    trials, _ = load(results / "gpu")
    assert len(trials) == 8 and (trials["gpu_fraction"] == 0.25).all()
    events = sorted(
        [(t, 1) for t in trials["start_time"]] + [(t, -1) for t in trials["end_time"]],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 4, f"expected 4 trials at once on one GPU at 0.25 each, saw {peak}"


def test_interrupted_search_leaves_readable_parquet(tmp_path):
    spec = _write(
        tmp_path,
        _toy_spec(
            experiment="kill",
            hyperparameters={
                "lr": [1e-4, 1e-3, 1e-2, 1e-1],
                "batch_size": [16, 32, 64],
                "epochs": 4,
            },
        ),
    )
    results = tmp_path / "results"
    env = {**os.environ, "TUNER_TOY_EPOCH_S": "0.3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.run", spec, "--results", str(results), "--num-cpus", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    trials_dir = results / "kill" / "trials"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(trials_dir.glob("*.parquet"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = list(trials_dir.glob("*.parquet"))
    assert 3 <= len(written) < 24, "the search should have been interrupted mid-way"
    trials = pd.read_parquet(trials_dir)
    epochs = pd.read_parquet(results / "kill" / "epochs")
    assert len(trials) == len(written) and trials["status"].eq("completed").all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for f in written:
        assert pq.read_metadata(f).num_rows == 1
