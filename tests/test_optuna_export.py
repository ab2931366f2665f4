"""The Optuna study export (``optuna.db``) read back with ``optuna.load_study``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import optuna
import pandas as pd
import yaml

from tuner.optuna_export import DB_NAME, main
from tuner.results import ResultsStore, load
from tuner.spec import referenced, validate

SPEC = {
    "experiment": "exp",
    "trainable": "toy",
    "hyperparameters": {
        "lr": {"loguniform": [1.0e-4, 1.0e-1]},
        "batch_size": [16, 64],
        "optimizer": "sgd",
        "epochs": 3,
    },
    "search": {"algorithm": "optuna", "num_samples": 4, "seeds": 1},
}


def _store(tmp_path):
    spec = validate(SPEC)
    store = ResultsStore(tmp_path / "results", "exp")
    store.write_text("spec.yaml", yaml.safe_dump(referenced(spec), sort_keys=False))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cases = [  # trial, status, epochs run, lr, batch size
        ("t0", "completed", 3, 1e-3, 16),
        ("t1", "early-stopped", 1, 5e-2, 64),
        ("t2", "stopped-budget", 2, 2e-4, 16),
        ("t3", "error", 1, 9e-2, 64),
    ]
    for i, (trial, status, run, lr, bs) in enumerate(cases):
        curve = [0.2 + 0.1 * e + 0.01 * i for e in range(1, run + 1)]
        best = max(range(run), key=lambda e: curve[e]) + 1
        store.write_epochs(
            trial,
            [
                {"epoch": e, "val_acc": curve[e - 1], "best_epoch": best, "time": t0}
                for e in range(1, run + 1)
            ],
        )
        store.write_trial(
            {
                "trial_id": trial,
                "status": status,
                "lr": lr,
                "batch_size": bs,
                "optimizer": "sgd",
                "epochs": 3,
                "seed": 0,
                "epochs_run": run,
                "best_epoch": best,
                "best_val_acc": curve[best - 1],
                "test_acc": 0.9 if status == "completed" else None,
                "error": "ValueError: diverged" if status == "error" else None,
                "start_time": t0 + timedelta(minutes=i),
                "end_time": t0 + timedelta(minutes=i + 1),
            }
        )
    return store


def test_load_study_sees_every_trial_with_the_same_values(tmp_path, capsys):
    store = _store(tmp_path)
    assert main([store.uri]) == 0
    assert "optuna-dashboard sqlite:///" in capsys.readouterr().out
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{store.dir}/{DB_NAME}")
    trials, epochs = load(store.uri)
    assert len(study.trials) == len(trials) == 4
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    states = {k: t.state.name for k, t in by_id.items()}
    assert states == {"t0": "COMPLETE", "t1": "PRUNED", "t2": "PRUNED", "t3": "FAIL"}
    for row in trials.to_dict("records"):
        t = by_id[row["trial_id"]]
        assert t.user_attrs["status"] == row["status"]
        assert t.params == {"lr": row["lr"], "batch_size": row["batch_size"]}
        assert t.user_attrs["optimizer"] == "sgd" and t.user_attrs["epochs"] == 3
        curve = epochs[epochs.trial_id == row["trial_id"]].set_index("epoch")["val_acc"]
        assert t.intermediate_values == {int(e): v for e, v in curve.items()}
        if row["status"] == "error":
            assert t.value is None and t.user_attrs["error"] == "ValueError: diverged"
        else:
            assert t.value == row["best_val_acc"]
        assert t.datetime_start < t.datetime_complete
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["t0", "t1", "t2", "t3"]
    assert study.best_trial.user_attrs["trial_id"] == "t0"
    assert isinstance(study.trials[0].distributions["lr"], optuna.distributions.FloatDistribution)
    assert study.trials[0].distributions["lr"].log
    # exporting again replaces the file (no duplicate study or trials)
    assert main([store.uri]) == 0
    assert (
        len(optuna.load_study(study_name="exp", storage=f"sqlite:///{store.dir}/{DB_NAME}").trials)
        == 4
    )
    assert not [p for p in (tmp_path / "results" / "exp").iterdir() if p.name.endswith(".tmp")]


def test_no_experiment_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no experiment" in capsys.readouterr().err


def test_timestamps_are_the_rows(tmp_path):
    store = _store(tmp_path)
    main([store.uri])
    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{store.dir}/{DB_NAME}")
    trials, _ = load(store.uri)
    first = trials.set_index("trial_id").loc["t0", "start_time"]
    local = pd.Timestamp(first).tz_convert(None).to_pydatetime()
    offset = datetime.now().astimezone().utcoffset()
    assert study.trials[0].datetime_start == local + offset
