"""The picture sections: plots of the results, and augmented views / feature maps."""

from __future__ import annotations

import pandas as pd

from tuner.report import html as H
from tuner.report import plots, tables
from tuner.report.experiment import LABEL, Experiment, slug_of
from tuner.report.html import Image, Section, Table, Text
from tuner.report.overview import label_columns
from tuner.report.rankings import best_trial


def plots_section(exp: Experiment) -> Section:
    """Section 4: accuracy vs MACs (Pareto front), validation curves, ASHA rungs, confusion."""
    sec = Section("4. Plots")
    trials, metric, slug = exp.trials, exp.metric, slug_of(exp)
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
                plots.curves_png(exp.epochs, top, label_columns(trials)),
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
    label = tables.config_labels(best.to_frame().T, label_columns(trials)).iloc[0]
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


def pictures_section(exp: Experiment, figures: bool) -> Section:
    """Section 5 (paper 1's Figs. 4-7): augmented views and feature maps of the best model."""
    from tuner.report import figures as F

    sec = Section("5. Augmented views and feature maps")
    if not figures:
        return sec.add(Text("Skipped (--no-figures).", "note"))
    if exp.spec is None or exp.spec.dataset is None:
        return sec.add(Text("Not drawn: needs a valid spec.yaml with a dataset.", "note"))
    if exp.manifest is None:
        return sec.add(Text("Not drawn: no manifest.csv beside the results.", "note"))
    data, slug = exp.spec.dataset, slug_of(exp)
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
