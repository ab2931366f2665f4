"""``tuner.report``: one self-contained HTML page (and Markdown) per experiment or comparison.

:func:`build_report` reads results only through :func:`tuner.results.load` and the saved
``spec.yaml`` / ``manifest.csv``, so it works while a search is still running (partial
tables; early-stopped, failed and running trials are counted and shown as "n/a"). Sections:

1. architecture ranking (paper 2's Table 2);
2. training factors: scratch, + augmentation, frozen, fine-tuned (paper 1's Tables 1–3);
3. hyperparameters (paper 1's Table 4) and Optuna's parameter importances;
4. plots: accuracy vs MACs with the Pareto front, validation curves, ASHA rungs, confusion;
5. paper 1's pictures: augmented views (Figs. 4–5) and feature maps (Figs. 6–7);
6. the protocol: data, split, search, scheduler, resources, versions.

Several experiments (several paths, or a results root holding several) get a comparison
section first. ``python -m tuner.report DIR [DIR ...] [--out DIR]`` is the CLI.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tuner.report import html as H
from tuner.report import plots, tables
from tuner.report.html import Image, Section, Table, Text
from tuner.results import VAL_COLUMN, load
from tuner.spec import Spec, SpecError, load_saved, parse, referenced

__all__ = [
    "Experiment",
    "NoResultsError",
    "build_report",
    "find_experiments",
    "load_experiment",
    "report_sections",
]

REPORT_FILE, MARKDOWN_FILE, FIGURE_DIR = "report.html", "report.md", "figures"
VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "ray",
    "optuna",
    "pandas",
    "pyarrow",
    "numpy",
    "matplotlib",
    "scikit-learn",
    "tuner",
)
LABEL = {
    "test_acc": "test accuracy",
    "best_val_acc": "validation accuracy",
    "best_val_f1": "validation macro F1",
    "best_val_kappa": "validation kappa",
}


class NoResultsError(FileNotFoundError):
    """A path holds no experiment results; the message says what was expected."""


# ------------------------------------------------------------------------------- loading
@dataclass
class Experiment:
    """One experiment folder, read for the report.

    Attributes:
        name: Experiment name (the folder name; ``parent/name`` where names collide).
        dir: The folder.
        trials: The trials table plus ``running`` rows (:func:`tables.with_running`).
        epochs: The epochs table.
        raw_spec: ``spec.yaml`` as a mapping (``None`` when missing).
        spec: The validated spec (``None`` when missing or invalid; see ``notes``).
        manifest: ``manifest.csv`` (``None`` when missing).
        notes: Problems met while reading (unreadable files, an invalid spec).
    """

    name: str
    dir: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    raw_spec: dict | None = None
    spec: Spec | None = None
    manifest: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The trials column of the spec's validation metric (``best_val_acc``)."""
        name = self.spec.search.metric if self.spec else "val_acc"
        return VAL_COLUMN.get(name, "best_val_acc")


def _has_results(path: Path) -> bool:
    return any(
        (path / sub).is_dir() and any((path / sub).glob("*.parquet"))
        for sub in ("trials", "epochs")
    )


def find_experiments(path: str | Path) -> list[Path]:
    """The experiment folders under ``path``: itself, or its sub-folders with results.

    Raises:
        NoResultsError: ``path`` is missing, or neither it nor a sub-folder holds a trial
            or epoch Parquet file.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise NoResultsError(f"{str(path)!r} does not exist or is not a directory")
    if _has_results(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and _has_results(p))
    if not found:
        raise NoResultsError(
            f"no results under {str(path)!r}: expected an experiment folder with "
            "trials/*.parquet or epochs/*.parquet (results/<experiment>), or a results root "
            "holding such folders; has the search reported a trial yet?"
        )
    return found


def load_experiment(path: str | Path, name: str | None = None) -> Experiment:
    """Read one experiment folder (tables, spec, manifest), collecting problems as notes."""
    path = Path(path).expanduser().resolve()
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trials, epochs = load(path, on_corrupt="warn")
    notes += [str(w.message) for w in caught]
    raw = spec = None
    spec_file = path / "spec.yaml"
    if spec_file.is_file():
        try:
            # spec.yaml keeps ${VAR} references: the report shows them as written
            text = spec_file.read_text()
            raw = parse(text, str(spec_file))
            spec = load_saved(text, str(spec_file), strict=False)
        except (SpecError, ValueError, yaml.YAMLError) as err:
            notes.append(f"spec.yaml could not be validated ({err}); sections that need it say so")
    else:
        notes.append("no spec.yaml beside the results; the protocol and ASHA sections are partial")
    manifest = None
    if (path / "manifest.csv").is_file():
        manifest = pd.read_csv(path / "manifest.csv")
    return Experiment(
        name=name or path.name,
        dir=path,
        trials=tables.with_running(trials, epochs),
        epochs=epochs,
        raw_spec=raw if isinstance(raw, dict) else None,
        spec=spec,
        manifest=manifest,
        notes=notes,
    )


# ------------------------------------------------------------------------------ sections
def _label_columns(trials: pd.DataFrame) -> list[str]:
    from tuner.results import config_columns

    finished = trials[trials["status"] != tables.RUNNING]
    return [c for c in config_columns(finished) if c != "dataset"]


def _overview(exp: Experiment) -> list[Any]:
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
    failed = exp.trials[exp.trials["status"] == "error"]
    if len(failed):
        columns = [c for c in _label_columns(exp.trials) if c in failed.columns]
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


def _architecture(exp: Experiment) -> Section:
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


def _factors(exp: Experiment) -> Section:
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
                    f"{_slug(exp)}-factors",
                )
            )
            plotted = True
    return sec


def _hyperparameters(exp: Experiment) -> Section:
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
            f"{_slug(exp)}-importance",
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


def _plots(exp: Experiment) -> Section:
    sec = Section("4. Plots")
    trials, metric, slug = exp.trials, exp.metric, _slug(exp)
    finished = trials[trials["status"] != tables.RUNNING]
    if finished["macs"].notna().any():
        sec.add(
            Image(
                plots.pareto_png(finished),
                "Test accuracy vs MACs per image (log scale), one point per trial; hollow "
                "points have no test metric (stopped early or failed) and show their best "
                "validation accuracy. The dashed line is the Pareto front (no other trial is "
                "both cheaper and more accurate), annotated with the model.",
                f"{slug}-pareto",
            )
        )
    else:
        sec.add(Text("Accuracy vs MACs: no trial has recorded MACs yet.", "note"))
    top = tables.top_trials(trials, 5, metric)
    if len(top) and not exp.epochs.empty:
        sec.add(
            Image(
                plots.curves_png(exp.epochs, top, _label_columns(trials)),
                f"Validation curves of the top {len(top)} trials by {LABEL.get(metric, metric)} "
                "(running trials included); the star marks each trial's best epoch.",
                f"{slug}-curves",
            )
        )
    sub = Section("ASHA: trials kept at each rung", level=3)
    sec.add(sub)
    sched = exp.spec.scheduler if exp.spec else None
    if sched is None or sched.type != "asha":
        why = "no spec.yaml" if sched is None else "the scheduler is 'none': every trial runs"
        sub.add(Text(f"Not shown: {why}.", "note"))
    else:
        rungs = tables.asha_rungs(
            trials, sched.grace_period, sched.reduction_factor, exp.spec.max_epochs
        )
        sub.add(
            Text(
                f"Milestones grace_period × eta^k ≤ max epochs (grace {sched.grace_period}, "
                f"eta {sched.reduction_factor:g}, max {exp.spec.max_epochs}); a trial counts "
                "at a rung when it ran at least that many epochs (running trials so far)."
            ),
            Table(
                pd.DataFrame(
                    {
                        "rung": rungs["rung"],
                        "epochs": [H.plain(float(e)) for e in rungs["epochs"]],
                        "trials": rungs["trials"],
                        "share of started (%)": [H.percent(f, 0) for f in rungs["fraction"]],
                    }
                )
            ),
            Image(plots.rungs_png(rungs), "Trials reaching each ASHA rung.", f"{slug}-asha"),
        )
    best = best_trial(trials, metric)
    sub = Section("Confusion matrix of the best trial", level=3)
    sec.add(sub)
    if best is None or best.get("test_confusion") is None:
        sub.add(Text("Not shown: no completed trial with a test confusion matrix yet.", "note"))
        return sec
    names = best.get("class_names")
    if names is None or not len(names):
        names = exp.spec.dataset.classes if exp.spec and exp.spec.dataset else None
    label = tables.config_labels(best.to_frame().T, _label_columns(trials)).iloc[0]
    title = (
        f"trial {best['trial_id']} ({label})\n"
        f"test acc {H.percent(best['test_acc'])}%, {LABEL.get(metric, metric)} "
        f"{H.percent(best[metric])}%"
    )
    sub.add(
        Image(
            plots.confusion_png(best["test_confusion"], names, title),
            "Test-split confusion matrix (rows: true class, columns: predicted; counts, "
            "coloured by share of the true class) of the completed trial with the best "
            f"{LABEL.get(metric, metric)}.",
            f"{slug}-confusion",
        )
    )
    return sec


def _pictures(exp: Experiment, figures: bool) -> Section:
    from tuner.report import figures as F

    sec = Section("5. Augmented views and feature maps")
    if not figures:
        return sec.add(Text("Skipped (--no-figures).", "note"))
    if exp.spec is None or exp.spec.dataset is None:
        return sec.add(Text("Not drawn: needs a valid spec.yaml with a dataset.", "note"))
    if exp.manifest is None:
        return sec.add(Text("Not drawn: no manifest.csv beside the results.", "note"))
    data, slug = exp.spec.dataset, _slug(exp)
    try:
        root = F.dataset_root(data, exp.dir)
    except F.FigureUnavailable as err:
        return sec.add(Text(f"Not drawn: {err}.", "note"))
    aug_param = next((p for p in exp.spec.params if p.name == "augmentation"), None)
    used = list(aug_param.values) if aug_param and aug_param.kind in ("fixed", "choice") else []
    sub = Section("Augmented views (paper 1, Figs. 4–5)", level=3)
    sec.add(sub)
    sub.add(
        Text(
            f"Three test images and four random training views under each preset (the "
            f"search used: {', '.join(map(str, used)) or 'none'}; paper, color and aerial "
            f"are always shown). Dataset root: `{root}`."
        )
    )
    for preset in F.presets_to_show(used):
        try:
            png = F.augmentation_png(data, root, exp.manifest, preset)
        except F.FigureUnavailable as err:
            sub.add(Text(f"Preset {preset!r} not drawn: {err}.", "note"))
            continue
        sub.add(Image(png, f"Augmentation preset '{preset}'.", f"{slug}-augment-{preset}"))
    sub = Section("Feature maps of the best model (paper 1, Figs. 6–7)", level=3)
    sec.add(sub)
    best = best_trial(exp.trials, exp.metric)
    if best is None:
        return sec.add(Text("Not drawn: no completed trial yet.", "note"))
    try:
        png = F.feature_maps_png(best, data, root, exp.manifest)
    except F.FigureUnavailable as err:
        sub.add(Text(f"Not drawn: {err}.", "note"))
        return sec
    sub.add(
        Text(
            "An early and a late convolution of the backbone of the completed trial with the "
            f"best {LABEL.get(exp.metric, exp.metric)}, with its best-validation weights, for "
            "one test image: the first convolution and the last one whose map is at least 4×4 "
            "pixels (smaller maps of a small input show nothing); the 8 channels with the "
            "largest spatial variance, each with its own colour scale."
        ),
        Image(png, "Early and late feature maps.", f"{slug}-feature-maps"),
    )
    return sec


def _versions() -> pd.DataFrame:
    rows = [("python", platform.python_version())]
    for pkg in VERSION_PACKAGES:
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def _protocol_rows(exp: Experiment) -> list[tuple[str, str]]:
    """Field / value rows from the spec (defaults filled in), the manifest and the trials."""
    raw = referenced(exp.spec) if exp.spec is not None else exp.raw_spec or {}
    rows: list[tuple[str, str]] = [
        ("experiment", exp.name),
        ("description", str(raw.get("description") or "—")),
        ("results", str(exp.dir)),
        ("trainable", str(raw.get("trainable", "—"))),
    ]
    data = raw.get("dataset") or {}
    if data:
        from trainables.data.presets import PRESETS

        preset = PRESETS.get(data.get("preset", ""))
        rows.append(
            (
                "dataset preset",
                f"{data.get('preset')}" + (f" ({preset.citation})" if preset else ""),
            )
        )
        rows.append(("dataset root", str(data.get("root"))))
        classes = data.get("classes")
        if not classes and exp.manifest is not None:
            classes = list(dict.fromkeys(exp.manifest.sort_values("label")["class"]))
        if classes:
            rows.append(("classes", f"{len(classes)}: {', '.join(map(str, classes))}"))
        split = data.get("split") or {}
        rows.append(
            (
                "split ratios",
                f"train {split.get('train')}, val {split.get('val')}, test {split.get('test')}; "
                f"split seed {split.get('seed')} (stratified per class)",
            )
        )
        rows.append(("image size", f"{data.get('image_size')} px"))
        if data.get("synthetic"):
            rows.append(("synthetic generator", _inline_mapping(data["synthetic"])))
    if exp.manifest is not None and "split" in exp.manifest:
        counts = exp.manifest["split"].value_counts()
        rows.append(
            (
                "images per split",
                ", ".join(f"{s} {int(counts.get(s, 0))}" for s in ("train", "val", "test"))
                + f" (total {len(exp.manifest)}; manifest.csv)",
            )
        )
    hashes = exp.trials["split_hash"].dropna().astype(str).unique() if len(exp.trials) else []
    if len(hashes) == 1:
        n = int(exp.trials["split_hash"].notna().sum())
        rows.append(("split hash", f"{hashes[0]} (identical in all {n} trials that record it)"))
    elif len(hashes) > 1:
        rows.append(("split hash", f"DIFFERS between trials: {', '.join(hashes)}"))
    else:
        rows.append(("split hash", "n/a (no trial recorded one)"))
    if raw.get("pretrain"):
        pre = dict(raw["pretrain"])
        pdata = pre.pop("dataset", {}) or {}
        rows.append(
            (
                "pretraining (weights 'pretrain')",
                f"dataset {pdata.get('preset')} at {pdata.get('root')} "
                f"({len(pdata.get('classes') or [])} classes); " + _inline_mapping(pre),
            )
        )
    search = raw.get("search") or {}
    if search:
        text = f"{search.get('algorithm')}"
        if search.get("algorithm") == "optuna":
            text += f" (TPE), {search.get('num_samples')} samples, sampler seed "
            text += f"{search.get('sampler_seed')}"
        text += f"; seeds {search.get('seeds')}; metric {search.get('metric')} "
        text += f"({search.get('mode')}); max failures {search.get('max_failures')}"
        if search.get("max_concurrent"):
            text += f"; max concurrent {search.get('max_concurrent')}"
        if search.get("exclude"):
            text += f"; excluded cells {search.get('exclude')}"
        rows.append(("search", text))
    sched = raw.get("scheduler") or {}
    if sched:
        text = _inline_mapping(sched)
        if exp.spec is not None and exp.spec.scheduler.type == "asha":
            s = exp.spec.scheduler
            ms = tables.asha_milestones(s.grace_period, s.reduction_factor, exp.spec.max_epochs)
            text += f"; max epochs {exp.spec.max_epochs}; rungs at epochs {ms}"
        rows.append(("scheduler", text))
    if raw.get("resources"):
        rows.append(("resources per trial", _inline_mapping(raw["resources"])))
    finished = exp.trials[exp.trials["status"] != tables.RUNNING]
    if len(finished) and finished["start_time"].notna().any():
        start, end = finished["start_time"].min(), finished["end_time"].max()
        rows.append(("trials ran", f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"))
        nodes = sorted(set(finished["node"].dropna().astype(str)))
        if nodes:
            rows.append(("nodes", ", ".join(nodes)))
    rows.append(
        (
            "reproduce",
            f"python -m tuner.run {exp.dir / 'spec.yaml'} --name NEW_NAME --results DIR "
            "(the spec saved with the results is complete; its ${VAR} references expand "
            "from the environment, the dataset roots are recorded resolved)",
        )
    )
    return rows


def _inline_mapping(mapping: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _protocol(exp: Experiment) -> Section:
    sec = Section("6. Protocol")
    sec.add(
        Text(
            "What a reader needs to reproduce the search: from the spec.yaml saved with the "
            "results, the manifest and the trials. Package versions are those of the "
            "environment that wrote this report (recorded at report time, not at search time)."
        ),
        Table(pd.DataFrame(_protocol_rows(exp), columns=["field", "value"])),
    )
    if exp.spec is not None and exp.spec.params:
        space = pd.DataFrame(
            [
                {
                    "parameter": p.name,
                    "kind": p.kind,
                    "values": ", ".join(tables.value_text(v) for v in p.values),
                    "when": _inline_mapping({k: list(v) for k, v in p.when.items()}) or "—",
                    "searched": "yes" if p.searched else "no",
                }
                for p in exp.spec.params
            ]
        )
        sec.add(Table(space, caption="Factors and hyperparameters (search space)"))
    sec.add(Table(_versions(), caption="Versions (at report time)"))
    return sec


def _slug(exp: Experiment) -> str:
    return H.slug(exp.name)


def report_sections(exp: Experiment, figures: bool = True) -> list[Section]:
    """Sections 1–6 of one experiment (level 2), preceded by an overview."""
    return [
        Section("Overview", _overview(exp)),
        _architecture(exp),
        _factors(exp),
        _hyperparameters(exp),
        _plots(exp),
        _pictures(exp, figures),
        _protocol(exp),
    ]


def _demote(section: Section, prefix: str) -> Section:
    """A section one level deeper, with anchors made unique by ``prefix``."""
    blocks = [_demote(b, prefix) if isinstance(b, Section) else b for b in section.blocks]
    return Section(section.title, blocks, section.level + 1, f"{prefix}-{section.anchor}")


def _comparison(experiments: list[Experiment]) -> Section:
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
            "completed": summary["completed"],
            "early-stopped": summary["early-stopped"],
            "error": summary["error"],
            "running": summary["running"],
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


# ---------------------------------------------------------------------------- the report
def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def _default_out(paths: Sequence[str | Path], experiments: list[Path]) -> Path:
    if len(paths) == 1:
        return Path(paths[0]).expanduser().resolve() / "report"
    common = Path(os.path.commonpath([str(p.resolve()) for p in experiments]))
    return common / "report"


def _write(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write the report files into a temporary folder, then move each into ``out_dir``.

    Every file replaces its old version in one rename, ``report.html`` last, so a reader
    never sees a half-written page; the old ``figures/`` folder is swapped out whole.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / FIGURE_DIR).mkdir(exist_ok=True)
        old = out_dir / FIGURE_DIR
        if old.exists():
            os.replace(old, tmp / ".old-figures")
        os.replace(tmp / FIGURE_DIR, old)
        for name in sorted(files, key=lambda n: n == REPORT_FILE):
            if not name.startswith(f"{FIGURE_DIR}/"):
                os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_report(
    paths: Sequence[str | Path] | str | Path,
    out_dir: str | Path | None = None,
    *,
    figures: bool = True,
) -> Path:
    """Write ``report.html`` (self-contained), ``report.md`` and ``figures/*.png``.

    Args:
        paths: Experiment folders (``results/<experiment>``) and/or results roots; a root
            contributes every experiment under it. More than one experiment adds a
            comparison section.
        out_dir: Where to write (default: ``<path>/report/`` for one path, else
            ``<common parent>/report/``).
        figures: Draw section 5 (needs the dataset and the best checkpoint; slower).

    Returns:
        The path of ``report.html``.

    Raises:
        NoResultsError: A path holds no results.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise NoResultsError("no results path given")
    dirs = [d for p in paths for d in find_experiments(p)]
    dirs = list(dict.fromkeys(d.resolve() for d in dirs))
    experiments = [load_experiment(d, n) for d, n in zip(dirs, _unique_names(dirs), strict=True)]
    out = Path(out_dir).expanduser().resolve() if out_dir else _default_out(paths, dirs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = sum(len(e.trials) for e in experiments)
    if len(experiments) == 1:
        exp = experiments[0]
        title = f"tuner report: {exp.name}"
        sections = report_sections(exp, figures)
    else:
        title = f"tuner report: {len(experiments)} experiments"
        sections = [_comparison(experiments)]
        for exp in experiments:
            parts = [_demote(s, _slug(exp)) for s in report_sections(exp, figures)]
            sections.append(Section(f"Experiment {exp.name}", parts, 2, f"exp-{_slug(exp)}"))
    subtitle = (
        f"Generated {stamp} from {', '.join(f'`{e.dir}`' for e in experiments)} "
        f"({total} trials). Readable while a search runs: run it again to refresh."
    )
    seen: set[str] = set()
    for img in H.images(sections):  # figure file names must not collide (slugged names)
        base, k = img.name, 1
        while img.name in seen:
            k += 1
            img.name = f"{base}-{k}"
        seen.add(img.name)
    page = H.render_html(title, subtitle, sections)
    markdown = H.render_markdown(title, subtitle, sections, FIGURE_DIR)
    files = {f"{FIGURE_DIR}/{img.name}.png": img.png for img in H.images(sections)}
    files[MARKDOWN_FILE] = markdown.encode()
    files[REPORT_FILE] = page.encode()
    _write(out, files)
    return out / REPORT_FILE
