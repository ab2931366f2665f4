"""``--smoke``: a run that checks a set-up in minutes before the long search.

A smoke run exists to find out, before hours of GPU time, whether every kind of trial the
spec describes builds, loads its weights, trains, checkpoints, is tested, and lands in the
tables and the report. :func:`smoke_spec` turns a spec into that run:

* every distinct cell kind once: the full grid of the factors (:data:`FACTORS`: model,
  transfer, weights, augmentation, head), exclusions kept, one seed;
* no retries of a failed trial (``search.max_failures: 0``): its error shows at once;
* every other hyperparameter at one value (the first choice; the middle of a range, the
  geometric middle of a log range), conditions kept;
* :data:`EPOCHS` epoch of :data:`MAX_BATCHES` batches per split, no early stopping (every
  trial is tested, so every table and report section has rows); the pretraining stage one
  epoch of as many batches. One epoch writes one checkpoint per trial, which is what
  costs most in a smoke run of big models (vgg16's, with Adam's state, is 1.6 GB);
* on CPUs only, images of :data:`IMAGE_SIZE` px (or the smallest size a model of the spec
  accepts) and batches of at most :data:`BATCH_SIZE`: a convolution costs (224 / 64)^2 = 12
  times more at 224 px. With GPUs the spec's image size and its largest batch size are
  kept, so the smoke run also shows whether a batch fits in GPU memory;
* results under ``<experiment>_smoke`` (unless ``--name`` names them), so the real
  experiment's folder stays empty for the real run.

Every reduction is listed for the user (:attr:`Smoke.reductions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tuner.spec import FACTOR_NAMES, Param, Spec, grid_cells, validate

FACTORS = FACTOR_NAMES
EPOCHS = 1
MAX_BATCHES = 2
IMAGE_SIZE = 64
BATCH_SIZE = 8
SUFFIX = "_smoke"


@dataclass
class Smoke:
    """A smoke run: the reduced spec, what was reduced, and the batches per split."""

    spec: Spec
    reductions: list[str] = field(default_factory=list)
    max_batches: int = MAX_BATCHES


def _one_value(p: Param, *, largest: bool = False):
    """The single value a smoke run gives a non-factor parameter."""
    if p.kind in ("fixed", "choice"):
        return max(p.values) if largest else p.values[0]
    low, high = p.values
    middle = math.sqrt(low * high) if p.kind.startswith("log") else (low + high) / 2
    return round(middle) if p.kind in ("int", "logint") else middle


def _raw(p: Param, value):
    """The spec entry of a parameter reduced to ``value`` (its condition kept)."""
    if not p.when:
        return value
    return {"values": [value], "when": {k: list(v) for k, v in p.when.items()}}


def _show(p: Param) -> str:
    if p.kind == "fixed":
        return repr(p.values[0])
    if p.kind == "choice":
        return repr(list(p.values))
    return f"{p.kind} {list(p.values)}"


def _trials(spec: Spec) -> str:
    s = spec.search
    if s.algorithm == "grid":
        return f"grid of {len(grid_cells(spec))} trials"
    return f"optuna, {s.num_samples} trials"


def smoke_spec(spec: Spec, *, gpu: bool, rename: bool = True) -> Smoke:
    """The smoke run of ``spec`` (see the module docstring).

    Args:
        spec: The validated spec.
        gpu: Trials will run on GPUs (keep the image size and the largest batch size).
        rename: Add :data:`SUFFIX` to the experiment name.
    """
    raw = spec.model_dump(mode="json", exclude_none=True)
    notes = _reduce_parameters(spec, raw, gpu)
    seeds = spec.search.seed_list[:1]
    notes += _reduce_search(spec, raw, seeds)
    notes += _reduce_data(spec, raw, gpu)
    if rename:
        raw["experiment"] = f"{spec.experiment[: 100 - len(SUFFIX)]}{SUFFIX}"
        notes.insert(
            0,
            f"experiment: {spec.experiment} -> {raw['experiment']} (the real run's folder "
            "stays empty)",
        )
    smoke = validate(raw, check_data=False)
    factors = ", ".join(f for f in FACTORS if f in {p.name for p in spec.params})
    notes.insert(
        1 if rename else 0,
        f"search: {_trials(spec)} -> grid of {len(grid_cells(smoke))} trials, each kind of "
        f"cell ({factors}) once, seed {seeds[0]}",
    )
    notes.append(f"every epoch: at most {MAX_BATCHES} batches per split")
    return Smoke(spec=smoke, reductions=notes)


def _reduce_parameters(spec: Spec, raw: dict, gpu: bool) -> list[str]:
    """Every non-factor parameter of ``raw`` to one value, few epochs, small batches."""
    notes: list[str] = []
    by_name = {p.name: p for p in spec.params}
    sections = {
        "factors": dict(raw.get("factors", {})),
        "hyperparameters": dict(raw.get("hyperparameters", {})),
    }
    for section, entries in sections.items():
        for name in list(entries):
            p = by_name[name]
            if name in FACTORS:
                continue
            if name == "epochs":
                value = min(EPOCHS, int(min(p.values)))
            elif name == "batch_size":
                value = _one_value(p, largest=gpu)
                value = value if gpu else min(value, BATCH_SIZE)
            else:
                value = _one_value(p)
            if p.kind in ("fixed", "choice") and p.values == (value,):
                continue
            entries[name] = _raw(p, value)
            notes.append(f"{section}.{name}: {_show(p)} -> {value!r}")
    raw.update(sections)
    if "epochs" not in by_name:
        raw["hyperparameters"]["epochs"] = EPOCHS
        notes.append(f"hyperparameters.epochs: {spec.max_epochs} (default) -> {EPOCHS}")
    if not gpu and "batch_size" not in by_name:
        raw["hyperparameters"]["batch_size"] = BATCH_SIZE
        notes.append(f"hyperparameters.batch_size: default -> {BATCH_SIZE}")
    return notes


def _reduce_search(spec: Spec, raw: dict, seeds: list[int]) -> list[str]:
    """A grid over one seed, no retries, no early stopping."""
    notes: list[str] = []
    raw["search"] = {
        **raw["search"],
        "algorithm": "grid",
        "seeds": seeds,
        "points": [],
        "max_failures": 0,
    }
    raw["search"].pop("num_samples", None)
    if spec.search.max_failures:
        notes.append(
            f"search.max_failures: {spec.search.max_failures} -> 0 (a failure shows at once)"
        )
    if spec.scheduler.type != "none":
        notes.append(f"scheduler: {spec.scheduler.type} -> none (every trial runs to its test)")
    raw["scheduler"] = {"type": "none"}
    return notes


def _reduce_data(spec: Spec, raw: dict, gpu: bool) -> list[str]:
    """Smaller images without a GPU; a one-epoch pretraining stage."""
    from trainables.models import min_image_size

    notes: list[str] = []
    if spec.dataset is not None and not gpu:
        by_name = {p.name: p for p in spec.params}
        models = by_name["model"].values if "model" in by_name else ("resnet18",)
        size = max(IMAGE_SIZE, *(min_image_size(str(m)) for m in models))
        if size < spec.dataset.image_size:
            raw["dataset"]["image_size"] = size
            notes.append(
                f"dataset.image_size: {spec.dataset.image_size} -> {size} px (no GPU: a CPU "
                "smoke run checks the set-up, not the speed; with GPUs the size is kept)"
            )
    if spec.pretrain is not None:
        raw["pretrain"]["epochs"] = 1
        notes.append(
            f"pretrain: {spec.pretrain.epochs} epochs -> 1 of {MAX_BATCHES} batches "
            "(its checkpoints are kept apart from the full stage's)"
        )
    return notes
