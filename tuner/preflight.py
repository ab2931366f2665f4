"""What a search checks before Ray starts: the weights its trials read, and that a trial fits.

A trial that cannot start, or that dies on its first line, should not cost a user a Ray
start-up, a queue of trials and a traceback to find out. Two checks run in the driver first:

* **Weights** (:func:`check_weights`): every ``(model, weights)`` pair the spec can produce
  (grid cells, or Optuna's choices) is resolved once. ImageNet weights missing from torch
  hub's cache are downloaded there once, with progress, instead of by every trial at the
  same time; without a network the run stops naming each missing file once, its URL and
  the folder to put it in. A checkpoint path must load with ``weights_only=True`` and fit
  the model's backbone (missing / unexpected keys named).
* **Resources** (:func:`resource_shortfall`): a local Ray that cannot hold one trial's
  CPUs and GPUs would leave the search pending forever; the run stops with the numbers and
  the fix. A cluster may grow (autoscaler), so there the search waits and the live view
  says for what (:class:`tuner.live.LiveView`).

Problems are returned as text lines; the CLI prints them and exits with status 2 before
anything is created.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from urllib.error import URLError

from trainables.config import TrialConfig
from tuner.spec import Spec, grid_cells, normalize_cell

#: ``weights`` values that need no file check here (``pretrain``: made by the pretraining stage).
NO_FILE = (None, "none", "pretrain")


def _choices(spec: Spec, name: str) -> tuple:
    """The values a categorical parameter takes (its default when the spec does not set it)."""
    p = next((p for p in spec.params if p.name == name), None)
    if p is None:
        return (TrialConfig.model_fields[name].default,)
    return p.values


def weight_pairs(spec: Spec) -> list[tuple[str, str]]:
    """Every ``(model, weights)`` pair a trial of ``spec`` can build with weights to read.

    Grid searches give their exact cells; Optuna searches every combination of the
    ``model``, ``transfer`` and ``weights`` choices (a conditional ``weights`` counts where
    its condition on these three can hold). ``scratch`` cells, ``none`` and ``pretrain``
    weights read no file and are left out.
    """
    if spec.trainable != "classify":
        return []
    if spec.search.algorithm == "grid":
        cells = grid_cells(spec)
    else:
        weights = next((p for p in spec.params if p.name == "weights"), None)
        cells = []
        for model, transfer, w in itertools.product(
            _choices(spec, "model"), _choices(spec, "transfer"), _choices(spec, "weights")
        ):
            cell = {"model": model, "transfer": transfer, "weights": w}
            known = weights is None or all(k in cell for k in weights.when)
            if weights is not None and known and not weights.applies(cell):
                cell["weights"] = None
            cells.append(normalize_cell(cell))
    pairs = {
        (str(c["model"]), str(c["weights"]))
        for c in cells
        if c.get("transfer") != "scratch" and c.get("weights") not in NO_FILE
    }
    return sorted(pairs)


def check_weights(
    spec: Spec, *, download: bool = True, log: Callable[[str], None] = print
) -> list[str]:
    """Resolve every weights file the spec's trials read; download missing ImageNet files.

    Args:
        spec: The validated spec.
        download: Fetch ImageNet files missing from torch hub's cache (once each, with
            progress on stderr). The first failure to connect ends the attempts: the
            remaining files are reported as missing without waiting for each.
        log: Where progress lines go.

    Returns:
        Problems, one message per line group (empty: every pair can be built).
    """
    from trainables.models import (
        ImagenetFile,
        check_weights_file,
        download_imagenet_file,
        imagenet_file,
    )

    problems: list[str] = []
    needed: dict[str, tuple[ImagenetFile, list[str]]] = {}
    image_size = spec.dataset.image_size if spec.dataset else 224
    for model, weights in weight_pairs(spec):
        try:
            file = imagenet_file(model, weights)
        except ValueError as err:
            problems.append(f"factors.weights: {weights!r} for model {model!r}: {err}")
            continue
        if file is None:
            try:
                check_weights_file(model, weights, image_size=image_size)
            except (OSError, ValueError) as err:
                problems.append(f"factors.weights: {weights!r} for model {model!r}: {err}")
            continue
        if not file.path.is_file():
            needed.setdefault(str(file.path), (file, []))[1].append(model)
    missing: list[tuple[ImagenetFile, list[str]]] = []
    failure = "" if download else "downloads are off"
    for file, models in needed.values():
        if failure:
            missing.append((file, models))
            continue
        log(f"weights: downloading {file.url} -> {file.path} (once; trials read the cache)")
        try:
            download_imagenet_file(file)
        except (URLError, OSError, RuntimeError) as err:
            failure = f"{type(err).__name__}: {err}"
            missing.append((file, models))
    if missing:
        folders = sorted({str(f.path.parent) for f, _ in missing})
        lines = [
            f"ImageNet weights: {len(missing)} file(s) are not in torch hub's cache and could "
            f"not be downloaded ({failure}):"
        ]
        lines += [
            f"  {f.path.name}  for {', '.join(models)}  from {f.url}" for f, models in missing
        ]
        lines.append(
            f"download each on a machine with internet and put it in {' or '.join(folders)} "
            "(or set TORCH_HOME to a folder whose hub/checkpoints/ holds them); or train from "
            "scratch with --set factors.weights=none --set factors.transfer=scratch"
        )
        problems.append("\n".join(lines))
    return problems


def resource_shortfall(cpu: float, gpu: float, resources: dict) -> str | None:
    """Why one trial's request cannot fit a local Ray, with the fix; ``None`` if it fits.

    Args:
        cpu: CPUs one trial asks for (after packing).
        gpu: GPU share one trial asks for (after packing).
        resources: What Ray has (``CPU``, ``GPU``); without ``GPU`` (not known before Ray
            starts) only the CPUs are checked.
    """
    have_cpu, have_gpu = float(resources.get("CPU", 0)), resources.get("GPU")
    gpu_short = have_gpu is not None and gpu > float(have_gpu)
    if cpu <= have_cpu and not gpu_short:
        return None
    fixes = ["--laptop (packs trials onto this machine)"]
    if cpu > have_cpu:
        fixes.append(f"--set resources.cpu={max(int(have_cpu), 1)}")
    if gpu_short:
        fixes.append(f"--set resources.gpu={float(have_gpu):g}")
    asks, has = f"cpu {cpu:g}", f"{have_cpu:g} CPUs"
    if have_gpu is not None:
        asks, has = f"{asks} / gpu {gpu:g}", f"{has}, {float(have_gpu):g} GPUs"
    return (
        f"a trial asks for {asks} (the spec's resources), but this machine's Ray has {has}: "
        f"no trial could ever start. Run with {' or '.join(fixes)}"
    )
