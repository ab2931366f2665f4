"""The experiment report: every table against pandas on the same Parquet, partial results,
several experiments, figures, the CLI, rendering in headless Chromium, and a tiny search."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.fixtures import make_nwpu
from trainables.models import create_model
from tuner.report import build_report, find_experiments, load_experiment
from tuner.report import tables as T
from tuner.report.__main__ import main
from tuner.report.figures import FigureUnavailable, checkpoint_file, conv_layers, feature_maps
from tuner.results import ResultsStore, load
from tuner.spec import validate

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ["airplane", "bridge", "palace"]
PARAMS = {"tiny_cnn": 98_712, "resnet18": 11_178_051, "mobilenet_v2": 2_227_715}
MACS = {"tiny_cnn": 996_352, "resnet18": 37_000_000, "mobilenet_v2": 6_100_000}
# Test / validation accuracy of tiny_cnn per (transfer, augmentation). The best validation
# configuration (finetune + paper) is not the best test one (frozen + paper): the report must
# choose on validation.
TEST = {
    ("scratch", "none"): 0.50,
    ("scratch", "paper"): 0.55,
    ("frozen", "none"): 0.60,
    ("frozen", "paper"): 0.66,
    ("finetune", "none"): 0.62,
    ("finetune", "paper"): 0.64,
}
VAL = {
    ("scratch", "none"): 0.48,
    ("scratch", "paper"): 0.52,
    ("frozen", "none"): 0.58,
    ("frozen", "paper"): 0.60,
    ("finetune", "none"): 0.61,
    ("finetune", "paper"): 0.65,
}
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------ fixtures
def spec_dict(root: Path | str, name: str = "hand", **sections) -> dict:
    """A minimal resolved spec like the one ``tuner.run`` saves."""
    spec = {
        "experiment": name,
        "trainable": "classify",
        "dataset": {
            "preset": "nwpu_resisc45",
            "root": str(root),
            "classes": CLASSES,
            "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
            "image_size": 32,
        },
        "factors": {
            "model": ["tiny_cnn", "resnet18", "mobilenet_v2"],
            "transfer": ["scratch", "frozen", "finetune"],
            "weights": "imagenet",
            "augmentation": ["none", "paper"],
        },
        "hyperparameters": {"lr": 0.001, "batch_size": 32, "epochs": 4},
        "search": {"algorithm": "grid", "seeds": 2, "metric": "val_acc"},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 1, "gpu": 0},
    }
    spec.update(sections)
    return spec


def trial_row(trial_id: str, model: str, transfer: str, aug: str, seed: int, **kw) -> dict:
    """A completed trial (override any field with ``kw``)."""
    lift = {"tiny_cnn": 0.0, "resnet18": 0.2, "mobilenet_v2": 0.1}[model]
    shift = (-0.01, 0.02)[seed]
    test = TEST[transfer, aug] + lift + shift
    i = int(trial_id.rsplit("-", 1)[-1]) if trial_id[-1].isdigit() else 0
    row = {
        "trial_id": trial_id,
        "status": "completed",
        "dataset": "nwpu_resisc45",
        "model": model,
        "transfer": transfer,
        "weights": "none" if transfer == "scratch" else "imagenet",
        "head": "linear",
        "augmentation": aug,
        "optimizer": "adam",
        "lr": 0.001,
        "batch_size": 32,
        "epochs": 4,
        "seed": seed,
        "epochs_run": 4,
        "best_epoch": 3,
        "best_val_acc": VAL[transfer, aug] + lift + shift / 2,
        "best_val_f1": VAL[transfer, aug] + lift - 0.01,
        "best_val_kappa": VAL[transfer, aug] + lift - 0.03,
        "test_acc": test,
        "test_f1": test - 0.02,
        "test_kappa": test - 0.05,
        "test_per_class_acc": [test] * 3,
        "test_confusion": [[4, 1, 0], [0, 5, 0], [1, 0, 4]],
        "class_names": CLASSES,
        "params": PARAMS[model],
        "trainable_params": PARAMS[model],
        "macs": MACS[model],
        "train_time_s": 10.0 + 3 * seed + (5 if transfer == "finetune" else 0) + 20 * lift,
        "node": "node-1",
        "split_hash": "abc123",
        "start_time": T0 + timedelta(minutes=i),
        "end_time": T0 + timedelta(minutes=i + 3),
    }
    row.update(kw)
    if row["status"] != "completed":
        for k in ("test_acc", "test_f1", "test_kappa", "test_per_class_acc", "test_confusion"):
            row[k] = None
    return row


def epoch_rows(row: dict) -> list[dict]:
    """Epoch rows rising to the trial's best validation accuracy at ``best_epoch``."""
    best = row["best_val_acc"] if row["best_val_acc"] is not None else 0.3
    n = row["epochs_run"]
    out = []
    for e in range(1, n + 1):
        val = best - 0.04 * abs(min(row["best_epoch"], n) - e)
        out.append(
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "train_acc": val + 0.05,
                "val_loss": 1.8 / e + 0.2,
                "val_acc": val,
                "val_f1": val - 0.01,
                "val_kappa": val - 0.03,
                "lr": 0.001,
                "epoch_time_s": 2.5,
                "images_per_s": 100.0,
                "time": T0,
            }
        )
    return out


def hand_rows() -> list[dict]:
    """tiny_cnn: the full grid, all completed; resnet18: scratch stopped early, one failure;
    mobilenet_v2: two trials, both stopped early."""
    rows, i = [], 0
    for model in ("tiny_cnn", "resnet18"):
        for transfer in ("scratch", "frozen", "finetune"):
            for aug in ("none", "paper"):
                for seed in (0, 1):
                    kw: dict = {}
                    if model == "resnet18" and transfer == "scratch":
                        kw = {"status": "early-stopped", "epochs_run": 1 + seed, "best_epoch": 1}
                    if (model, transfer, aug, seed) == ("resnet18", "finetune", "paper", 1):
                        kw = {"status": "error", "error": "CUDA OOM", "epochs_run": 1}
                        kw["best_epoch"] = 1
                    rows.append(trial_row(f"t-{i:02d}", model, transfer, aug, seed, **kw))
                    i += 1
    for seed in (0, 1):
        rows.append(
            trial_row(
                f"t-{i:02d}",
                "mobilenet_v2",
                "finetune",
                "none",
                seed,
                status="early-stopped",
                epochs_run=2,
                best_epoch=2,
            )
        )
        i += 1
    return rows


def write_experiment(
    root: Path, name: str, rows: list[dict], spec: dict | None, running: dict | None = None
) -> Path:
    """Write trials / epochs with the real ResultsStore, plus spec.yaml and a manifest."""
    store = ResultsStore(root, name)
    for row in rows:
        store.write_trial(row)
        store.write_epochs(row["trial_id"], epoch_rows(row))
    if running is not None:  # a trial still training: epoch rows but no trial row
        store.write_epochs(running["trial_id"], epoch_rows(running))
    if spec is not None:
        store.write_text("spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    manifest = pd.DataFrame(
        [
            {"file": f"{c}/{c}_{i:03d}.jpg", "label": k, "class": c, "split": split}
            for k, c in enumerate(CLASSES)
            for i, split in zip(range(1, 5), ("train", "train", "val", "test"), strict=True)
        ]
    )
    store.write_text("manifest.csv", manifest.to_csv(index=False))
    return Path(store.dir)


RUNNING = {
    "trial_id": "t-run",
    "best_val_acc": 0.9,
    "best_epoch": 3,
    "epochs_run": 3,
}


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    """The hand-built experiment: completed, early-stopped, failed and running trials."""
    base = tmp_path_factory.mktemp("hand")
    data = make_nwpu(base / "nwpu", classes=CLASSES, per_class=4, size=32)
    return write_experiment(base / "results", "hand", hand_rows(), spec_dict(data), RUNNING)


def paper4_rows() -> list[dict]:
    """Paper 1's Table 4 grid (lr x (epochs, batch size)), two seeds, tiny_cnn."""
    table4 = {
        (0.03, 10, 256): 0.9611,
        (0.03, 12, 128): 0.9601,
        (0.03, 8, 64): 0.9322,
        (0.10, 10, 256): 0.9545,
        (0.10, 12, 128): 0.9544,
        (0.10, 8, 64): 0.9301,
        (0.07, 10, 256): 0.9518,
        (0.07, 12, 128): 0.9464,
        (0.07, 8, 64): 0.9322,
    }
    rows = []
    for i, ((lr, epochs, bs), acc) in enumerate(table4.items()):
        for seed in (0, 1):
            row = trial_row(f"p-{2 * i + seed:02d}", "tiny_cnn", "finetune", "none", seed)
            delta = 0.004 * (1 if seed else -1)
            row.update(
                lr=lr,
                epochs=epochs,
                batch_size=bs,
                epochs_run=epochs,
                best_epoch=epochs,
                test_acc=acc + delta,
                best_val_acc=acc - 0.01 + delta / 2 + 0.001 * i,
            )
            rows.append(row)
    return rows


def paper4_spec(root: Path | str) -> dict:
    return spec_dict(
        root,
        "paper4",
        factors={"model": "tiny_cnn", "transfer": "finetune", "weights": "imagenet"},
        hyperparameters={"lr": [0.03, 0.1, 0.07], "epochs": [8, 10, 12], "batch_size": [64, 256]},
        scheduler={"type": "none"},
    )


@pytest.fixture(scope="module")
def paper4(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("paper4")
    return write_experiment(base / "results", "paper4", paper4_rows(), paper4_spec("/nowhere"))


# ------------------------------------------------------------------ expected, with pandas
def expected_architecture(trials: pd.DataFrame) -> dict[str, dict]:
    """Each model's configuration with the best mean validation accuracy among trials with
    test metrics, and that configuration's test statistics."""
    out = {}
    done = trials[trials["test_acc"].notna()]
    for model, group in done.groupby("model"):
        means = group.groupby(["transfer", "augmentation"])["best_val_acc"].mean()
        transfer, aug = means.idxmax()
        sel = group[(group["transfer"] == transfer) & (group["augmentation"] == aug)]
        out[model] = {
            "transfer": transfer,
            "augmentation": aug,
            "n": len(sel),
            **{f"{m}_mean": sel[m].mean() for m in ("test_acc", "test_f1", "test_kappa")},
            **{f"{m}_std": sel[m].std(ddof=1) for m in ("test_acc", "test_f1", "test_kappa")},
            "val_mean": sel["best_val_acc"].mean(),
            "train_time_s_mean": sel["train_time_s"].mean(),
            "params": sel["params"].astype(float).mean(),
        }
    return out


def same(a: float, b: float) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------------------------------------- tables
def test_architecture_table_matches_pandas(hand):
    trials, epochs = load(hand)
    table = T.architecture_table(T.with_running(trials, epochs))
    expected = expected_architecture(trials)
    assert expected["tiny_cnn"]["transfer"] == "finetune"  # best on validation, not test
    assert list(table["model"]) == ["resnet18", "tiny_cnn", "mobilenet_v2"]
    for model, exp in expected.items():
        row = table.set_index("model").loc[model]
        assert f"transfer={exp['transfer']}" in row["config"]
        assert f"augmentation={exp['augmentation']}" in row["config"]
        assert row["n"] == exp["n"]
        for key in ("test_acc_mean", "test_acc_std", "test_f1_mean", "test_kappa_std"):
            assert same(row[key], exp[key]), (model, key)
        for key in ("val_mean", "train_time_s_mean", "params"):
            assert same(row[key], exp[key]), (model, key)
    # resnet18's best validation configuration lost a seed to an error: mean of one, no std
    assert table.set_index("model").loc["resnet18", "n"] == 1
    assert pd.isna(table.set_index("model").loc["resnet18", "test_acc_std"])
    counts = trials.groupby("model")["status"].value_counts().unstack(fill_value=0)
    mobile = table.set_index("model").loc["mobilenet_v2"]
    assert mobile["n"] == 0 and pd.isna(mobile["test_acc_mean"])
    assert mobile["trials"] == 2 and mobile["completed"] == counts.loc["mobilenet_v2"].get(
        "completed", 0
    )
    assert mobile["params"] == PARAMS["mobilenet_v2"]  # model facts shown even without results
    best = T.mark_best(table, T.ARCHITECTURE_BEST).set_index(table["model"])
    assert best.loc["resnet18", "test_acc_mean"] and not best.loc["tiny_cnn", "test_acc_mean"]
    assert best.loc["tiny_cnn", "params"] and best.loc["tiny_cnn", "macs"]
    assert best.loc["tiny_cnn", "train_time_s_mean"]
    assert not best.loc["mobilenet_v2"].any()  # NaN is never best


def test_mark_best_ties_and_direction():
    table = pd.DataFrame({"a": [0.5, 0.7, 0.7, np.nan], "b": [3.0, 1.0, 2.0, 1.0]})
    best = T.mark_best(table, {"a": "max", "b": "min", "missing": "max"})
    assert list(best["a"]) == [False, True, True, False]
    assert list(best["b"]) == [False, True, False, True]
    assert "missing" not in best


def test_factor_tables_match_pandas(hand):
    trials, epochs = load(hand)
    for metric in ("test_acc", "best_val_acc"):
        table = T.factor_tables(T.with_running(trials, epochs), metric=metric).set_index("model")
        assert sorted(table.index) == ["mobilenet_v2", "resnet18", "tiny_cnn"]
        for model, g in trials.groupby("model"):
            cells = {
                "scratch": g[(g["transfer"] == "scratch") & (g["augmentation"] == "none")],
                "scratch + paper": g[(g["transfer"] == "scratch") & (g["augmentation"] == "paper")],
                "frozen": g[g["transfer"] == "frozen"],
                "finetune": g[g["transfer"] == "finetune"],
            }
            for cond, cell in cells.items():
                assert same(table.loc[model, f"{cond}_mean"], cell[metric].mean())
                assert same(table.loc[model, f"{cond}_std"], cell[metric].std(ddof=1))
                assert table.loc[model, f"{cond}_n"] == cell[metric].notna().sum()
                assert table.loc[model, f"{cond}_trials"] == len(cell)
            base = cells["scratch"][metric].mean()
            for cond in ("scratch + paper", "frozen", "finetune"):
                diff = 100 * (cells[cond][metric].mean() - base)
                assert same(table.loc[model, f"d_{cond}_pp"], diff), (model, cond)
    tiny = T.factor_tables(trials).set_index("model").loc["tiny_cnn"]
    # the paper's story on the hand-built numbers: every factor helps tiny_cnn
    assert tiny["d_scratch + paper_pp"] == pytest.approx(5.0)
    assert tiny["d_frozen_pp"] == pytest.approx(100 * ((0.60 + 0.66) / 2 - 0.50))
    resnet = T.factor_tables(trials).set_index("model").loc["resnet18"]
    assert resnet["scratch_n"] == 0 and resnet["scratch_trials"] == 2  # stopped early: n/a
    assert pd.isna(resnet["d_frozen_pp"])


def test_factor_conditions_defaults_and_absent_factors():
    trials = pd.DataFrame(
        {
            "model": ["a", "a", "a"],
            "status": ["completed"] * 3,
            "transfer": [None, "scratch", "scratch"],
            "augmentation": [None, None, "color"],
            "test_acc": [0.9, 0.5, 0.6],
        }
    )
    names = [name for name, _ in T.factor_conditions(trials)]
    assert names == ["scratch", "scratch + color", "finetune"]  # no frozen trial: no column
    table = T.factor_tables(trials).set_index("model")
    assert table.loc["a", "finetune_mean"] == 0.9  # missing transfer: TrialConfig's default
    assert table.loc["a", "d_scratch + color_pp"] == pytest.approx(10.0)


def test_hyperparameter_table_matches_pandas(paper4):
    trials, _ = load(paper4)
    table = T.hyperparameter_table(trials)
    assert list(table.columns[:3]) == ["lr", "epochs", "batch_size"]
    grouped = trials.groupby(["lr", "epochs", "batch_size"])
    expected = pd.DataFrame(
        {
            "trials": grouped.size(),
            "test_mean": grouped["test_acc"].mean(),
            "test_std": grouped["test_acc"].std(ddof=1),
            "val_mean": grouped["best_val_acc"].mean(),
            "val_std": grouped["best_val_acc"].std(ddof=1),
        }
    ).sort_values("val_mean", ascending=False)
    assert len(table) == 9
    for (_, row), (key, exp) in zip(table.iterrows(), expected.iterrows(), strict=True):
        assert (row["lr"], row["epochs"], row["batch_size"]) == key
        assert row["trials"] == exp["trials"] == 2
        assert row["test_acc_mean"] == pytest.approx(exp["test_mean"])
        assert row["test_acc_std"] == pytest.approx(exp["test_std"])
        assert row["val_mean"] == pytest.approx(exp["val_mean"])
        assert row["val_std"] == pytest.approx(exp["val_std"])
    # paper 1's Table 4 best setting: lr 0.03, 10 epochs, batch size 256
    best = T.mark_best(table, {"test_acc_mean": "max"})
    top = table[best["test_acc_mean"]].iloc[0]
    assert (top["lr"], top["epochs"], top["batch_size"]) == (0.03, 10, 256)
    assert top["test_acc_mean"] == pytest.approx(0.9611)
    # several models: the model is a column
    hand_cols = T.hyperparameter_columns(pd.concat([trials.assign(model="x"), trials]))
    assert hand_cols[:4] == ["model", "lr", "epochs", "batch_size"]


def test_importances_from_completed_trials(paper4, hand):
    trials, _ = load(paper4)
    spec = validate(paper4_spec("/nowhere"), check_data=False)
    imp = T.importances(trials, spec.params)
    assert set(imp["parameter"]) == {"lr", "epochs", "batch_size"}
    evaluators = [c for c in imp.columns if c != "parameter"]
    try:
        import sklearn  # noqa: F401

        assert evaluators == ["fanova", "mdi"]
    except ImportError:
        assert evaluators == ["ped_anova"]
    for e in evaluators:
        assert imp[e].sum() == pytest.approx(1.0)
        assert imp[e].between(0, 1).all()
    assert imp.attrs["trials"] == (trials["status"] == "completed").sum()
    # partial results: only completed trials count, early-stopped and failed ones do not
    few = trials.copy()
    few.loc[few.index[1:], "status"] = "early-stopped"
    with pytest.raises(T.NotEnoughData, match="at least 2 completed trials"):
        T.importances(few, spec.params)
    same_cfg = trials[(trials["lr"] == 0.03) & (trials["epochs"] == 10)]
    with pytest.raises(T.NotEnoughData, match="varies"):
        T.importances(same_cfg, spec.params)
    flat = trials.assign(best_val_acc=0.5)
    with pytest.raises(T.NotEnoughData, match="same best_val_acc"):
        T.importances(flat, spec.params)
    # a grid where scratch trials record weights 'none' and the ranges widen to the data
    htrials, _ = load(hand)
    hspec = validate(yaml.safe_load((hand / "spec.yaml").read_text()), check_data=False)
    himp = T.importances(htrials, hspec.params)
    assert set(himp["parameter"]) == {"model", "transfer", "augmentation"}


def test_importances_without_scikit_learn_use_ped_anova(paper4, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)  # import sklearn fails
    trials, _ = load(paper4)
    spec = validate(paper4_spec("/nowhere"), check_data=False)
    imp = T.importances(trials, spec.params)
    assert list(imp.columns) == ["parameter", "ped_anova"]
    assert imp["ped_anova"].sum() == pytest.approx(1.0)
    page = build_report(paper4, tmp_path / "out", figures=False).read_text()
    assert "scikit-learn is not installed" in page


def test_importance_distributions_from_the_spec():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    raw = spec_dict(
        "/nowhere",
        search={"algorithm": "optuna", "num_samples": 4, "metric": "val_acc"},
        hyperparameters={
            "lr": {"loguniform": [1e-4, 1e-2]},
            "epochs": {"int": [2, 8]},
            "batch_size": [16, 32],
        },
    )
    params = {p.name: p for p in validate(raw, check_data=False).params}
    lr = T._distribution(params["lr"], [0.02])
    assert isinstance(lr, FloatDistribution) and lr.log and lr.high == 0.02
    assert isinstance(T._distribution(params["epochs"], [4]), IntDistribution)
    transfer = T._distribution(params["transfer"], ["scratch"])
    assert isinstance(transfer, CategoricalDistribution)
    assert T._plain(np.int64(32), params["batch_size"]) == 32


def test_asha_rungs_count_trials_reaching_each_milestone(hand):
    trials, epochs = load(hand)
    assert T.asha_milestones(1, 2, 4) == [1, 2, 4]
    assert T.asha_milestones(2, 2, 6) == [2, 4]
    assert T.asha_milestones(1, 3, 10) == [1, 3, 9]
    with pytest.raises(ValueError, match="reduction_factor > 1"):
        T.asha_milestones(1, 1, 4)
    table = T.asha_rungs(T.with_running(trials, epochs), 1, 2, 4)
    ran = pd.concat(
        [trials["epochs_run"].astype(float), pd.Series([RUNNING["epochs_run"]], dtype=float)]
    )
    assert list(table["rung"]) == ["start", "rung 1", "rung 2", "rung 3"]
    assert list(table["epochs"]) == [0, 1, 2, 4]
    assert list(table["trials"]) == [len(ran)] + [int((ran >= m).sum()) for m in (1, 2, 4)]
    assert table["fraction"].iloc[-1] == pytest.approx((ran >= 4).sum() / len(ran))
    extra = T.asha_rungs(trials, 2, 2, 6)
    assert list(extra["rung"]) == ["start", "rung 1", "rung 2", "max"]
    assert extra["trials"].iloc[-1] == (trials["epochs_run"] >= 6).sum()


def test_running_trials_and_status_counts(hand):
    trials, epochs = load(hand)
    full = T.with_running(trials, epochs)
    assert len(full) == len(trials) + 1
    run = full[full["trial_id"] == "t-run"].iloc[0]
    assert run["status"] == "running" and run["epochs_run"] == 3
    assert run["best_val_acc"] == pytest.approx(epochs[epochs["trial_id"] == "t-run"].val_acc.max())
    counts = T.status_counts(full).set_index("status")
    for status in ("completed", "early-stopped", "error"):
        assert counts.loc[status, "trials"] == (trials["status"] == status).sum()
    assert counts.loc["running", "trials"] == 1
    assert counts.loc["total", "trials"] == len(full)
    assert counts.loc["total", "with_test"] == trials["test_acc"].notna().sum()
    assert counts.loc["early-stopped", "with_test"] == 0
    top = T.top_trials(full, 5)
    assert top.iloc[0]["trial_id"] == "t-run"  # the running trial leads on validation so far
    assert list(top["best_val_acc"]) == sorted(full["best_val_acc"].dropna(), reverse=True)[:5]


def test_pareto_front():
    cost = [1, 2, 3, 4, 2, np.nan]
    score = [0.5, 0.7, 0.6, 0.9, 0.7, 1.0]
    assert list(T.pareto_front(cost, score)) == [True, True, False, True, True, False]


def test_comparison_of_experiments(tmp_path, hand):
    rows = [r for r in hand_rows() if r["model"] == "tiny_cnn"]
    for r in rows:
        r["test_acc"] = r["test_acc"] - 0.1
    other = write_experiment(tmp_path, "other", rows, spec_dict("/nowhere", "other"))
    by_name = {"hand": load(hand)[0], "other": load(other)[0]}
    table = T.comparison_table(by_name).set_index("model")
    for name, trials in by_name.items():
        for model, exp in expected_architecture(trials).items():
            assert same(table.loc[model, f"{name}_mean"], exp["test_acc_mean"])
            assert same(table.loc[model, f"{name}_std"], exp["test_acc_std"])
            assert table.loc[model, f"{name}_n"] == exp["n"]
    assert pd.isna(table.loc["resnet18", "other_mean"]) and table.loc["resnet18", "other_n"] == 0
    assert table.loc["tiny_cnn", "mean"] == pytest.approx(
        (table.loc["tiny_cnn", "hand_mean"] + table.loc["tiny_cnn", "other_mean"]) / 2
    )
    summary = T.experiment_summary(by_name).set_index("experiment")
    assert summary.loc["hand", "best_model"] == "resnet18"
    assert summary.loc["other", "total"] == len(rows) and summary.loc["other", "classes"] == 3
    assert summary.loc["other", "test_acc"] == pytest.approx(
        expected_architecture(by_name["other"])["tiny_cnn"]["test_acc_mean"]
    )


# ------------------------------------------------------------------------------ the report
def pngs(page: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(data)))
        for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    ]


def assert_not_blank(image: Image.Image) -> None:
    arr = np.asarray(image.convert("L"), dtype=float)
    assert image.width > 50 and image.height > 50
    assert arr.std() > 5, "image looks blank"


def test_report_on_partial_results(hand, tmp_path):
    out = tmp_path / "out"
    page_path = build_report(hand, out, figures=False)
    assert page_path == out / "report.html"
    page = page_path.read_text()
    markdown = (out / "report.md").read_text()
    trials, _ = load(hand)
    assert "6 stopped early by the scheduler, 1 failed, 1 still running" in page
    assert "still running" in page and "n/a" in page
    exp = expected_architecture(trials)["tiny_cnn"]
    cell = f"{100 * exp['test_acc_mean']:.2f} ± {100 * exp['test_acc_std']:.2f}"
    assert cell in page and cell in markdown
    frozen = trials[(trials["model"] == "tiny_cnn") & (trials["transfer"] == "frozen")]
    cell = f"{100 * frozen.test_acc.mean():.2f} ± {100 * frozen.test_acc.std():.2f} (n=4)"
    assert cell in page and cell in markdown
    assert "<strong>" in page and "**" in markdown
    assert "abc123 (identical in all 26 trials that record it)" in page
    assert "Versions (at report time)" in page and "optuna" in page
    assert "Skipped (--no-figures)" in page
    # the protocol, from spec.yaml, the manifest and the trials
    for text in (
        "train 0.5, val 0.25, test 0.25; split seed 0",
        "train 6, val 3, test 3 (total 12; manifest.csv)",
        "32 px",
        "3: airplane, bridge, palace",
        "rungs at epochs [1, 2, 4]",
        "grid; seeds 2; metric val_acc (max)",
    ):
        assert text in page and text in markdown, text
    assert not re.search(r'(?:src|href)="(?!data:image/png;base64,|#)', page)  # self-contained
    images = pngs(page)
    assert len(images) >= 5
    for image in images:
        assert_not_blank(image)
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert len(figures) == len(images) and all(f"figures/{f}" in markdown for f in figures)
    # atomic: nothing temporary left, and a second run replaces the first in place
    build_report(hand, out, figures=False)
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.md"]


def test_report_figures_from_dataset_and_checkpoint(tmp_path):
    data = make_nwpu(tmp_path / "nwpu", classes=CLASSES, per_class=4, size=32)
    model = create_model("tiny_cnn", len(CLASSES), transfer="scratch")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save(
        {"model": model.state_dict(), "model_name": "tiny_cnn", "normalization": [[0.5] * 3] * 2},
        ckpt / "best.pt",
    )
    rows = [
        trial_row("f-0", "tiny_cnn", "finetune", "paper", 0, checkpoint=str(ckpt)),
        trial_row("f-1", "tiny_cnn", "scratch", "none", 0, checkpoint=str(tmp_path / "gone")),
    ]
    exp = write_experiment(tmp_path / "results", "figs", rows, spec_dict(data, "figs"))
    page = build_report(exp, tmp_path / "out").read_text()
    for preset in ("paper", "color", "aerial"):
        assert f"Augmentation preset &#x27;{preset}&#x27;" in page
    assert "Early and late feature maps" in page and "Not drawn" not in page
    for image in pngs(page):
        assert_not_blank(image)
    names = sorted(p.name for p in (tmp_path / "out" / "figures").iterdir())
    assert "figs-feature-maps.png" in names and "figs-augment-color.png" in names
    # the hooks: first and last Conv2d of the backbone
    convs = conv_layers(model.backbone)
    maps = feature_maps(model.backbone, torch.zeros(3, 32, 32), [convs[0][0], convs[-1][0]])
    assert tuple(maps[convs[0][0]].shape) == (16, 16, 16)
    assert tuple(maps[convs[-1][0]].shape) == (128, 2, 2)
    with pytest.raises(FigureUnavailable, match="does not exist"):
        checkpoint_file(str(tmp_path / "gone"))


def test_report_says_why_figures_are_missing(tmp_path):
    rows = [trial_row("m-0", "tiny_cnn", "finetune", "none", 0, checkpoint="/gone")]
    exp = write_experiment(tmp_path / "results", "nodata", rows, spec_dict("/no/such/root"))
    page = build_report(exp, tmp_path / "out").read_text()
    assert "Not drawn: the dataset root &#x27;/no/such/root&#x27; was not found" in page
    data = make_nwpu(tmp_path / "nwpu", classes=CLASSES, per_class=4, size=32)
    exp = write_experiment(tmp_path / "results", "nockpt", rows, spec_dict(data, "nockpt"))
    page = build_report(exp, tmp_path / "out2").read_text()
    assert "&#x27;/gone/best.pt&#x27; does not exist" in page
    stopped = [trial_row("s-0", "tiny_cnn", "finetune", "none", 0, status="early-stopped")]
    exp = write_experiment(tmp_path / "results", "stopped", stopped, spec_dict(data, "stopped"))
    page = build_report(exp, tmp_path / "out3").read_text()
    assert "no completed trial yet" in page
    assert "Not computed: parameter importance needs at least 2 completed trials" in page


def test_cli_results_root_compares_experiments(tmp_path, hand, capsys):
    root = tmp_path / "results"
    shutil.copytree(hand, root / "hand")
    write_experiment(root, "paper4", paper4_rows(), paper4_spec("/nowhere"))
    (root / "_pretrained").mkdir()  # not an experiment: skipped
    assert [p.name for p in find_experiments(root)] == ["hand", "paper4"]
    assert main([str(root), "--no-figures"]) == 0
    page = (root / "report" / "report.html").read_text()
    assert "Comparison of experiments" in page and "Experiment paper4" in page
    assert "report.html" in capsys.readouterr().out
    # both experiments' own sections, with unique anchors
    anchors = re.findall(r'id="([^"]+)"', page)
    assert len(anchors) == len(set(anchors))
    assert main([str(hand), str(root / "paper4"), "--out", str(tmp_path / "two")]) == 0
    assert "tuner report: 2 experiments" in (tmp_path / "two" / "report.html").read_text()


def test_cli_exit_2_without_results(tmp_path, capsys):
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    assert "no results under" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()


def test_report_while_only_running_trials_exist(tmp_path):
    exp = write_experiment(tmp_path, "starting", [], spec_dict("/nowhere", "starting"), RUNNING)
    page = build_report(exp, tmp_path / "out", figures=False).read_text()
    assert "1 trials: 0 completed" in page and "1 still running" in page
    assert "No finished trial yet." in page
    assert "trial t-run [running]" not in page  # curves are a PNG; the rung table is text
    assert re.search(r"rung 3</td><td>4</td><td>0</td>", page)
    assert re.search(r"rung 2</td><td>2</td><td>1</td>", page)


def test_experiment_without_spec_still_reports(tmp_path):
    rows = [trial_row(f"n-{i}", "tiny_cnn", "finetune", "none", i % 2) for i in range(3)]
    exp = write_experiment(tmp_path, "nospec", rows, None)
    loaded = load_experiment(exp)
    assert loaded.spec is None and any("no spec.yaml" in n for n in loaded.notes)
    page = build_report(exp, tmp_path / "out", figures=False).read_text()
    assert "Needs a valid spec.yaml" in page and "1. Architecture ranking" in page


# ---------------------------------------------------------------------- headless Chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(hand, tmp_path):
    page = build_report(hand, tmp_path / "out", figures=False)
    flags = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<table") >= 6
    assert dom.count('<img src="data:image/png;base64,') >= 5
    assert "1. Architecture ranking" in dom and "6. Protocol" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot)
    assert image.size == (1200, 3000)
    assert_not_blank(image)


# --------------------------------------------------------------------- a tiny real search
@pytest.mark.slow
def test_report_from_a_tiny_real_search(tmp_path, monkeypatch):
    from tuner.run import main as run_main

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNER_DATA", str(tmp_path / "data"))
    spec = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"
    status = run_main(
        [
            str(spec),
            "--results",
            str(tmp_path / "results"),
            "--laptop",
            "--num-cpus",
            "2",
            "--status-every",
            "60",
            "--set",
            "dataset.synthetic.per_class=12",
            "--set",
            "hyperparameters.epochs=2",
            "--set",
            "factors.model=[tiny_cnn]",
            "--set",
            "factors.augmentation=[none]",
            "--set",
            "scheduler.grace_period=1",
            "--set",
            "pretrain.epochs=1",
            "--set",
            "pretrain.dataset.synthetic.per_class=12",
        ]
    )
    assert status == 0
    exp = tmp_path / "results" / "demo"
    trials, _ = load(exp)
    assert len(trials) == 3 and trials["test_acc"].notna().any()
    assert main([str(exp)]) == 0
    page = (exp / "report" / "report.html").read_text()
    table = T.architecture_table(trials).set_index("model")
    done = trials[trials["test_acc"].notna()]
    means = done.groupby("transfer")["best_val_acc"].mean()
    best = done[done["transfer"] == means.idxmax()]
    assert table.loc["tiny_cnn", "test_acc_mean"] == pytest.approx(best["test_acc"].mean())
    assert f"{100 * best['test_acc'].mean():.2f}" in page
    assert "Early and late feature maps" in page and "Confusion matrix" in page
    assert "Augmentation preset &#x27;aerial&#x27;" in page
    assert trials["split_hash"].iloc[0] in page
    for image in pngs(page):
        assert_not_blank(image)
