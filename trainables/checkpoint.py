"""A trial's checkpoint folder: ``checkpoint.pt`` to resume, ``best.pt`` to use.

``checkpoint.pt`` holds what continuing needs: the trained weights (only the head for a
frozen trial: :func:`trainables.features.trained_state`), the optimiser and schedule, the
epoch, the history of reported results, the best epoch so far and the random states.
``best.pt`` holds the best-validation weights and their figures. Both carry the metadata a
later reader needs without the spec (:func:`metadata`), and both are written atomically.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from trainables.features import load_trained_state, trained_state

if TYPE_CHECKING:
    from trainables.classify import Trial

CHECKPOINT, BEST = "checkpoint.pt", "best.pt"


def atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def metadata(trial: Trial) -> dict:
    """Model name, input normalisation, class names, split hash and the whole config."""
    mean, std = trial.model.normalization
    return {
        "model_name": trial.cfg.model,
        "normalization": [list(mean), list(std)],
        "class_names": list(trial.data.class_names),
        "split_hash": trial.data.split_hash,
        "config": trial.cfg.model_dump(mode="json"),
    }


def save(trial: Trial, directory: Path) -> None:
    """Write ``checkpoint.pt`` and, when the best epoch is new or missing, ``best.pt``."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        **metadata(trial),
        **trained_state(trial.model, trial.cfg.weights),
        "optimizer": trial.optimizer.state_dict(),
        "scheduler": trial.scheduler.state_dict(),
        "epoch": trial.epoch,
        "history": trial.history,
        "best": trial.best,
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    atomic_save(state, directory / CHECKPOINT)
    if trial.best_state is not None and (
        trial.best["epoch"] == trial.epoch or not (directory / BEST).is_file()
    ):
        best = {**metadata(trial), "model": trial.best_state, **trial.best}
        atomic_save(best, directory / BEST)


def restore(trial: Trial, directory: Path) -> None:
    """Put a trial back in the state :func:`save` wrote to ``directory``."""
    device = trial.arithmetic.device
    state = torch.load(directory / CHECKPOINT, map_location=device, weights_only=True)
    load_trained_state(trial.model, trial.cfg.weights, state, directory / CHECKPOINT)
    trial.optimizer.load_state_dict(state["optimizer"])
    trial.scheduler.load_state_dict(state["scheduler"])
    trial.epoch, trial.history, trial.best = state["epoch"], state["history"], state["best"]
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    if (directory / BEST).is_file():
        best = torch.load(directory / BEST, map_location="cpu", weights_only=True)
        trial.best_state = best["model"]
