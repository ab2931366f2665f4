"""The report's tables: pure pandas functions over an experiment's trials / epochs tables.

Every function takes DataFrames shaped like :func:`tuner.results.load` returns them (any
subset of rows: a search may still be running) and returns a DataFrame of plain numbers;
formatting (percentages, ``mean ± std``, bold best cells) happens in
:mod:`tuner.report.html`.

Conventions:

* **Choices use validation metrics, never test metrics.** Where a table picks one
  configuration (the architecture ranking picks each model's best configuration), it picks
  by the spec's ``search.metric`` (``best_val_acc`` for ``val_acc``); test metrics are only
  shown.
* **mean ± std**: sample standard deviation (``ddof=1``) over the trials pooled in a cell;
  ``NaN`` (shown as "n/a") where fewer than two trials have the value.
* **Partial results**: early-stopped and failed trials have no test metrics; they are
  counted (``trials``) but only trials with a value enter a mean (``n``). Trials that have
  epoch rows but no trial row yet are still running (:func:`with_running`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from trainables.augment_presets import AUGMENTATIONS
from trainables.config import TrialConfig
from trainables.numbers import param_value
from tuner.results import COMPLETED, TEST_METRICS, TRIAL_STATUSES, config_columns
from tuner.spec import FACTOR_NAMES, Param

#: Statuses a report counts: a trial's final status, or ``running`` (epoch rows only).
RUNNING = "running"
STATUSES = (*TRIAL_STATUSES, RUNNING)
#: The hyperparameters of paper 1's Table 4, always shown first.
PAPER_HYPERPARAMETERS = ("lr", "epochs", "batch_size")
#: Best-cell direction of the architecture table's columns.
ARCHITECTURE_BEST = {
    "test_acc_mean": "max",
    "test_f1_mean": "max",
    "test_kappa_mean": "max",
    "val_mean": "max",
    "params": "min",
    "macs": "min",
    "train_time_s_mean": "min",
}


class NotEnoughData(ValueError):
    """A table cannot be built from the results so far; the message says why."""


# ---------------------------------------------------------------------------------- helpers
def _default(name: str) -> Any:
    return TrialConfig.model_fields[name].default


def _finished(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows that have a trial row (not the placeholder rows of running trials)."""
    if "status" not in trials.columns:
        return trials
    return trials[trials["status"] != RUNNING]


def value_text(value: Any) -> str:
    """Short display text of one parameter value; missing values are ``—``."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, np.generic):
        value = value.item()
    return param_value(value)


def config_labels(trials: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """``"transfer=finetune, augmentation=none"`` per row, over ``columns`` in order.

    Parameters a row does not have (null: a conditional one that does not apply) and
    ``weights=none`` (implied by ``transfer=scratch``) are left out of its label.
    """
    if not len(columns):
        return pd.Series(["(one configuration)"] * len(trials), index=trials.index, dtype=object)
    labels = []
    for row in trials[list(columns)].itertuples(index=False, name=None):
        parts = [
            f"{c}={value_text(v)}"
            for c, v in zip(columns, row, strict=True)
            if value_text(v) != "—" and not (c == "weights" and v == "none")
        ]
        labels.append(", ".join(parts) or "(defaults)")
    return pd.Series(labels, index=trials.index, dtype=object)


def _std(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else float("nan")


def mark_best(table: pd.DataFrame, directions: Mapping[str, str]) -> pd.DataFrame:
    """Which cells hold the best value of their column.

    Args:
        table: Any table with numeric columns.
        directions: Column -> ``"max"`` or ``"min"``; columns missing from ``table`` are
            skipped.

    Returns:
        A boolean DataFrame (same index; one column per direction present): ``True`` where
        the cell equals the column's max (min); ties are all marked, ``NaN`` never is.
    """
    out = pd.DataFrame(index=table.index)
    for col, direction in directions.items():
        if col not in table.columns:
            continue
        values = pd.to_numeric(table[col], errors="coerce").astype(float)
        if values.notna().sum() == 0:
            out[col] = False
            continue
        best = values.max() if direction == "max" else values.min()
        out[col] = (values == best).fillna(False).astype(bool)
    return out


# -------------------------------------------------------------------------------- statuses
def with_running(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The trials table plus one ``running`` row per trial that only has epoch rows so far.

    Trial rows are written when a trial ends; a trial still training is visible only in the
    epochs table. Its placeholder row has ``status="running"``, ``epochs_run`` (the last
    epoch reported) and the best validation metrics so far; its configuration is unknown
    (null).
    """
    known = set(trials["trial_id"].dropna()) if "trial_id" in trials.columns else set()
    if epochs.empty or "trial_id" not in epochs.columns:
        return trials.copy()
    pending = epochs[~epochs["trial_id"].isin(known) & epochs["val_acc"].notna()]
    if pending.empty:
        return trials.copy()
    rows = []
    for trial_id, group in pending.groupby("trial_id", sort=True):
        best = group.loc[group["val_acc"].astype(float).idxmax()]
        rows.append(
            {
                "experiment": group["experiment"].iloc[0],
                "trial_id": trial_id,
                "status": "running",
                "epochs_run": int(group["epoch"].max()),
                "best_epoch": int(best["epoch"]),
                "best_val_acc": float(best["val_acc"]),
                "best_val_f1": best.get("val_f1"),
                "best_val_kappa": best.get("val_kappa"),
            }
        )
    extra = pd.DataFrame(rows).reindex(columns=trials.columns)
    for col, dtype in trials.dtypes.items():
        with contextlib.suppress(TypeError, ValueError):
            extra[col] = extra[col].astype(dtype)
    return pd.concat([trials, extra], ignore_index=True)


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per status (``completed``, ``early-stopped``, ``error``, ``running``, others).

    Returns:
        Columns ``status``, ``trials``, ``with_test`` (trials that have ``test_acc``); one
        row per status in that order, statuses without trials included (0), and a
        ``total`` row last.
    """
    status = trials["status"].astype(object) if len(trials) else pd.Series([], dtype=object)
    has_test = trials["test_acc"].notna() if "test_acc" in trials.columns else status.isna()
    names = list(STATUSES) + sorted(set(status.dropna()) - set(STATUSES))
    rows = [
        {
            "status": s,
            "trials": int((status == s).sum()),
            "with_test": int(((status == s) & has_test).sum()),
        }
        for s in names
    ]
    rows.append({"status": "total", "trials": len(trials), "with_test": int(has_test.sum())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- architecture
def _select_config(
    done: pd.DataFrame, columns: Sequence[str], metric: str, mode: str
) -> tuple[str, pd.DataFrame]:
    """The configuration (label, its trials) with the best mean validation ``metric``.

    Ties are broken by the other validation metrics (F1, then kappa), then by the label that
    sorts first, so the choice is deterministic and never looks at test metrics.
    """
    labels = config_labels(done, columns)
    keys = list(dict.fromkeys([metric, "best_val_f1", "best_val_kappa"]))
    keys = [k for k in keys if k in done.columns]
    scores = done[keys].astype(float).groupby(labels, sort=True).mean()
    scores = scores.sort_index().sort_values(
        keys, ascending=mode == "min", na_position="last", kind="stable"
    )
    label = scores.index[0]
    return label, done[labels == label]


def architecture_table(
    trials: pd.DataFrame, metric: str = "best_val_acc", mode: str = "max", by: str = "model"
) -> pd.DataFrame:
    """Paper 2's Table 2: one row per model at its best configuration.

    For each model, the trials that have test metrics are grouped by configuration (every
    varying parameter but the model and the seed); the configuration with the best mean
    validation ``metric`` is chosen and its test metrics are averaged over its seeds. A
    model with no such trial yet (all stopped early, failed or running) keeps a row with
    ``NaN`` metrics ("n/a").

    Args:
        trials: The trials table (any statuses).
        metric: Validation column that chooses the configuration (``best_val_acc``).
        mode: ``max`` or ``min`` for ``metric``.
        by: Column that names an architecture.

    Returns:
        Columns: ``by``, ``config`` (the chosen configuration), ``n`` (its trials with test
        metrics, i.e. seeds), ``trials`` and ``completed`` (all trials of the model),
        ``test_acc_mean``/``_std``, ``test_f1_mean``/``_std``, ``test_kappa_mean``/``_std``,
        ``val_mean``/``val_std`` (``metric`` of the chosen configuration), ``params``,
        ``macs`` (means over the model's trials), ``train_time_s_mean``/``_std``. Sorted by
        ``val_mean`` (best first; models without a result last).
    """
    finished = _finished(trials)
    columns = [c for c in config_columns(finished) if c not in (by, "seed")]
    rows = []
    if by not in trials.columns:
        return pd.DataFrame(columns=[by, "config", "n", "trials", "completed"])
    for name, group in finished.groupby(by, sort=True):
        done = group[group["test_acc"].notna()]
        row: dict[str, Any] = {
            by: name,
            "trials": len(group),
            "completed": int((group["status"] == COMPLETED).sum()),
            "params": _mean(group["params"].astype(float)),
            "macs": _mean(group["macs"].astype(float)),
        }
        if done.empty:
            row.update(config="no trial with test metrics yet", n=0)
            chosen = done
        else:
            row["config"], chosen = _select_config(done, columns, metric, mode)
            row["n"] = len(chosen)
            row["params"] = _mean(chosen["params"].astype(float))
            row["macs"] = _mean(chosen["macs"].astype(float))
        for m in TEST_METRICS:
            row[f"{m}_mean"] = _mean(chosen[m])
            row[f"{m}_std"] = _std(chosen[m])
        row["val_mean"], row["val_std"] = _mean(chosen[metric]), _std(chosen[metric])
        row["train_time_s_mean"] = _mean(chosen["train_time_s"])
        row["train_time_s_std"] = _std(chosen["train_time_s"])
        rows.append(row)
    order = [by, "config", "n", "trials", "completed"]
    order += [f"{m}_{s}" for m in TEST_METRICS for s in ("mean", "std")]
    order += ["val_mean", "val_std", "params", "macs", "train_time_s_mean", "train_time_s_std"]
    out = pd.DataFrame(rows, columns=order)
    out = out.sort_values("val_mean", ascending=mode == "min", na_position="last", kind="stable")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------- factors
def factor_conditions(trials: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """The conditions of paper 1's Tables 1–3 as ``(name, row mask)`` pairs.

    ``scratch`` (random init, no augmentation; Table 1), ``scratch + <preset>`` for each
    augmentation preset used (Table 2), ``frozen`` and ``finetune`` (Table 3, pooled over
    augmentation). Missing ``transfer`` / ``augmentation`` values take the
    :class:`~trainables.config.TrialConfig` defaults. Conditions without any trial are
    left out.
    """
    transfer = trials["transfer"].astype(object).where(trials["transfer"].notna(), None)
    transfer = transfer.fillna(_default("transfer")).astype(str)
    augmentation = trials["augmentation"].astype(object).where(trials["augmentation"].notna())
    augmentation = augmentation.fillna(_default("augmentation")).astype(str)
    scratch = transfer == "scratch"
    conditions = [("scratch", scratch & (augmentation == "none"))]
    used = set(augmentation[scratch])
    for preset in [a for a in AUGMENTATIONS if a != "none"] + sorted(used - set(AUGMENTATIONS)):
        if preset in used:
            conditions.append((f"scratch + {preset}", scratch & (augmentation == preset)))
    for mode in ("frozen", "finetune"):
        conditions.append((mode, transfer == mode))
    return [(name, mask) for name, mask in conditions if mask.any()]


def factor_tables(
    trials: pd.DataFrame, metric: str = "test_acc", by: str = "model"
) -> pd.DataFrame:
    """Paper 1's Tables 1–3 side by side: ``metric`` per model under each training factor.

    Each cell is the **mean ± std over every other factor and seed** in that condition (e.g.
    ``frozen`` pools the augmentation presets, weights and hyperparameters of the frozen
    trials). Difference columns are ``condition − scratch`` in percentage points
    (``100 × (mean − scratch mean)``), so ``+2.1`` means the factor added 2.1 points.

    Args:
        trials: The trials table (any statuses; trials without ``metric`` count in
            ``<condition>_trials`` but not in the mean).
        metric: ``test_acc`` (the papers' tables) or e.g. ``best_val_acc``.
        by: Column that names an architecture.

    Returns:
        One row per model: ``by``, then for each condition of :func:`factor_conditions`
        ``<condition>_mean``, ``_std``, ``_n`` (trials with the metric) and ``_trials``,
        then ``d_<condition>_pp`` for every condition but ``scratch``.
    """
    finished = _finished(trials)
    finished = finished[finished[by].notna()] if by in finished.columns else finished.iloc[:0]
    if finished.empty:
        return pd.DataFrame(columns=[by])
    conditions = factor_conditions(finished)
    rows = []
    for name in sorted(finished[by].astype(str).unique()):
        of_model = finished[by].astype(str) == name
        row: dict[str, Any] = {by: name}
        for cond, mask in conditions:
            values = finished.loc[mask & of_model, metric]
            row[f"{cond}_mean"] = _mean(values)
            row[f"{cond}_std"] = _std(values)
            row[f"{cond}_n"] = int(values.notna().sum())
            row[f"{cond}_trials"] = int((mask & of_model).sum())
        base = row.get("scratch_mean", float("nan"))
        for cond, _ in conditions:
            if cond != "scratch":
                row[f"d_{cond}_pp"] = 100 * (row[f"{cond}_mean"] - base)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- hyperparameters
def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """Paper 1's ``lr``, ``epochs``, ``batch_size``, then every other varying
    non-factor parameter (not the seed); ``model`` first when several models ran."""
    finished = _finished(trials)
    cols = [c for c in PAPER_HYPERPARAMETERS if c in finished.columns]
    cols += [
        c for c in config_columns(finished) if c not in (*FACTOR_NAMES, *cols, "seed", "dataset")
    ]
    if "model" in finished.columns and finished["model"].astype(object).nunique() > 1:
        cols.insert(0, "model")
    return cols


def hyperparameter_table(
    trials: pd.DataFrame,
    columns: Sequence[str] | None = None,
    metric: str = "test_acc",
    val_metric: str = "best_val_acc",
    mode: str = "max",
) -> pd.DataFrame:
    """Paper 1's Table 4: accuracy per hyperparameter setting (lr × epochs × batch size).

    Trials are grouped by ``columns``; everything else (factors, seeds) is pooled into the
    cell's mean ± std.

    Args:
        trials: The trials table.
        columns: Grouping columns (default :func:`hyperparameter_columns`).
        metric: Displayed metric (``test_acc``).
        val_metric: Validation column that orders the rows (best first).
        mode: ``max`` or ``min`` for ``val_metric``.

    Returns:
        ``columns`` (raw values), ``trials``, ``n`` (trials with ``metric``),
        ``<metric>_mean``/``_std``, ``val_mean``/``val_std``.
    """
    finished = _finished(trials)
    columns = list(columns) if columns is not None else hyperparameter_columns(trials)
    out_cols = [*columns, "trials", "n", f"{metric}_mean", f"{metric}_std", "val_mean", "val_std"]
    if finished.empty:
        return pd.DataFrame(columns=out_cols)
    rows = []
    groups = finished.groupby(columns, dropna=False, sort=True) if columns else [((), finished)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(columns, key, strict=True))
        row.update(
            trials=len(group),
            n=int(group[metric].notna().sum()),
            **{f"{metric}_mean": _mean(group[metric]), f"{metric}_std": _std(group[metric])},
            val_mean=_mean(group[val_metric]),
            val_std=_std(group[val_metric]),
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=out_cols)
    out = out.sort_values("val_mean", ascending=mode == "min", na_position="last", kind="stable")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------ importance
def _evaluators() -> dict[str, Any]:
    """Optuna's importance evaluators that can run here.

    fANOVA (Optuna's default) and mean decrease in impurity need scikit-learn; without it,
    PED-ANOVA (no extra dependency) stands in.
    """
    from optuna.importance import (
        FanovaImportanceEvaluator,
        MeanDecreaseImpurityImportanceEvaluator,
        PedAnovaImportanceEvaluator,
    )

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return {"ped_anova": PedAnovaImportanceEvaluator(target_quantile=0.5)}
    return {
        "fanova": FanovaImportanceEvaluator(seed=0),
        "mdi": MeanDecreaseImpurityImportanceEvaluator(seed=0),
    }


def _distribution(param: Param, observed: list) -> Any:
    """Optuna distribution of a spec parameter, widened to cover the observed values."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if param.kind in ("fixed", "choice"):
        choices = list(param.values)
        choices += [v for v in dict.fromkeys(observed) if v not in choices]
        return CategoricalDistribution(choices)
    low, high = param.values
    if observed:
        low, high = min(low, *observed), max(high, *observed)
    log = param.kind in ("loguniform", "logint")
    if param.kind in ("int", "logint"):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _plain(value: Any, param: Param) -> Any:
    """A trials-table cell as the Python value the spec would use."""
    if isinstance(value, np.generic):
        value = value.item()
    if param.kind in ("fixed", "choice"):
        for choice in param.values:
            if choice == value and type(choice) is not bool:
                return choice
        return value
    return int(value) if param.kind in ("int", "logint") else float(value)


def importances(
    trials: pd.DataFrame,
    params: Sequence[Param],
    metric: str = "best_val_acc",
    mode: str = "max",
    evaluators: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Which searched parameters mattered for the validation metric (Optuna importances).

    An in-memory study gets one trial per **completed** trial (``optuna.trial.create_trial``
    with the spec's distributions and ``metric`` as the value); each evaluator's
    :func:`optuna.importance.get_param_importances` is a column. Parameters that vary
    among the completed trials and that every completed trial has enter; conditional
    parameters some trials lack are listed in ``attrs["skipped"]``.

    Args:
        trials: The trials table.
        params: The spec's parameters (``Spec.params``); only searched ones are used.
        metric: Validation column (never a test metric).
        mode: ``max`` or ``min``.
        evaluators: Column name -> Optuna evaluator (default :func:`_evaluators`: fANOVA
            and mean decrease impurity; PED-ANOVA without scikit-learn).

    Returns:
        ``parameter`` and one importance column per evaluator (normalised to sum to 1),
        sorted by the first evaluator. ``attrs``: ``trials`` (used), ``skipped``.

    Raises:
        NotEnoughData: Fewer than 2 completed trials, no varying parameter, or a constant
            metric.
    """
    import optuna

    done = trials[(trials["status"] == COMPLETED) & trials[metric].notna()]
    if len(done) < 2:
        raise NotEnoughData(
            f"parameter importance needs at least 2 completed trials with {metric}, "
            f"but there are {len(done)}"
        )
    searched = [p for p in params if p.searched and p.name in done.columns]
    varying, skipped = [], []
    for p in searched:
        column = done[p.name]
        if column.astype(object).nunique(dropna=True) < 2:
            continue
        (skipped if column.isna().any() else varying).append(p)
    if not varying:
        raise NotEnoughData(
            "parameter importance needs at least 1 searched parameter that varies among the "
            f"{len(done)} completed trials, but none does"
            + (f" (conditional ones skipped: {[p.name for p in skipped]})" if skipped else "")
        )
    if done[metric].astype(float).nunique() < 2:
        raise NotEnoughData(
            f"every completed trial has the same {metric}; no parameter explains a difference"
        )
    values = {p.name: [_plain(v, p) for v in done[p.name]] for p in varying}
    dists = {p.name: _distribution(p, values[p.name]) for p in varying}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for i, score in enumerate(done[metric].astype(float)):
        study.add_trial(
            optuna.trial.create_trial(
                params={name: values[name][i] for name in dists},
                distributions=dists,
                value=float(score),
            )
        )
    evaluators = dict(evaluators) if evaluators is not None else _evaluators()
    table = pd.DataFrame({"parameter": list(dists)})
    for label, evaluator in evaluators.items():
        target: Callable | None = None
        if type(evaluator).__name__ == "PedAnovaImportanceEvaluator" and mode == "max":
            target = lambda t: -t.value  # noqa: E731  PED-ANOVA assumes minimisation
        with warnings.catch_warnings():
            # PED-ANOVA warns whenever a target is given; ours is the negated objective.
            warnings.filterwarnings("ignore", message=".*low `target` values", category=UserWarning)
            scores = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=list(dists), target=target
            )
        table[label] = [float(scores.get(name, float("nan"))) for name in dists]
    if evaluators:
        table = table.sort_values(next(iter(evaluators)), ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    table.attrs.update(trials=len(done), skipped=[p.name for p in skipped])
    return table


# ------------------------------------------------------------------------------------ ASHA
def asha_milestones(grace_period: float, reduction_factor: float, max_epochs: float) -> list:
    """ASHA's rungs: ``grace_period × eta^k`` for every ``k`` with a milestone ``<= max``."""
    if grace_period <= 0 or reduction_factor <= 1:
        raise ValueError(
            "`grace_period > 0` and `reduction_factor > 1` must hold, but got "
            f"(grace_period={grace_period}, reduction_factor={reduction_factor})"
        )
    out, m = [], float(grace_period)
    while m <= max_epochs + 1e-9:
        out.append(int(m) if float(m).is_integer() else m)
        m *= reduction_factor
    return out


def asha_rungs(
    trials: pd.DataFrame, grace_period: float, reduction_factor: float, max_epochs: int
) -> pd.DataFrame:
    """How many trials ASHA let reach each rung.

    Args:
        trials: The trials table, ideally with :func:`with_running` rows (a running trial
            has reached the rungs at or below its last epoch).
        grace_period: The scheduler's grace period (epochs before any stop).
        reduction_factor: ASHA's eta: only the top 1/eta of the trials at a rung continue.
        max_epochs: The most epochs a trial may run.

    Returns:
        Rows ``start`` (every trial, epoch 0), one ``rung k`` per milestone of
        :func:`asha_milestones`, and ``max`` when ``max_epochs`` is not itself a milestone;
        columns ``rung``, ``epochs``, ``trials`` (``epochs_run >= epochs``) and
        ``fraction`` (of the trials started).
    """
    milestones = asha_milestones(grace_period, reduction_factor, max_epochs)
    ran = trials["epochs_run"].astype(float).fillna(0)
    total = len(trials)
    rows = [{"rung": "start", "epochs": 0, "trials": total}]
    rows += [
        {"rung": f"rung {k}", "epochs": m, "trials": int((ran >= m).sum())}
        for k, m in enumerate(milestones, start=1)
    ]
    if not milestones or milestones[-1] < max_epochs:
        rows.append({"rung": "max", "epochs": max_epochs, "trials": int((ran >= max_epochs).sum())})
    out = pd.DataFrame(rows)
    out["fraction"] = out["trials"] / total if total else float("nan")
    return out


# ---------------------------------------------------------------------------------- pareto
def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Points not dominated by another (lower-or-equal cost and higher-or-equal score,
    one of them strictly). ``NaN`` points are never on the front."""
    x, y = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        front[i] = not dominated.any()
    return front


def top_trials(
    trials: pd.DataFrame, k: int = 5, metric: str = "best_val_acc", mode: str = "max"
) -> pd.DataFrame:
    """The ``k`` trials with the best validation ``metric`` (running ones included)."""
    scored = trials[trials[metric].notna()]
    return scored.sort_values(metric, ascending=mode == "min", kind="stable").head(k)


# ------------------------------------------------------------------------- several searches
def comparison_table(
    experiments: Mapping[str, pd.DataFrame],
    metric: str = "best_val_acc",
    mode: str = "max",
    value: str = "test_acc",
    by: str = "model",
) -> pd.DataFrame:
    """The same models across experiments (e.g. NWPU-RESISC45, UC-Merced, RSSCN7).

    Each experiment contributes its :func:`architecture_table` (each model at the
    configuration with the best validation ``metric`` in that experiment).

    Args:
        experiments: Experiment name -> trials table.
        metric: Validation column that chooses each model's configuration.
        mode: ``max`` or ``min`` for ``metric``.
        value: Displayed metric (``test_acc``).
        by: Column that names an architecture.

    Returns:
        One row per model (in any experiment); per experiment ``<name>_mean``,
        ``<name>_std`` and ``<name>_n`` (seeds) of ``value``; then ``mean`` (the mean of the
        experiments' means, where all are present) to order the rows, best first.
    """
    names = list(experiments)
    out = pd.DataFrame({by: pd.Series([], dtype=object)})
    for name in names:
        arch = architecture_table(experiments[name], metric, mode, by)
        part = pd.DataFrame(
            {
                by: arch[by].astype(object),
                f"{name}_mean": arch[f"{value}_mean"].astype(float),
                f"{name}_std": arch[f"{value}_std"].astype(float),
                f"{name}_n": arch["n"].astype(float),
            }
        )
        out = out.merge(part, on=by, how="outer")
    for name in names:
        out[f"{name}_n"] = out[f"{name}_n"].fillna(0).astype(int)
    means = out[[f"{n}_mean" for n in names]].astype(float)
    out["mean"] = means.mean(axis=1, skipna=False)
    out = out.sort_values(["mean", by], ascending=[False, True], na_position="last")
    return out.reset_index(drop=True)


def experiment_summary(
    experiments: Mapping[str, pd.DataFrame], metric: str = "best_val_acc", mode: str = "max"
) -> pd.DataFrame:
    """One row per experiment: dataset, classes, trials per status, and the best model.

    The best model is the first row of the experiment's :func:`architecture_table` (best
    validation ``metric``); ``test_acc`` is its chosen configuration's mean test accuracy.
    """
    rows = []
    for name, trials in experiments.items():
        finished = _finished(trials)
        counts = status_counts(trials).set_index("status")["trials"]
        dataset = finished["dataset"].dropna().astype(str).unique() if len(finished) else []
        classes = finished["class_names"].dropna() if "class_names" in finished.columns else []
        arch = architecture_table(trials, metric, mode)
        has_result = len(arch) and pd.notna(arch.loc[0, "val_mean"])
        rows.append(
            {
                "experiment": name,
                "dataset": ", ".join(dataset) or "—",
                "classes": len(classes.iloc[0]) if len(classes) else float("nan"),
                **{s: int(counts.get(s, 0)) for s in (*STATUSES, "total")},
                "best_model": arch.loc[0, "model"] if has_result else "—",
                "best_config": arch.loc[0, "config"] if has_result else "—",
                "test_acc": float(arch.loc[0, "test_acc_mean"]) if has_result else float("nan"),
                "val_mean": float(arch.loc[0, "val_mean"]) if has_result else float("nan"),
            }
        )
    return pd.DataFrame(rows)
