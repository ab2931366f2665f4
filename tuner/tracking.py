"""Experiment trackers next to the Parquet store: TensorBoard, MLflow, Weights & Biases.

A spec asks for them with ``tracking: [tensorboard, mlflow, wandb]`` (or ``--set
tracking=[tensorboard]``). The driver feeds every tracker the same numbers it writes to
the Parquet tables (the Parquet store stays the record; a tracker that fails only warns):

* ``tensorboard``: one run per trial under ``<results>/<experiment>/tensorboard/<trial_id>``
  with the per-epoch scalars (:data:`EPOCH_METRICS`, step = epoch), and at the trial's end
  its configuration and final figures in TensorBoard's HParams view (metrics
  ``final/<column>``). ``tensorboard --logdir results/<experiment>/tensorboard``.
* ``mlflow``: one MLflow run per trial (tag ``trial_id``) with the configuration as params,
  the per-epoch metrics, the final figures (:data:`FINAL_METRICS`, at step = epochs run),
  the status as a tag, and the best-validation checkpoint (``best.pt``) as an artifact.
  The store is ``$MLFLOW_TRACKING_URI`` when set, else
  ``sqlite:///<results>/<experiment>/mlruns/mlflow.db`` with artifacts in
  ``<results>/<experiment>/mlruns/artifacts`` (MLflow 3 refuses a plain file store unless
  ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite needs no server).
  ``mlflow ui --backend-store-uri sqlite:///results/<experiment>/mlruns/mlflow.db``
  (the UI needs the full ``mlflow`` package).
* ``wandb``: one W&B run per trial (project = experiment, run id ``<experiment>-<trial_id>``)
  with config, per-epoch history and the final figures in the summary, written under
  ``<results>/<experiment>/wandb/``. Offline unless ``WANDB_MODE`` says otherwise: no
  network or account is needed; ``wandb sync results/<experiment>/wandb/offline-run-*``
  uploads later.

Each is an optional package (``pip install -e ".[tracking]"``); asking for one that is not
installed is a spec error naming the extra (:func:`missing`). A tracker writes files, so
tracking needs a local ``--results`` folder (MLflow alone also works with a remote
``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainables.extras import installed, missing_message

TRACKERS = ("tensorboard", "mlflow", "wandb")
"""The trackers a spec may name in ``tracking:`` (each also the module it needs)."""

EPOCH_METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_f1",
    "val_kappa",
    "lr",
    "epoch_time_s",
    "images_per_s",
    "best_val_acc",
)
"""Per-epoch figures logged at step = epoch (columns of the epochs table)."""

FINAL_METRICS = (
    "best_epoch",
    "best_val_acc",
    "best_val_f1",
    "best_val_kappa",
    "test_acc",
    "test_f1",
    "test_kappa",
    "epochs_run",
    "params",
    "trainable_params",
    "macs",
    "train_time_s",
    "images_per_s",
)
"""Final figures of a trial (columns of the trials table) logged when it ends."""


def missing(names: Iterable[str]) -> list[str]:
    """One message per named tracker whose package is not installed (names the extra)."""
    return [missing_message(n, f"tracking: {n}") for n in names if not installed(n)]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (nulls, NaN, non-numbers)."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def figures(row: dict, names: Iterable[str]) -> dict[str, float]:
    """The finite numbers of ``row`` under ``names``."""
    out = {}
    for name in names:
        value = _number(row.get(name))
        if value is not None:
            out[name] = value
    return out


def _param(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def clean_params(params: dict) -> dict[str, bool | int | float | str]:
    """Parameters without nulls, as plain Python scalars (what every tracker accepts)."""
    out = {}
    for k, v in params.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        try:
            if v != v:  # pandas NA and NaN
                continue
        except TypeError:
            continue
        out[k] = _param(v)
    return out


class TensorBoardTracker:
    """Event files, one run per trial: per-epoch scalars and the HParams view."""

    name = "tensorboard"

    def __init__(self, exp_dir: Path, experiment: str):
        self.root = Path(exp_dir) / "tensorboard"
        self.writers: dict[str, Any] = {}

    def _writer(self, trial_id: str):
        if trial_id not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[trial_id] = SummaryWriter(log_dir=str(self.root / trial_id))
        return self.writers[trial_id]

    def epoch(self, trial_id: str, params: dict, metrics: dict) -> None:
        """Write one epoch's scalars (step = epoch)."""
        w = self._writer(trial_id)
        step = int(metrics["epoch"])
        for name, value in figures(metrics, EPOCH_METRICS).items():
            w.add_scalar(name, value, global_step=step)
        w.flush()

    def end(self, row: dict, params: dict) -> None:
        """The configuration and final figures in the HParams view; closes the run."""
        from torch.utils.tensorboard.summary import hparams

        w = self._writer(str(row["trial_id"]))
        final = {f"final/{k}": v for k, v in figures(row, FINAL_METRICS).items()}
        exp, ssi, sei = hparams({**clean_params(params), "status": str(row["status"])}, final)
        writer = w._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)
        step = int(row.get("epochs_run") or 0)
        for name, value in final.items():
            w.add_scalar(name, value, global_step=step)
        w.add_text("status", str(row["status"]), global_step=step)
        w.close()
        del self.writers[str(row["trial_id"])]

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def mlflow_uri(exp_dir: Path) -> tuple[str, str | None]:
    """The MLflow tracking URI and artifact location for an experiment folder.

    ``$MLFLOW_TRACKING_URI`` when set (artifact location: the server's default), else a
    SQLite store inside ``<exp_dir>/mlruns``.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, None
    folder = Path(exp_dir).resolve() / "mlruns"
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class MLflowTracker:
    """One MLflow run per trial: params, per-epoch metrics, final figures, ``best.pt``."""

    name = "mlflow"

    def __init__(self, exp_dir: Path, experiment: str):
        from mlflow import MlflowClient

        uri, artifacts = mlflow_uri(exp_dir)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment = experiment
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifacts)
        )
        self.runs: dict[str, str] = {}

    def _run(self, trial_id: str, params: dict) -> str:
        """The run of a trial: in memory, found by its ``trial_id`` tag, or created."""
        if trial_id in self.runs:
            return self.runs[trial_id]
        from mlflow.entities import Param

        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.trial_id = '{trial_id}'", max_results=1
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=trial_id,
                tags={"trial_id": trial_id, "experiment": self.experiment},
            )
            run_id = run.info.run_id
            values = clean_params(params)
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in values.items()])
        self.runs[trial_id] = run_id
        return run_id

    def _metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def epoch(self, trial_id: str, params: dict, metrics: dict) -> None:
        """Log one epoch's metrics (step = epoch)."""
        run_id = self._run(trial_id, params)
        self._metrics(run_id, figures(metrics, EPOCH_METRICS), int(metrics["epoch"]))

    def end(self, row: dict, params: dict) -> None:
        """Final figures, status tag, ``best.pt`` as an artifact; ends the run."""
        trial_id = str(row["trial_id"])
        run_id = self._run(trial_id, params)
        self._metrics(run_id, figures(row, FINAL_METRICS), int(row.get("epochs_run") or 0))
        self.client.set_tag(run_id, "status", str(row["status"]))
        checkpoint = row.get("checkpoint")
        best = Path(str(checkpoint)) / "best.pt" if checkpoint else None
        if best is not None and "://" not in str(checkpoint) and best.is_file():
            self.client.log_artifact(run_id, str(best), artifact_path="checkpoint")
        failed = row["status"] == "error"
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        del self.runs[trial_id]

    def close(self) -> None:
        for run_id in self.runs.values():
            self.client.set_terminated(run_id, status="KILLED")
        self.runs.clear()


def wandb_run_id(experiment: str, trial_id: str) -> str:
    """A W&B run id for a trial (W&B ids allow letters, digits, ``-`` and ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{experiment}-{trial_id}")[:128]


class WandbTracker:
    """One W&B run per trial, offline unless ``WANDB_MODE`` says otherwise."""

    name = "wandb"

    def __init__(self, exp_dir: Path, experiment: str):
        import wandb

        self.wandb = wandb
        self.dir = Path(exp_dir)
        self.experiment = experiment
        self.mode = os.environ.get("WANDB_MODE", "offline")
        self.runs: dict[str, Any] = {}

    def _run(self, trial_id: str, params: dict):
        if trial_id not in self.runs:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.runs[trial_id] = self.wandb.init(
                project=self.experiment,
                group=self.experiment,
                name=trial_id,
                id=wandb_run_id(self.experiment, trial_id),
                dir=str(self.dir),
                config=clean_params(params),
                mode=self.mode,
                reinit="create_new",
                resume="allow",
                settings=self.wandb.Settings(
                    console="off", silent=True, x_disable_stats=True, save_code=False
                ),
            )
        return self.runs[trial_id]

    def epoch(self, trial_id: str, params: dict, metrics: dict) -> None:
        """Log one epoch's figures (step = epoch)."""
        run = self._run(trial_id, params)
        run.log(figures(metrics, EPOCH_METRICS), step=int(metrics["epoch"]))

    def end(self, row: dict, params: dict) -> None:
        """Final figures and status in the run summary; finishes the run."""
        trial_id = str(row["trial_id"])
        run = self._run(trial_id, params)
        run.summary.update({**figures(row, FINAL_METRICS), "status": str(row["status"])})
        run.finish(exit_code=1 if row["status"] == "error" else 0)
        del self.runs[trial_id]

    def close(self) -> None:
        """Finish open runs and stop W&B's service process now, while the search's local
        Ray (whose clean-up would stop it too) is still up."""
        for run in self.runs.values():
            run.finish(exit_code=1)
        self.runs.clear()
        self.wandb.teardown()


KINDS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


class Tracking:
    """Feeds every tracker of a spec; a tracker that raises only warns (once per message).

    Args:
        names: Trackers (:data:`TRACKERS`).
        exp_dir: The experiment's local results folder.
        experiment: Experiment name.
        stream: Where warnings go (default stderr).
    """

    def __init__(self, names: Iterable[str], exp_dir: str | Path, experiment: str, stream=None):
        self.stream = stream
        self.trackers: list[Any] = []
        self._warned: set[str] = set()
        for name in names:
            try:
                self.trackers.append(KINDS[name](Path(exp_dir), experiment))
            except Exception as err:  # a tracker that cannot start must not stop the search
                self._warn(name, err)

    def _warn(self, name: str, err: BaseException) -> None:
        text = f"{type(err).__name__}: {err}"
        if text in self._warned:
            return
        self._warned.add(text)
        print(
            f"warning: tracking {name}: {text} (the Parquet tables have every result)",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def _each(self, method: str, *args) -> None:
        for tracker in self.trackers:
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # see _warn
                self._warn(tracker.name, err)

    def epoch(self, trial_id: str, params: dict, metrics: dict) -> None:
        """One epoch of a trial (``metrics`` as reported: ``epoch`` plus figures)."""
        self._each("epoch", trial_id, params, metrics)

    def end(self, row: dict, params: dict) -> None:
        """A trial's final row, as written to the trials table."""
        self._each("end", row, params)

    def close(self) -> None:
        """Close every open run (at the end of the search)."""
        self._each("close")
