"""The ranking sections: architectures (paper 2's Table 2), training factors (paper 1's
Tables 1-3), hyperparameters (paper 1's Table 4) with Optuna's importances."""

from __future__ import annotations

import pandas as pd

from tuner.report import html as H
from tuner.report import plots, tables
from tuner.report.experiment import LABEL, Experiment, slug_of
from tuner.report.html import Image, Section, Table, Text


def architecture_section(exp: Experiment) -> Section:
    """Section 1 (paper 2's Table 2): each model at its best configuration, by validation."""
    metric = exp.metric
    table = tables.architecture_table(exp.trials, metric=metric)
    sec = Section("1. Architecture ranking")
    if table.empty:
        return sec.add(Text("No trial has a model yet.", "note"))
    best = tables.mark_best(table, tables.ARCHITECTURE_BEST)
    shown = pd.DataFrame(
        {
            "#": range(1, len(table) + 1),
            "model": table["model"],
            "configuration (best on validation)": table["config"],
            "seeds": table["n"],
            "Accuracy (%)": [
                H.mean_std(m, s)
                for m, s in zip(table["test_acc_mean"], table["test_acc_std"], strict=True)
            ],
            "F1-score (%)": [
                H.mean_std(m, s)
                for m, s in zip(table["test_f1_mean"], table["test_f1_std"], strict=True)
            ],
            "Kappa (%)": [
                H.mean_std(m, s)
                for m, s in zip(table["test_kappa_mean"], table["test_kappa_std"], strict=True)
            ],
            f"{LABEL.get(metric, metric)} (%)": [
                H.mean_std(m, s) for m, s in zip(table["val_mean"], table["val_std"], strict=True)
            ],
            "Params": [H.si(v) for v in table["params"]],
            "MACs": [H.si(v) for v in table["macs"]],
            "train time (s)": [
                H.seconds(m, s)
                for m, s in zip(table["train_time_s_mean"], table["train_time_s_std"], strict=True)
            ],
            "trials (completed/all)": [
                f"{c}/{t}" for c, t in zip(table["completed"], table["trials"], strict=True)
            ],
        }
    )
    rename = {
        "test_acc_mean": "Accuracy (%)",
        "test_f1_mean": "F1-score (%)",
        "test_kappa_mean": "Kappa (%)",
        "val_mean": f"{LABEL.get(metric, metric)} (%)",
        "params": "Params",
        "macs": "MACs",
        "train_time_s_mean": "train time (s)",
    }
    return sec.add(
        Text(
            "Like paper 2's Table 2: test accuracy, macro F1 and Cohen's kappa of the "
            "best-validation checkpoint, with parameters and MACs per image. Each model is "
            f"shown at the configuration with the best mean {LABEL.get(metric, metric)} "
            "(chosen on validation, never on test); mean ± std over its seeds (std needs two). "
            "Best per column in bold (max for accuracy, F1, kappa; min for params, MACs, time); "
            "rows ordered by the validation metric."
        ),
        Table(shown, bold=best.rename(columns=rename)),
    )


def _factor_display(table: pd.DataFrame) -> pd.DataFrame:
    """The factor table with ``mean ± std`` cells, as the section shows it."""
    conditions = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    shown = pd.DataFrame({"model": table["model"]})
    for cond in conditions:
        cells = []
        for m, s, n, t in zip(
            table[f"{cond}_mean"],
            table[f"{cond}_std"],
            table[f"{cond}_n"],
            table[f"{cond}_trials"],
            strict=True,
        ):
            count = f"n={n}" if n == t else f"n={n} of {t}"
            cells.append(f"{H.mean_std(m, s)} ({count})" if t else "—")
        shown[cond] = cells
    for cond in conditions:
        if f"d_{cond}_pp" in table.columns:
            name = cond.removeprefix("scratch + ")
            shown[f"Δ {name} − scratch (pp)"] = [H.signed(v) for v in table[f"d_{cond}_pp"]]
    return shown


def factors_section(exp: Experiment) -> Section:
    """Section 2 (paper 1's Tables 1-3): accuracy per training factor (transfer, augmentation)."""
    sec = Section("2. Training factors: scratch, augmentation, transfer")
    sec.add(
        Text(
            "Like paper 1's Tables 1–3: accuracy of each model trained from scratch without "
            "augmentation (Table 1), from scratch with each augmentation preset (Table 2), and "
            "from pretrained weights with a frozen or a fine-tuned backbone (Table 3). Each "
            "cell is the mean ± std over every other factor (augmentation, weights, "
            "hyperparameters) and seed in that condition, with n the trials that have the "
            "metric (of all trials in the cell); Δ columns are the difference to scratch in "
            "percentage points."
        )
    )
    plotted = False
    for metric in ("test_acc", exp.metric):
        table = tables.factor_tables(exp.trials, metric=metric)
        if table.empty or len(table.columns) <= 1:
            return sec.add(Text("No finished trial yet.", "note"))
        label = LABEL.get(metric, metric)
        caption = f"{label} (%)"
        if metric != "test_acc":
            caption += (
                ": every finished trial, including those stopped early (their best "
                "validation accuracy over fewer epochs)"
            )
        sec.add(Table(_factor_display(table), caption=caption))
        has_values = table[[c for c in table.columns if c.endswith("_mean")]].notna().any()
        if not plotted and has_values.any():
            sec.add(
                Image(
                    plots.factor_png(table, ylabel=f"{label} (%)"),
                    f"{label} per model and training factor (mean ± std).",
                    f"{slug_of(exp)}-factors",
                )
            )
            plotted = True
    return sec


def hyperparameters_section(exp: Experiment) -> Section:
    """Section 3 (paper 1's Table 4): accuracy per hyperparameter setting; importances."""
    sec = Section("3. Hyperparameters")
    metric = exp.metric
    table = tables.hyperparameter_table(exp.trials, val_metric=metric)
    columns = [c for c in table.columns if c not in ("trials", "n") and "_mean" not in c]
    columns = [c for c in columns if not c.endswith("_std")]
    sec.add(
        Text(
            "Like paper 1's Table 4: accuracy per setting of the learning rate, epochs and "
            "batch size (and any other hyperparameter that varies; the model too when several "
            "ran), pooled over the remaining factors and seeds; rows ordered by "
            f"{LABEL.get(metric, metric)}, best in bold."
        )
    )
    if table.empty:
        sec.add(Text("No finished trial yet.", "note"))
    else:
        shown = pd.DataFrame({c: [tables.value_text(v) for v in table[c]] for c in columns})
        shown["trials"] = table["trials"]
        shown["test accuracy (%)"] = [
            f"{H.mean_std(m, s)} (n={n})"
            for m, s, n in zip(
                table["test_acc_mean"], table["test_acc_std"], table["n"], strict=True
            )
        ]
        val_label = f"{LABEL.get(metric, metric)} (%)"
        shown[val_label] = [
            H.mean_std(m, s) for m, s in zip(table["val_mean"], table["val_std"], strict=True)
        ]
        best = tables.mark_best(table, {"test_acc_mean": "max", "val_mean": "max"})
        best = best.rename(columns={"test_acc_mean": "test accuracy (%)", "val_mean": val_label})
        sec.add(Table(shown, bold=best))
    sub = Section("Which hyperparameters mattered", level=3)
    sec.add(sub)
    if exp.spec is None:
        return sec.add(Text("Needs a valid spec.yaml (for the search space).", "note"))
    try:
        imp = tables.importances(exp.trials, exp.spec.params, metric=metric)
    except tables.NotEnoughData as err:
        sub.add(Text(f"Not computed: {err}.", "note"))
        return sec
    evaluators = [c for c in imp.columns if c != "parameter"]
    names = {
        "fanova": "fANOVA (Optuna's default)",
        "mdi": "mean decrease impurity",
        "ped_anova": "PED-ANOVA",
    }
    used = ", ".join(names.get(e, e) for e in evaluators)
    note = (
        f"Optuna's importance evaluators ({used}) on an in-memory study of the "
        f"{imp.attrs['trials']} completed trials, with the spec's search space as "
        f"distributions and {LABEL.get(metric, metric)} as the objective (test metrics are "
        "never used). Importances sum to 1 per evaluator; with few trials they are rough."
    )
    if "ped_anova" in evaluators:
        note += " scikit-learn is not installed, so fANOVA and MDI were replaced by PED-ANOVA."
    if imp.attrs.get("skipped"):
        note += f" Conditional parameters not set in every trial: {imp.attrs['skipped']}."
    shown = imp.copy()
    for e in evaluators:
        shown[e] = [f"{v:.3f}" if H.finite(v) else H.NA for v in imp[e]]
    shown = shown.rename(columns={e: names.get(e, e) for e in evaluators})
    sub.add(Text(note), Table(shown))
    sub.add(
        Image(
            plots.importance_png(imp, names),
            "Parameter importances.",
            f"{slug_of(exp)}-importance",
        )
    )
    return sec


def best_trial(trials: pd.DataFrame, metric: str = "best_val_acc") -> pd.Series | None:
    """The completed trial with the best validation ``metric`` (ties: F1, kappa, id)."""
    done = trials[(trials["status"] == "completed") & trials[metric].notna()]
    if done.empty:
        return None
    keys = [k for k in dict.fromkeys([metric, "best_val_f1", "best_val_kappa"]) if k in done]
    ordered = done.sort_values("trial_id").sort_values(
        keys, ascending=False, na_position="last", kind="stable"
    )
    return ordered.iloc[0]
