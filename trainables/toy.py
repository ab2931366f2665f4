"""An analytic trainable: the search machinery's test double (like Ray's ``optuna_example``).

Its validation accuracy is a smooth function of ``lr`` and ``batch_size`` that rises with
the epochs, plus seeded noise, so Optuna has something to optimise and ASHA something to
stop, in milliseconds per epoch. Each epoch sleeps ``TUNER_TOY_EPOCH_S`` seconds (default
0.02) to stand for work. It checkpoints and resumes like the real trainable.

Fault-injection switches for the cluster tests (unset: the toy behaves as above):

* ``TUNER_TOY_CRASH_AT=E`` with ``TUNER_TOY_CRASH_DIR=DIR``: each trial raises once, right
  after reporting (and checkpointing) epoch ``E``; a marker file in ``DIR`` makes the retry
  run through.
* ``TUNER_TOY_TRACE=FILE``: append one JSON line per epoch actually run (configuration key,
  epoch, time, pid), so a test can count epochs that were run twice.

A configuration with ``lr >= 1`` fails at its start, every time (a diverging run), so a
search can hold failed trials.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

ReportFn = Callable[[dict, Path], None]


def score(lr: float, batch_size: int, epoch: int, seed: int) -> float:
    """Validation accuracy after ``epoch`` epochs: best near lr=1e-3, batch_size=32."""
    quality = math.exp(-((math.log10(lr) + 3) ** 2) / 2) * math.exp(
        -((math.log2(batch_size) - 5) ** 2) / 8
    )
    noise = random.Random(seed * 1000 + epoch).gauss(0, 0.01)
    return max(0.0, min(1.0, 0.1 + 0.85 * quality * (1 - math.exp(-epoch / 3)) + noise))


def trial_key(params: dict) -> str:
    """A short stable key of a configuration (names fault-injection markers and traces)."""
    text = json.dumps({k: params[k] for k in sorted(params)}, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _trace(path: str, key: str, epoch: int) -> None:
    line = json.dumps({"key": key, "epoch": epoch, "time": time.time(), "pid": os.getpid()})
    with open(path, "a") as f:
        f.write(line + "\n")


def _crash_once(key: str, epoch: int) -> None:
    at, folder = os.environ.get("TUNER_TOY_CRASH_AT"), os.environ.get("TUNER_TOY_CRASH_DIR")
    if not at or not folder or epoch != int(at):
        return
    marker = Path(folder) / f"{key}.crashed"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(epoch))
    raise RuntimeError(f"toy: injected crash after epoch {epoch} (TUNER_TOY_CRASH_AT)")


def run_trial(
    params: dict,
    *,
    data=None,
    report: ReportFn,
    checkpoint_dir: Path,
    resume: bool,
    num_threads: int | None = None,
    pretrained: dict[str, str] | None = None,
    max_batches: int | None = None,
    cpu_pool: float | None = None,
) -> dict:
    """Run the toy; same signature as :func:`trainables.classify.run_trial`.

    The toy sleeps instead of computing, so ``num_threads`` and ``cpu_pool`` change nothing.
    """
    lr = float(params.get("lr") or 1e-3)
    batch_size = int(params.get("batch_size") or 32)
    epochs = int(params.get("epochs") or 10)
    seed = int(params.get("seed") or 0)
    sleep = float(os.environ.get("TUNER_TOY_EPOCH_S", "0.02"))
    trace = os.environ.get("TUNER_TOY_TRACE")
    if lr >= 1:
        raise ValueError(f"toy: lr={lr:g} diverges; the toy trains with lr < 1")
    key = trial_key(params)
    state_file = checkpoint_dir / "toy.json"
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0}
    if resume and state_file.is_file():
        state = json.loads(state_file.read_text())
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    while state["epoch"] < epochs:
        time.sleep(sleep)
        state["epoch"] += 1
        acc = score(lr, batch_size, state["epoch"], seed)
        if acc > state["best"]:
            state["best"], state["best_epoch"] = acc, state["epoch"]
        state_file.write_text(json.dumps(state))
        metrics = {
            "epoch": state["epoch"],
            "train_loss": 1 - acc,
            "train_acc": acc,
            "val_loss": 1 - acc,
            "val_acc": acc,
            "val_f1": acc,
            "val_kappa": acc,
            "lr": lr,
            "epoch_time_s": sleep,
            "images_per_s": batch_size / max(sleep, 1e-6),
            "best_epoch": state["best_epoch"],
            "best_val_acc": state["best"],
        }
        if state["epoch"] == epochs:
            metrics.update(test_acc=acc, test_f1=acc, test_kappa=acc, train_time_s=sleep * epochs)
        if trace:
            _trace(trace, key, state["epoch"])
        report(metrics, checkpoint_dir)
        _crash_once(key, state["epoch"])
    return state
