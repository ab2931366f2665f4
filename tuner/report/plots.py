"""The report's plots: matplotlib figures rendered with the Agg canvas to PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so
rendering never touches a GUI backend or global state and is safe from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from trainables.numbers import si
from tuner.report.tables import config_labels, pareto_front

DPI = 110
#: Colour cycle (matplotlib's tab10) keyed by model name, in sorted order.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(names)))}


def pareto_png(trials: pd.DataFrame) -> bytes:
    """Accuracy vs MACs (log x), coloured by model, with the Pareto front drawn.

    The y value is ``test_acc``; trials without one (stopped early, failed) are drawn as
    hollow markers at their ``best_val_acc`` and labelled so. The front (fewest MACs for
    the accuracy) is computed over the test points when there are any, else over the
    validation points, and its points are annotated with their model.
    """
    data = trials[trials["macs"].notna() & trials["best_val_acc"].notna()].copy()
    data["macs"] = data["macs"].astype(float)
    has_test = data["test_acc"].notna()
    data["y"] = np.where(has_test, data["test_acc"].astype(float), data["best_val_acc"])
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    colors = _colors(data["model"].astype(str))
    rng = np.random.default_rng(0)
    # Trials of one model share their MACs: a small log-x jitter keeps them apart.
    data["x"] = data["macs"] * 10 ** rng.uniform(-0.02, 0.02, len(data))
    for model, color in colors.items():
        mine = data["model"].astype(str) == model
        for test, filled in ((True, True), (False, False)):
            sel = mine & (has_test == test)
            if sel.any():
                ax.scatter(
                    data.loc[sel, "x"],
                    100 * data.loc[sel, "y"],
                    s=46,
                    marker="o",
                    facecolors=color if filled else "none",
                    edgecolors=color,
                    linewidths=1.4,
                    label=f"{model}" + ("" if test else " (no test: validation)"),
                    zorder=3,
                )
    basis = data[has_test] if has_test.any() else data
    front = basis[pareto_front(basis["macs"], basis["y"])].sort_values("macs")
    if len(front):
        right = data["macs"].max() * 2
        ax.step(
            [*front["x"], right],
            [*(100 * front["y"]), 100 * front["y"].iloc[-1]],
            where="post",
            color="black",
            linewidth=1.1,
            linestyle="--",
            zorder=2,
        )
        ax.scatter(
            front["x"],
            100 * front["y"],
            s=150,
            facecolors="none",
            edgecolors="black",
            linewidths=1.2,
            label="Pareto front" + ("" if has_test.any() else " (validation)"),
            zorder=4,
        )
        for _, row in front.iterrows():
            ax.annotate(
                str(row["model"]),
                (row["x"], 100 * row["y"]),
                xytext=(8, 6),
                textcoords="offset points",
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(lambda v, _pos: si(v, 3))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("MACs per image (log scale)")
    ax.set_ylabel(
        "accuracy (%): test (filled), validation (hollow)"
        if has_test.any()
        else "validation accuracy (%)"
    )
    ax.set_title("Accuracy vs compute")
    ax.grid(True, which="both", alpha=0.3)
    if len(data):
        lo, hi = data["macs"].min(), data["macs"].max()
        ax.set_xlim(lo / 2, hi * 2)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return to_png(fig)


def curves_png(epochs: pd.DataFrame, top: pd.DataFrame, label_columns: Sequence[str]) -> bytes:
    """Validation accuracy and loss per epoch of the ``top`` trials (best first)."""
    fig = Figure(figsize=(10, 4.2))
    acc_ax, loss_ax = fig.subplots(1, 2)
    labels = config_labels(top, [c for c in label_columns if c in top.columns])
    for i, (_, trial) in enumerate(top.iterrows()):
        rows = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        color = PALETTE[i % len(PALETTE)]
        status = trial.get("status")
        if status == "running":
            label = f"#{i + 1} trial {trial['trial_id']} [running]"
        else:
            label = f"#{i + 1} {labels.loc[trial.name]}"
            label += f" [{status}]" if isinstance(status, str) and status != "completed" else ""
        acc_ax.plot(rows["epoch"], 100 * rows["val_acc"], "o-", color=color, ms=3.5, label=label)
        loss_ax.plot(rows["epoch"], rows["val_loss"], "o-", color=color, ms=3.5)
        best = trial.get("best_epoch")
        if best is not None and not pd.isna(best):
            at = rows[rows["epoch"] == best]
            acc_ax.scatter(at["epoch"], 100 * at["val_acc"], s=90, marker="*", color=color)
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy")
    loss_ax.set(xlabel="epoch", ylabel="validation loss", title="Validation loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    star = acc_ax.scatter([], [], s=90, marker="*", color="#555", label="best-validation epoch")
    fig.legend(
        [*acc_ax.get_lines(), star],
        [*(line.get_label() for line in acc_ax.get_lines()), "best-validation epoch"],
        loc="upper center",
        ncol=1,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    return to_png(fig)


def rungs_png(rungs: pd.DataFrame) -> bytes:
    """Bar chart: trials that reached each ASHA rung (from :func:`tables.asha_rungs`)."""
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    names = [
        f"{r}\n({e:g} ep.)" if r != "start" else "started"
        for r, e in zip(rungs["rung"], rungs["epochs"], strict=True)
    ]
    bars = ax.bar(names, rungs["trials"], color="#4c72b0", width=0.6)
    for bar, n, frac in zip(bars, rungs["trials"], rungs["fraction"], strict=True):
        ax.annotate(
            f"{n} ({100 * frac:.0f}%)" if not pd.isna(frac) else str(n),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=9,
        )
    ax.set_ylabel("trials reaching the rung")
    ax.set_title("ASHA: trials kept at each rung")
    ax.set_ylim(0, max(1, rungs["trials"].max()) * 1.18)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, axis="y", alpha=0.3)
    return to_png(fig)


def confusion_png(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> bytes:
    """Confusion matrix (rows: true class, columns: predicted), coloured by row share."""
    counts = np.asarray([list(r) for r in matrix], dtype=float)
    k = len(counts)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.55 * k + 2.5)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{counts[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8 if k <= 15 else 6,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    names = list(class_names)[:k] if class_names is not None else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    return to_png(fig)


def importance_png(table: pd.DataFrame, names: dict[str, str] | None = None) -> bytes:
    """Horizontal bars: each evaluator's importance per parameter (``names``: legend)."""
    evaluators = [c for c in table.columns if c != "parameter"]
    params = list(table["parameter"])[::-1]
    fig = Figure(figsize=(6.5, 0.5 * len(params) + 1.6))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(evaluators))
    for i, name in enumerate(evaluators):
        values = table[name].to_numpy()[::-1]
        ax.barh(
            np.arange(len(params)) + (i - (len(evaluators) - 1) / 2) * height,
            values,
            height=height,
            color=PALETTE[i],
            label=(names or {}).get(name, name),
        )
    ax.set_yticks(range(len(params)), params)
    ax.set_xlabel("importance (normalised)")
    ax.set_xlim(0, 1)
    ax.set_title("Which parameters mattered (validation metric)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return to_png(fig)


def _grouped_bars(ax, x: np.ndarray, series: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Bars per group and series, ``±std`` whiskers where defined, ``n/a`` where missing."""
    width = 0.8 / max(1, len(series))
    for i, (label, means, stds) in enumerate(series):
        pos = x + (i - (len(series) - 1) / 2) * width
        color = PALETTE[i % len(PALETTE)]
        ax.bar(pos, np.nan_to_num(means), width=width, color=color, label=label)
        whisker = ~np.isnan(means) & ~np.isnan(stds)
        if whisker.any():
            ax.errorbar(
                pos[whisker], means[whisker], yerr=stds[whisker], fmt="none", ecolor="black",
                capsize=3, linewidth=1,
            )  # fmt: skip
        for p, m in zip(pos, means, strict=True):
            if np.isnan(m):
                ax.text(p, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7,
                        color="#666")  # fmt: skip


def _mean_std_bars(
    table: pd.DataFrame,
    keys: Sequence[str],
    by: str,
    *,
    ylabel: str,
    title: str,
    subtitle: str,
    width_per_group: float,
) -> bytes:
    """Grouped bars of ``<key>_mean`` ± ``<key>_std`` (fractions, shown in %) per ``by`` row."""
    groups = list(table[by])
    fig = Figure(figsize=(max(6.5, width_per_group * len(groups) + 3), 4.2))
    ax = fig.add_subplot()
    series = [
        (
            key,
            100 * table[f"{key}_mean"].astype(float).to_numpy(),
            100 * table[f"{key}_std"].astype(float).to_numpy(),
        )
        for key in keys
    ]
    _grouped_bars(ax, np.arange(len(groups)), series)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=11, pad=16)
    ax.text(
        0.5, 1.005, subtitle, transform=ax.transAxes, ha="center", va="bottom", fontsize=8,
        color="#555",
    )  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(5, len(keys)), loc="upper left")
    return to_png(fig)


def factor_png(table: pd.DataFrame, by: str = "model", ylabel: str = "test accuracy (%)") -> bytes:
    """Grouped bars: the metric per model under each factor condition, with ±std whiskers."""
    conditions = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    return _mean_std_bars(
        table, conditions, by, ylabel=ylabel, title="Training factors per model",
        subtitle="mean ± std over the other factors and seeds", width_per_group=1.8,
    )  # fmt: skip


def comparison_png(table: pd.DataFrame, names: Sequence[str], by: str = "model") -> bytes:
    """Grouped bars: each model's test accuracy in each experiment (±std over seeds)."""
    return _mean_std_bars(
        table, names, by, ylabel="test accuracy (%)", title="Models across experiments",
        subtitle="each at its best-validation configuration; ± std over seeds",
        width_per_group=1.5,
    )  # fmt: skip
