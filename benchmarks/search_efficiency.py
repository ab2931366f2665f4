"""Search efficiency: an exhaustive grid against Optuna TPE + ASHA on frozen features.

The space is lr x batch size x head x augmentation x weight decay (48 cells), frozen
resnet18 trials whose features come from the store (:mod:`trainables.features`), so a
trial costs a head fit. Every cell is trained once for ``--epochs`` epochs, recording its
validation accuracy and wall time per epoch. Trials are deterministic (fixed seed, the
same stored features and views), so a search that picks a cell gets exactly that curve:
TPE + ASHA is then run over the recorded curves instead of training the cells again: tuner's
searcher (:class:`tuner.tune.distinct.DistinctOptunaSearch`, which runs each cell once, with
the sampler options of :func:`tuner.tune.scale.tpe_sampler` and a sampler seed) driven as
Tune drives it, one trial after another, ``val_acc`` every epoch, with Optuna's
``SuccessiveHalvingPruner`` (ASHA) on its study; and the same with Ray's plain
``OptunaSearch``, which runs a repeated cell again.

Target: within ``--tolerance`` (0.5 points) of the grid's best validation accuracy. The
grid's cost is the epochs it spends, cells in a random order, until its first epoch at the
target; TPE + ASHA's the epochs its trials ran (pruned ones included) until the same. Both
are averaged over the sampler seeds (the grid's over as many random orders) and printed
with the wall time of those epochs and ``epochs ratio: N.NN`` (TPE + ASHA over grid;
target <= 1/3). A search that does not reach the target within the grid's total epochs (or
that has run every cell without reaching it) counts that total.

The trained curves can be saved (``--save-curves FILE``, JSON) and the comparison replayed
from them (``--curves FILE``: no training), e.g. with other seeds, tolerances or ASHA settings.

    python benchmarks/search_efficiency.py --weights /tmp/acc/source-resnet18.pt
    python benchmarks/search_efficiency.py --curves curves.json --seeds 10
    python benchmarks/search_efficiency.py --smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is a package of the project root
    sys.path.insert(0, str(ROOT))

from benchmarks.common import frozen_setup  # noqa: E402
from trainables.classify import Trial  # noqa: E402
from trainables.config import DataConfig, TrialConfig  # noqa: E402
from trainables.data.dataset import prepare  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "NWPU-RESISC12"
GRID = {
    "lr": (3e-4, 1e-3, 3e-3),
    "batch_size": (32, 128),
    "head": ("linear", "mlp"),
    "augmentation": ("none", "aerial"),
    "weight_decay": (0.0, 1e-3),
}


@dataclass
class Curve:
    """One cell's validation accuracy and wall seconds per epoch."""

    cell: dict
    val_acc: list[float]
    seconds: list[float]


def cells(grid: dict[str, tuple] = GRID) -> list[dict]:
    """Every combination of the grid."""
    return [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]


def train_curves(cells_: list[dict], base: dict, data: DataConfig, threads: int) -> list[Curve]:
    """Train every cell (features through the store); its per-epoch figures."""
    curves = []
    prepared = {}
    for cell in cells_:
        aug = cell["augmentation"]
        prepared.setdefault(aug, prepare(data, aug))
        start = time.perf_counter()
        cfg = TrialConfig(data=data, **base, **cell, num_threads=threads)
        rows: list[dict] = []
        trial = Trial(cfg, prepared[aug], log=lambda _: None)
        build = time.perf_counter() - start
        trial.fit(None, lambda m, d, rows=rows: rows.append(m))
        seconds = [r["epoch_time_s"] + (r["feature_time_s"] or 0.0) for r in rows]
        seconds[0] += build
        curves.append(Curve(cell, [r["val_acc"] for r in rows], seconds))
    return curves


def grid_cost(curves: list[Curve], target: float, order_seed: int) -> tuple[int, float, bool]:
    """(epochs, seconds, reached) of the grid in a random order until its first epoch at
    ``target``."""
    order = list(range(len(curves)))
    random.Random(order_seed).shuffle(order)
    epochs, seconds = 0, 0.0
    for i in order:
        for acc, sec in zip(curves[i].val_acc, curves[i].seconds, strict=True):
            epochs, seconds = epochs + 1, seconds + sec
            if acc >= target:
                return epochs, seconds, True
    return epochs, seconds, False


def tpe_asha_cost(
    curves: list[Curve], target: float, seed: int, grace: int, eta: int, distinct: bool = True
) -> tuple[int, float, bool]:
    """(epochs, seconds, reached) of TPE + ASHA over the recorded curves.

    The searcher is tuner's (:class:`~tuner.tune.distinct.DistinctOptunaSearch`, or Ray's
    plain ``OptunaSearch`` with ``distinct=False``), with the sampler options of tuner's
    searches, driven as Tune drives it: one trial at a time, a result per epoch, the last
    result told when a trial ends. ASHA is Optuna's successive-halving pruner on the
    searcher's study.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tuner.tune.distinct import DistinctOptunaSearch
    from tuner.tune.scale import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_cell = {tuple(c.cell.values()): c for c in curves}
    names = list(curves[0].cell)
    choices = {n: list(dict.fromkeys(c.cell[n] for c in curves)) for n in names}

    def space(trial) -> None:
        for name in names:
            trial.suggest_categorical(name, choices[name])

    kind, extra = (DistinctOptunaSearch, {"draw_seed": seed}) if distinct else (OptunaSearch, {})
    search = kind(space, metric="val_acc", mode="max", sampler=tpe_sampler(seed), **extra)
    search._ot_study.pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=grace, reduction_factor=eta
    )
    budget = sum(len(c.val_acc) for c in curves)
    never = budget, sum(sum(c.seconds) for c in curves), False  # counts the whole grid
    epochs, seconds = 0, 0.0
    for i in itertools.count():
        config = search.suggest(f"t{i}")
        if not isinstance(config, dict):  # every cell has run
            return never
        curve = by_cell[tuple(config[n] for n in names)]
        result: dict = {}
        for epoch, (acc, sec) in enumerate(zip(curve.val_acc, curve.seconds, strict=True), 1):
            epochs, seconds = epochs + 1, seconds + sec
            if acc >= target:
                return epochs, seconds, True
            if epochs >= budget:
                return never
            result = {"val_acc": acc, "training_iteration": epoch}
            search.on_trial_result(f"t{i}", result)
            if search._ot_trials[f"t{i}"].should_prune():
                break
        search.on_trial_complete(f"t{i}", result)
    raise AssertionError("unreachable")


def trained(args) -> tuple[str, list[Curve]]:
    """Train every grid cell (or load the curves of ``--curves``); (setup line, curves)."""
    if args.curves:
        saved = json.loads(Path(args.curves).read_text())
        return saved["setup"], [Curve(**c) for c in saved["curves"]]
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        data, model, weights = frozen_setup(args, Path(tmp), smoke_epochs=3)
        base = {"model": model, "transfer": "frozen", "weights": weights, "epochs": args.epochs}
        grid = cells({**GRID, "lr": tuple(args.lr)})
        start = time.perf_counter()
        curves = train_curves(grid, base, data, args.threads)
        seconds = time.perf_counter() - start
    setup = (
        f"{model} frozen at {data.image_size} px, {len(grid)} grid cells (lr "
        f"{'/'.join(f'{lr:g}' for lr in args.lr)} x batch x head x augmentation x weight "
        f"decay) x {args.epochs} epochs, trained in {seconds:.0f} s "
        "(features through the store)"
    )
    if args.save_curves:
        saved = {"setup": setup, "curves": [dataclasses.asdict(c) for c in curves]}
        Path(args.save_curves).write_text(json.dumps(saved, indent=1))
    return setup, curves


def at_target(curves: list[Curve], target: float) -> list[tuple[dict, int]]:
    """The cells that reach ``target``, with the first epoch at which they do."""
    return [
        (c.cell, next(e for e, a in enumerate(c.val_acc, 1) if a >= target))
        for c in curves
        if max(c.val_acc) >= target
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="dataset folder")
    p.add_argument("--classes", nargs="+", help="a subset of the classes (default: all)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--weights", help="checkpoint of the frozen backbone (required unless --smoke)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, nargs="+", default=GRID["lr"], help="the grid's lrs")
    p.add_argument("--grace", type=int, default=2, help="ASHA's grace period (epochs)")
    p.add_argument("--eta", type=int, default=3, help="ASHA's reduction factor")
    p.add_argument("--tolerance", type=float, default=0.005, help="below the grid's best")
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds (and grid orders)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--smoke", action="store_true", help="tiny generated data and model")
    p.add_argument("--save-curves", help="write the trained curves to this JSON file")
    p.add_argument("--curves", help="replay the curves of this JSON file (no training)")
    args = p.parse_args(argv)
    if not (args.smoke or args.weights or args.curves):
        p.error("--weights: a checkpoint file is required (ImageNet weights may be offline)")
    setup, curves = trained(args)
    best = max(max(c.val_acc) for c in curves)
    target = best - args.tolerance
    total = sum(len(c.val_acc) for c in curves)
    print(f"{setup}; grid best val acc {best:.4f}, target {target:.4f}")
    reached = at_target(curves, target)
    print(
        f"cells at the target: {len(reached)} of {len(curves)} (first epoch at it: "
        + ", ".join(str(e) for _, e in reached)
        + ")"
    )
    grid_runs = [grid_cost(curves, target, seed) for seed in range(args.seeds)]
    tpe_runs = [
        tpe_asha_cost(curves, target, seed, args.grace, args.eta) for seed in range(args.seeds)
    ]
    repeat_runs = [
        tpe_asha_cost(curves, target, seed, args.grace, args.eta, distinct=False)
        for seed in range(args.seeds)
    ]
    for name, runs in (
        ("grid", grid_runs),
        ("TPE + ASHA", tpe_runs),
        ("  repeats", repeat_runs),
    ):
        detail = ", ".join(f"{e}{'' if ok else ' (not reached)'}" for e, _, ok in runs)
        print(
            f"{name:>10}: {statistics.mean(e for e, _, _ in runs):.1f} epochs, "
            f"{statistics.mean(s for _, s, _ in runs):.1f} s to the target (per seed: {detail}; "
            f"the whole grid: {total} epochs)"
        )
    grid_epochs = statistics.mean(e for e, _, _ in grid_runs)
    tpe_epochs = statistics.mean(e for e, _, _ in tpe_runs)
    repeat_epochs = statistics.mean(e for e, _, _ in repeat_runs)
    print(
        f"epochs ratio: {tpe_epochs / grid_epochs:.2f} (TPE + ASHA over grid, mean of "
        f"{args.seeds} seeds; target <= 0.33; with Ray's plain OptunaSearch, which runs "
        f"repeated cells again: {repeat_epochs / grid_epochs:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
