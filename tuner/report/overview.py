"""The overview of an experiment (trial counts, failures) and the comparison of several."""

from __future__ import annotations

from typing import Any

import pandas as pd

from tuner.report import html as H
from tuner.report import plots, tables
from tuner.report.experiment import LABEL, Experiment
from tuner.report.html import Image, Section, Table, Text
from tuner.results import COMPLETED, EARLY_STOPPED, ERROR


def label_columns(trials: pd.DataFrame) -> list[str]:
    """The parameter columns that tell the trials apart (the labels of plots and tables)."""
    from tuner.results import config_columns

    finished = trials[trials["status"] != tables.RUNNING]
    return [c for c in config_columns(finished) if c != "dataset"]


def overview_section(exp: Experiment) -> list[Any]:
    """Trial counts by status, the failed trials with their errors, and what is still running."""
    counts = tables.status_counts(exp.trials).set_index("status")["trials"]
    blocks: list[Any] = [
        Text(
            f"{counts['total']} trials: {counts['completed']} completed, "
            f"{counts['early-stopped']} stopped early by the scheduler, "
            + (
                f"{counts['stopped-budget']} stopped by the time budget, "
                if counts["stopped-budget"]
                else ""
            )
            + f"{counts['error']} failed, {counts['running']} still running. Only completed "
            "trials have test "
            "metrics (the best-validation checkpoint, tested once); the others show as n/a."
        )
    ]
    failed = exp.trials[exp.trials["status"] == ERROR]
    if len(failed):
        columns = [c for c in label_columns(exp.trials) if c in failed.columns]
        shown = failed[["trial_id", *columns, "error"]].astype("string").fillna(H.NA)
        blocks.append(
            Table(
                shown.rename(columns={"trial_id": "trial"}).reset_index(drop=True),
                caption="Failed trials and their errors (tracebacks: the trials table's "
                "error_traceback column)",
            )
        )
    if counts["running"]:
        blocks.append(
            Text(
                f"The search is still running ({counts['running']} trials without a trial row "
                "yet): every table is partial; run the report again for more.",
                "warning",
            )
        )
    if exp.spec is not None and exp.spec.search.metric == "val_loss":
        blocks.append(
            Text(
                "The search optimised val_loss, but the trials table records no best "
                "validation loss: the report chooses by validation accuracy instead.",
                "note",
            )
        )
    blocks += [Text(n, "warning") for n in exp.notes]
    return blocks


def comparison_section(experiments: list[Experiment]) -> Section:
    """Several experiments side by side: trials by status, each one's best model, and every
    model's test accuracy per experiment (at its best validation configuration there)."""
    sec = Section("Comparison of experiments")
    by_name = {e.name: e.trials for e in experiments}
    metrics = {e.metric for e in experiments}
    metric = metrics.pop() if len(metrics) == 1 else "best_val_acc"
    summary = tables.experiment_summary(by_name, metric=metric)
    shown = pd.DataFrame(
        {
            "experiment": summary["experiment"],
            "dataset": summary["dataset"],
            "classes": [H.plain(v) for v in summary["classes"]],
            "trials": summary["total"],
            **{status: summary[status] for status in (COMPLETED, EARLY_STOPPED, ERROR)},
            tables.RUNNING: summary[tables.RUNNING],
            "best model (validation)": summary["best_model"],
            "its configuration": summary["best_config"],
            "test accuracy (%)": [H.percent(v) for v in summary["test_acc"]],
        }
    )
    sec.add(
        Text(
            "Each experiment's best model and every model's test accuracy per experiment, each "
            f"at its configuration with the best {LABEL.get(metric, metric)} in that "
            "experiment (mean ± std over seeds, n = seeds; best per experiment in bold)."
        ),
        Table(shown, caption="Experiments"),
    )
    table = tables.comparison_table(by_name, metric=metric)
    if table.empty:
        return sec.add(Text("No model has results yet.", "note"))
    names = list(by_name)
    shown = pd.DataFrame({"model": table["model"]})
    for n in names:
        shown[n] = [
            f"{H.mean_std(m, s)} (n={k})" if k else H.NA
            for m, s, k in zip(table[f"{n}_mean"], table[f"{n}_std"], table[f"{n}_n"], strict=True)
        ]
    shown["mean of experiments"] = [H.percent(v) for v in table["mean"]]
    best = tables.mark_best(table, {f"{n}_mean": "max" for n in names})
    best = best.rename(columns={f"{n}_mean": n for n in names})
    sec.add(Table(shown, caption="Test accuracy (%) per model and experiment", bold=best))
    if table[[f"{n}_mean" for n in names]].notna().any().any():
        sec.add(
            Image(
                plots.comparison_png(table, names),
                "Test accuracy per model and experiment (±std over seeds).",
                "comparison",
            )
        )
    return sec
