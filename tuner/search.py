"""Ray Tune assembly: the only module of the search that imports ``ray``.

:func:`run_search` turns a validated :class:`~tuner.spec.Spec` into a ``tune.Tuner`` with
Optuna's TPE (or a grid), ASHA (or no scheduler), per-trial resources, failure retries from
the last checkpoint, and two driver-side callbacks: :class:`ResultsCallback` writes the
Parquet tables as trials report and end, :class:`LiveView` prints a compact status line.

Fault tolerance: a trial that crashes, or whose node dies, is retried from its last
checkpoint (``search.max_failures``); a killed driver is continued with ``--resume`` from
Tune's experiment snapshot (trials and the Optuna searcher), and :class:`ResumableASHA`
rebuilds the scheduler's rung records, which the snapshot does not hold, from the epochs
table.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# Before ray is imported: no TensorBoard/CSV/JSON loggers (the Parquet store is the record),
# and experiment snapshots every second so a killed driver loses little.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "auto")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.exceptions import RayTaskError, UnserializableException  # noqa: E402
from ray.tune import Callback, Checkpoint  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from tuner import provenance  # noqa: E402
from tuner.budget import STOPPED_BUDGET, Budget, format_duration  # noqa: E402
from tuner.results import FINISHED_STATUSES, ResultsStore  # noqa: E402
from tuner.spec import PARAM_NAMES, OptunaSpace, Spec, grid_cells  # noqa: E402

TRAINABLES = {"classify": "trainables.classify", "toy": "trainables.toy"}
RAY_DIR = "tune"


# ------------------------------------------------------------------------------ packing
@dataclass
class Packing:
    """How trials share this machine or cluster.

    Attributes:
        cpu: CPUs per trial.
        gpu: GPU share per trial (0.25: four trials per GPU).
        concurrent: Trials at once (``None``: as many as resources allow).
        note: One line for the user.
    """

    cpu: float
    gpu: float
    concurrent: int | None
    note: str


def plan_packing(
    spec: Spec, *, laptop: bool, cpus: int, gpus: float, per_gpu: int, cluster: bool = False
) -> Packing:
    """Resources per trial.

    Without ``laptop`` the spec's ``resources`` are used as written (a local run without a
    GPU drops the spec's ``gpu``; on a ``cluster`` it is kept, since an autoscaler may add
    GPU nodes). In laptop mode, trials are packed onto this machine: with GPUs, ``per_gpu``
    trials share each GPU (or the spec's fractional ``gpu``) and the cores are split
    between them; without a GPU the cores are split between ``search.max_concurrent``
    trials (default: one per core).
    """
    res, limit = spec.resources, spec.search.max_concurrent
    if not laptop:
        gpu = res.gpu if gpus or cluster else 0.0
        note = f"{res.cpu:g} CPU" + (f" + {gpu:g} GPU" if gpu else "") + " per trial"
        if res.gpu and not gpus and not cluster:
            note += f" (spec asks gpu: {res.gpu:g} but no GPU is visible: trials use the CPU)"
        elif res.gpu and not gpus:
            note += " (no GPU in the cluster yet: trials wait for GPU nodes)"
        return Packing(res.cpu, gpu, limit, note)
    if gpus:
        share = res.gpu if 0 < res.gpu < 1 else 1 / per_gpu
        slots = int(round(gpus / share))
        concurrent = min(limit or slots, slots)
        cpu = max(1, cpus // max(concurrent, 1))
        note = (
            f"laptop mode: {gpus:g} GPU(s), {cpus} CPUs -> {concurrent} trials at once, "
            f"each {share:g} GPU + {cpu} CPU"
        )
        return Packing(float(cpu), share, concurrent, note)
    concurrent = min(limit or cpus, cpus)
    cpu = max(1, cpus // concurrent)
    note = f"laptop mode: no GPU, {cpus} CPUs -> {concurrent} trials at once, {cpu} CPU each"
    return Packing(float(cpu), 0.0, concurrent, note)


# ----------------------------------------------------------------------------- trainable
def flat_params(config: dict) -> dict:
    """Trial parameters from a Tune config (grid cells arrive nested under ``cell``)."""
    out = dict(config.get("cell") or {})
    out.update({k: v for k, v in config.items() if k != "cell"})
    return out


def _jsonable(metrics: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in metrics.items()}


def _builtin(value):
    """JSON fallback for numpy scalars in metrics."""
    return value.item() if hasattr(value, "item") else str(value)


#: The last reported metrics, kept in every checkpoint (re-reported by a trial with nothing
#: left to train, since Tune refuses a trial that ends without reporting its metric).
LAST_RESULT = ".tuner-last-result.json"
#: Every result reported so far, one JSON line per epoch, kept in every checkpoint: the
#: driver rebuilds a trial's epoch rows from it when its epochs file is lost or unreadable.
HISTORY = ".tuner-history.jsonl"


def _trainable(
    config: dict,
    *,
    kind: str,
    data: dict | None,
    pretrained: dict,
    cpus: float,
    max_batches: int | None,
    finished: dict[str, dict] | None = None,
):
    """The Ray Tune function trainable: restore, train, report every epoch.

    A trial restored from the checkpoint of its last epoch has nothing left to train: it
    reports the result saved in that checkpoint again. A trial listed in ``finished`` (trial
    id -> its last epoch row in the results store: a resumed search restores a trial that
    finished after Tune's last snapshot as unfinished, from an older checkpoint) reports
    that row again, without training.
    """
    provenance.check_process()  # the driver's code, not another installed copy
    from trainables.config import DataConfig

    module = importlib.import_module(TRAINABLES[kind])
    # Several nodes of one machine share a host name: the node id tells them apart.
    node_id = ray.get_runtime_context().get_node_id()
    hostname = socket.gethostname()
    final = (finished or {}).get(tune.get_context().get_trial_id())
    if final is not None:
        tune.report({**final, "node_id": node_id})
        return
    restored = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="tuner-trial-") as work:
        work_dir = Path(work)
        if restored is not None:
            with restored.as_directory() as src:
                shutil.copytree(src, work_dir, dirs_exist_ok=True)
        last_file = work_dir / LAST_RESULT
        reported = False

        def report(metrics: dict, directory: Path) -> None:
            nonlocal reported
            payload = _jsonable({**metrics, "node_id": node_id})
            (Path(directory) / LAST_RESULT).write_text(json.dumps(payload, default=_builtin))
            line = {**payload, "hostname": hostname, "reported_at": time.time()}
            with (Path(directory) / HISTORY).open("a") as f:
                f.write(json.dumps(line, default=_builtin) + "\n")
            reported = True
            tune.report(payload, checkpoint=Checkpoint.from_directory(str(directory)))

        module.run_trial(
            flat_params(config),
            data=DataConfig.model_validate(data) if data else None,
            report=report,
            checkpoint_dir=work_dir,
            resume=restored is not None,
            num_threads=max(1, int(cpus)),
            pretrained=pretrained,
            max_batches=max_batches,
        )
        if not reported and last_file.is_file():
            tune.report(json.loads(last_file.read_text()))


# ----------------------------------------------------------------------------- callbacks
def effective_defaults(spec: Spec) -> dict:
    """Values of the parameters a spec does not mention (what every trial used).

    Conditional parameters are not filled in: where their condition does not hold the
    column stays null ("not applicable").
    """
    if spec.trainable != "classify":
        return {}
    from trainables.config import TrialConfig

    named = {p.name for p in spec.params}
    return {
        name: TrialConfig.model_fields[name].default for name in PARAM_NAMES if name not in named
    }


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=timezone.utc) if ts else None


def _status(trial, last: dict, epochs: int, budget: Budget | None = None) -> str:
    """A finished trial's status; one stopped short once the budget is spent: ``stopped-budget``.

    A trial ends (and this is called) in the controller step that handled its last result,
    so a budget spent now was spent when the scheduler stopped it.
    """
    if trial.status == "ERROR":
        return "error"
    done = int(last.get("epoch") or 0)
    if done >= epochs and last.get("test_acc") is not None:
        return "completed"
    return STOPPED_BUDGET if budget is not None and budget.spent() else "early-stopped"


def _never_ran(trial, last: dict, budget: Budget | None) -> bool:
    """A trial cancelled by the budget before it started: it has no result and no row."""
    return not last and not trial.last_result and budget is not None and budget.spent()


FINISHED = FINISHED_STATUSES

#: Longest error message kept in the trials table (the traceback has its own column).
MAX_MESSAGE = 2000
MAX_TRACEBACK = 20000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task name in its tracebacks


def error_message(exc: BaseException) -> str:
    """The message line of an exception a trial raised: ``Type: first line of its text``.

    Ray hands the driver a ``RayTaskError`` whose ``cause`` is the trial's own exception
    (the project's exceptions all survive that copy); its text is Ray's traceback, so the
    cause's text is used. A cause Ray could not rebuild leaves its original traceback in
    the text, whose last line names it.
    """
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    if isinstance(exc, RayTaskError | UnserializableException):
        return _last_line(str(exc)) or type(exc).__name__
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__)[:MAX_MESSAGE]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_MESSAGE] if lines else ""


def trial_error(trial) -> tuple[str, str | None]:
    """``(message, traceback)`` of a trial's last failure, as Tune recorded it.

    Tune writes the error (text, and the exception pickled) to the trial's folder on the
    driver first and syncs it to storage later: both places are read, local first.
    """
    text = exc = None
    meta = trial.run_metadata
    local = Path(trial.local_path) if trial.local_path else None
    if local is not None and meta.error_filename and (local / meta.error_filename).is_file():
        text = (local / meta.error_filename).read_text(errors="replace")
    try:
        if local is not None and meta.pickled_error_filename:
            pickled = local / meta.pickled_error_filename
            if pickled.is_file():
                exc = ray.cloudpickle.loads(pickled.read_bytes())
        if exc is None:
            exc = trial.get_pickled_error()
        if text is None:
            text = trial.get_error()
    except Exception:  # an exception class the driver cannot rebuild: keep the text
        exc = exc if isinstance(exc, BaseException) else None
    if isinstance(exc, BaseException):
        message = error_message(exc)
    else:
        message = _last_line(str(text or "")) or "trial failed"
    text = _ANSI.sub("", str(text))[-MAX_TRACEBACK:] if text else None
    return _ANSI.sub("", message), text


class ResultsCallback(Callback):
    """Writes the trials and epochs Parquet tables from the driver as results arrive.

    Epoch rows are keyed by epoch, so a trial retried from its last checkpoint replaces,
    never duplicates, the epochs it runs again; a resumed search reads back the rows
    already written before adding to them. On resume, trials the store already holds as
    finished keep their rows (a trial that finished after Tune's last snapshot is restored
    as unfinished and may report again), and the rows of trials that the snapshot never
    knew (started after it, so they are never resumed) are moved to ``_orphaned/``. What the
    store lacks for the restored trials (files quarantined as unreadable) is rebuilt: epoch
    rows from the trials' checkpoints, trial rows from Tune's record; rows written in
    another folder (this one was moved or copied) get their checkpoint paths re-rooted here.
    """

    def __init__(
        self, results_root: str, spec: Spec, packing: Packing, budget: Budget | None = None
    ):
        self.results_root, self.spec, self.packing = results_root, spec, packing
        self.budget = budget
        self.setup()

    def setup(self, **info) -> None:
        self.store = ResultsStore(self.results_root, self.spec.experiment)
        self.defaults = effective_defaults(self.spec)
        self.epochs: dict[str, dict[int, dict]] = {}
        self.last: dict[str, dict] = {}
        self.started: dict[str, float] = {}
        self.recovered: dict[str, int] = {}
        self.finished = self.store.finished_trial_ids()
        self._reconciled = False

    def _epoch_rows(self, trial_id: str, trial=None) -> dict[int, dict]:
        """The epoch rows of a trial: in memory, else read back from the store.

        An epochs file that cannot be read is moved to ``_quarantine/`` (and said so); the
        rows are then rebuilt from the trial's checkpoint, when ``trial`` is given.
        """
        if trial_id not in self.epochs:
            import pandas as pd
            import pyarrow as pa
            import pyarrow.parquet as pq

            from tuner.results import quarantine

            path = f"{self.store.dir}/epochs/{trial_id}.parquet"
            rows: dict[int, dict] = {}
            info = self.store.fs.get_file_info(path)
            if info.type.name == "File":
                try:
                    old = pq.read_table(path, filesystem=self.store.fs).to_pandas()
                except (pa.ArrowInvalid, OSError) as err:
                    moved = quarantine(self.store.fs, [(path, str(err))])
                    print(f"note: unreadable epochs file moved to {moved[0]}: {err}", flush=True)
                    if trial is not None:
                        rows = self._rebuild_epochs(trial) or {}
                else:
                    old = old.astype(object).where(pd.notna(old), None)
                    rows = {int(r["epoch"]): dict(r) for _, r in old.iterrows()}
            self.epochs[trial_id] = rows
        return self.epochs[trial_id]

    def _rebuild_epochs(self, trial) -> dict[int, dict] | None:
        """Rebuild and write a trial's epoch rows from its latest checkpoint's history.

        Every checkpoint holds the results reported up to it (:data:`HISTORY`); epochs
        after it are trained again by the resumed trial and reported anew. Rows rebuilt
        this way carry the time the trial reported them, not the driver's receipt time.

        Returns:
            The rows (``None``: the trial has no checkpoint, or it holds no history).
        """
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return None
        lines = None
        for name in (HISTORY, LAST_RESULT):
            try:
                with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{name}") as f:
                    lines = f.read().decode().splitlines()
                break
            except (FileNotFoundError, OSError):
                continue
        if not lines:
            return None
        rows: dict[int, dict] = {}
        for line in lines:
            try:
                result = json.loads(line)
            except ValueError:  # a line cut short: the results after it are reported again
                break
            rows[int(result["epoch"])] = {
                **result,
                "node": result.get("hostname"),
                "time": _utc(result.get("reported_at")),
            }
        self.epochs[trial.trial_id] = rows
        self.store.write_epochs(trial.trial_id, list(rows.values()))
        return rows

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._reconciled:
            return
        self._reconciled = True
        moved = self.store.move_orphans({t.trial_id for t in trials})
        if moved:
            print(
                f"note: {len(moved)} trial(s) started after Tune's last snapshot: the restored "
                f"search runs other trials in their place; their rows were moved to "
                f"{self.store.dir}/{{trials,epochs}}/_orphaned/: {', '.join(moved)}",
                flush=True,
            )
        old = self.store.rebase_checkpoints(RAY_DIR)
        if old:
            print(
                f"note: trial rows written in {', '.join(old)} (this folder was moved or "
                f"copied): their checkpoint paths now point into {self.store.dir}",
                flush=True,
            )
        self._restore_missing(trials)

    def _restore_missing(self, trials) -> None:
        """Rebuild what the store lacks for trials of a resumed search.

        An epochs file that is missing (quarantined as unreadable) for a trial with a
        checkpoint is rebuilt from the checkpoint's history; a trial that Tune records as
        terminated but that has no row (quarantined, or the driver died before writing it)
        gets its row from Tune's record: its last result and configuration (its end time is
        when the row is rebuilt).
        """
        have_epochs = self.store.trial_ids("epochs")
        have_rows = self.store.trial_ids("trials")
        for trial in trials:
            if trial.trial_id not in have_epochs and trial.checkpoint is not None:
                rows = self._rebuild_epochs(trial)
                if rows:
                    print(
                        f"note: trial {trial.trial_id}: {len(rows)} epoch row(s) rebuilt from "
                        f"its checkpoint (epochs {min(rows)}-{max(rows)})",
                        flush=True,
                    )
            if trial.trial_id in have_rows or trial.status != "TERMINATED":
                continue  # failed trials are retried by the resumed search
            if not trial.last_result and trial.checkpoint is None:
                continue  # never ran (cancelled by a time budget): no row
            last = trial.last_result or {}
            epochs = int(flat_params(trial.config).get("epochs") or self.spec.max_epochs)
            row = self._trial_row(trial, _status(trial, last, epochs))
            self._write_final(row)
            self.finished.add(trial.trial_id)
            print(
                f"note: trial {trial.trial_id}: its row ({row['status']}) rebuilt from Tune's "
                "record of the trial",
                flush=True,
            )

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.recovered[trial.trial_id] = self.recovered.get(trial.trial_id, 0) + 1

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.finished:
            return
        rows = self._epoch_rows(trial.trial_id, trial)
        row = {
            **result,
            "node": result.get("hostname") or result.get("node_ip"),
            # when the driver received it (sub-second; ResumableASHA replays in this order)
            "time": _utc(time.time()),
        }
        rows[int(result["epoch"])] = row
        self.last[trial.trial_id] = result
        self.store.write_epochs(trial.trial_id, list(rows.values()))

    def _trial_row(
        self, trial, status: str, error: str | None = None, traceback: str | None = None
    ) -> dict:
        last = self.last.get(trial.trial_id, {})
        if not last and trial.last_result:
            last = trial.last_result
        params = {**self.defaults, **flat_params(trial.config)}
        decoded = {
            k: json.loads(last[k])
            for k in ("test_per_class_acc", "test_confusion", "class_names")
            if isinstance(last.get(k), str)
        }
        checkpoint = trial.checkpoint
        epochs_done = int(last.get("epoch") or 0)
        row = {
            **last,
            **decoded,
            # the configured values: a trial's last result holds its last epoch's rate as
            # "lr" (a schedule changes it); per-epoch rates stay in the epochs table
            **params,
            "trial_id": trial.trial_id,
            "status": status,
            "error": error,
            "error_traceback": traceback,
            "dataset": self.spec.dataset.preset if self.spec.dataset else self.spec.trainable,
            "epochs_run": epochs_done,
            "best_val_f1": None,
            "best_val_kappa": None,
            "node": last.get("hostname") or last.get("node_ip"),
            "node_id": last.get("node_id"),
            "cpus": self.packing.cpu,
            "gpu_fraction": self.packing.gpu,
            # Node losses reported as preemptions do not count in num_failures.
            "retries": max(trial.num_failures, self.recovered.get(trial.trial_id, 0)),
            "checkpoint": checkpoint.path if checkpoint is not None else None,
            "start_time": _utc(self.started.get(trial.trial_id) or trial.run_metadata.start_time),
            "end_time": _utc(time.time()),
        }
        best = self._epoch_rows(trial.trial_id).get(int(last.get("best_epoch") or 0))
        if best:
            row["best_val_f1"], row["best_val_kappa"] = best.get("val_f1"), best.get("val_kappa")
        if status != "completed":
            for k in ("test_acc", "test_f1", "test_kappa", "test_per_class_acc", "test_confusion"):
                row[k] = None
        if "train_time_s" not in last:
            row["train_time_s"] = sum(
                (r.get("epoch_time_s") or 0.0) for r in self._epoch_rows(trial.trial_id).values()
            )
        epochs = params.get("epochs") or self.spec.max_epochs
        row["epochs"] = epochs
        return row

    def _write_final(self, row: dict) -> None:
        """Write a trial's row, first dropping epoch rows past its last epoch.

        Such rows are left by a driver that died after a trial reported them but before
        Tune's snapshot recorded the checkpoint: the resumed trial re-ran from an earlier
        checkpoint and ended sooner, so they belong to no model the trial row describes.
        """
        rows = self._epoch_rows(row["trial_id"])
        stale = [e for e in rows if row["epochs_run"] and e > row["epochs_run"]]
        if stale:
            for e in stale:
                del rows[e]
            self.store.write_epochs(row["trial_id"], list(rows.values()))
        self.store.write_trial(row)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.finished:
            return
        last = self.last.get(trial.trial_id) or trial.last_result or {}
        if _never_ran(trial, last, self.budget):
            return
        epochs = int(flat_params(trial.config).get("epochs") or self.spec.max_epochs)
        self._write_final(self._trial_row(trial, _status(trial, last, epochs, self.budget)))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.finished:
            return
        message, traceback = trial_error(trial)
        self._write_final(self._trial_row(trial, "error", message, traceback))


class LiveView(Callback):
    """A compact status line: running / finished / stopped early / failed, best, elapsed.

    With ``results_root``, a resumed search counts the trials that already have a final
    row and does not announce them again. With ``request`` (one trial's CPUs and GPU
    share), a search whose trials cannot fit the cluster as it is (an autoscaler has yet
    to add nodes) says so in the status line: what a trial needs, what the cluster has,
    and how long nothing has run.
    """

    def __init__(
        self,
        spec: Spec,
        every_s: float = 10.0,
        stream=None,
        results_root: str | None = None,
        request: tuple[float, float] | None = None,
        resources: Callable[[], dict] | None = None,
        budget: Budget | None = None,
    ):
        self.spec, self.every_s, self.stream = spec, every_s, stream
        self.results_root = results_root
        self.request = request
        self.budget = budget
        self.resources = resources or (lambda: ray.cluster_resources())
        self.setup()

    def setup(self, **info) -> None:
        self.t0 = time.time()
        self.last_print = 0.0
        self.counts = {"completed": 0, "early-stopped": 0, STOPPED_BUDGET: 0, "error": 0}
        self.best: tuple[float, str] | None = None
        #: Trial id -> (best metric value, its epoch) so far.
        self.trial_best: dict[str, tuple[float, int | None]] = {}
        self.running = self.pending = 0
        #: Since when nothing has run while trials were pending (``None``: not so now).
        self.idle_since: float | None = None
        self.finished: set[str] | None = None

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self.finished is not None:
            return
        self.finished = set()
        if self.results_root is not None:
            statuses = ResultsStore(self.results_root, self.spec.experiment).trial_statuses()
            for trial_id, status in statuses.items():
                if status in FINISHED:
                    self.finished.add(trial_id)
                    self.counts[status] += 1

    def _describe(self, trial) -> str:
        p = flat_params(trial.config)
        keys = [q.name for q in self.spec.searched if q.name in p]
        return " ".join(f"{k}={_short(p[k])}" for k in keys) or trial.trial_id

    def _print(self, text: str) -> None:
        out = self.stream or sys.stdout
        elapsed = int(time.time() - self.t0)
        out.write(f"[{elapsed // 60:>3}:{elapsed % 60:02d}] {text}\n")
        out.flush()

    def status_line(self) -> str:
        c = self.counts
        best = ""
        if self.best:
            best = f" | best {self.spec.search.metric} {self.best[0]:.4f} ({self.best[1]})"
        return (
            f"running {self.running} | finished {c['completed']} | "
            f"stopped early {c['early-stopped']} | failed {c['error']}"
            + (f" | stopped by budget {c[STOPPED_BUDGET]}" if c[STOPPED_BUDGET] else "")
            + f"{best}{self._waiting()}"
        )

    def _waiting(self) -> str:
        """What the pending trials wait for, when one trial does not fit the cluster now."""
        if self.idle_since is None or self.request is None:
            return ""
        cpu, gpu = self.request
        have = self.resources()
        have_cpu, have_gpu = float(have.get("CPU", 0)), float(have.get("GPU", 0))
        if cpu <= have_cpu and gpu <= have_gpu:
            return ""
        waited = int(time.time() - self.idle_since)
        return (
            f" | waiting {waited // 60}:{waited % 60:02d} for nodes: {self.pending} trial(s) "
            f"pending, each needs cpu {cpu:g} / gpu {gpu:g}, the cluster has {have_cpu:g} "
            f"CPUs, {have_gpu:g} GPUs (an autoscaler adds nodes; without one, nothing starts)"
        )

    def _better(self, value: float, than: tuple | None) -> bool:
        if than is None:
            return True
        return value > than[0] if self.spec.search.mode == "max" else value < than[0]

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.spec.search.metric)
        if value is not None:
            if self._better(value, self.best):
                self.best = (value, self._describe(trial))
            if self._better(value, self.trial_best.get(trial.trial_id)):
                self.trial_best[trial.trial_id] = (value, result.get("epoch"))

    def _ended(self, trial, status: str) -> None:
        if trial.trial_id in (self.finished or ()):
            return
        self.counts[status] += 1
        last = trial.last_result or {}
        m = self.spec.search.metric
        figure = f"{m} {last[m]:.4f} after {last.get('epoch')} epochs" if m in last else ""
        best = self.trial_best.get(trial.trial_id)
        if figure and best is not None and best[0] != last[m]:
            figure += f" (best {best[0]:.4f} at epoch {best[1]})"
        self._print(f"{status:<13} {self._describe(trial)}  {figure}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if _never_ran(trial, last, self.budget):
            return
        epochs = int(flat_params(trial.config).get("epochs") or self.spec.max_epochs)
        self._ended(trial, _status(trial, last, epochs, self.budget))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in (self.finished or ()):
            return
        self._ended(trial, "error")
        self._print(f"{'':<13} {trial_error(trial)[0][:300]}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        cause = trial_error(trial)[0][:300]
        self._print(
            f"{'retrying':<13} {self._describe(trial)}  failure {trial.num_failures} of "
            f"{trial.max_failures} allowed, from its last checkpoint: {cause}"
        )

    def on_step_end(self, iteration, trials, **info) -> None:
        self.running = sum(t.status == "RUNNING" for t in trials)
        self.pending = sum(t.status == "PENDING" for t in trials)
        if self.running or not self.pending:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = time.time()
        if time.time() - self.last_print >= self.every_s:
            self.last_print = time.time()
            self._print(self.status_line())

    def on_experiment_end(self, trials, **info) -> None:
        self.running, self.idle_since = 0, None
        self._print(self.status_line())


class Exports(Callback):
    """Feeds the trackers (:mod:`tuner.tracking`) and the Optuna export
    (:mod:`tuner.optuna_export`) from what :class:`ResultsCallback` writes.

    Placed after :class:`ResultsCallback`: at a trial's end it reads the trial's row back
    from the store, so every tracker receives exactly the Parquet row. Per-epoch figures go
    to the trackers as they arrive. The study export is rewritten at most every
    :data:`~tuner.optuna_export.EVERY_S` seconds as trials end, and when the search ends.
    Trackers only run for a local results folder (``MLFLOW_TRACKING_URI`` aside, they write
    files), which ``tuner.run`` checks.
    """

    def __init__(self, results_root: str, spec: Spec, every_s: float | None = None):
        from tuner.optuna_export import EVERY_S

        self.results_root, self.spec = results_root, spec
        self.every_s = EVERY_S if every_s is None else every_s
        self.setup()

    def setup(self, **info) -> None:
        self.store = ResultsStore(self.results_root, self.spec.experiment)
        self.defaults = effective_defaults(self.spec)
        self.finished = self.store.finished_trial_ids()
        self.tracking = None
        self.last_export = 0.0

    def __getstate__(self) -> dict:
        """Pickled (Tune snapshots its callbacks) without the trackers' open runs."""
        return {k: v for k, v in self.__dict__.items() if k != "tracking"} | {"tracking": None}

    def _trackers(self):
        if self.tracking is None and self.spec.tracking:
            from tuner.tracking import Tracking

            self.tracking = Tracking(self.spec.tracking, self.store.dir, self.spec.experiment)
        return self.tracking

    def _params(self, trial) -> dict:
        return {**self.defaults, **flat_params(trial.config)}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.finished or self._trackers() is None:
            return
        self.tracking.epoch(trial.trial_id, self._params(trial), result)

    def _row(self, trial_id: str) -> dict | None:
        import pyarrow.parquet as pq

        from tuner.results import TRIAL_SCHEMA

        path = f"{self.store.dir}/trials/{trial_id}.parquet"
        if self.store.fs.get_file_info(path).type.name != "File":
            return None  # cancelled before it ran
        rows = pq.read_table(path, filesystem=self.store.fs, schema=TRIAL_SCHEMA).to_pylist()
        return rows[0] if rows else None

    def _ended(self, trial) -> None:
        if trial.trial_id in self.finished:
            return
        if self._trackers() is not None:
            row = self._row(trial.trial_id)
            if row is not None:
                self.tracking.end(row, self._params(trial))
        if time.time() - self.last_export >= self.every_s:
            self._export()

    def _export(self) -> None:
        from tuner.optuna_export import export

        self.last_export = time.time()
        try:
            export(self.store.uri, self.spec)
        except Exception as err:  # the study file is a convenience; the tables are the record
            print(f"warning: optuna.db export failed: {type(err).__name__}: {err}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials, **info) -> None:
        self._export()
        if self.tracking is not None:
            self.tracking.close()


class ResumableASHA(ASHAScheduler):
    """ASHA whose rung records are rebuilt from the results store when a search resumes.

    Tune's experiment snapshot restores the trials and the searcher, not the scheduler: a
    restored ASHA would start with empty rungs, and the first trials to reach each rung after
    a restart would all continue. At its first result, this scheduler reads the epochs
    table of its experiment (empty for a new search) and replays every recorded
    ``(trial, epoch, metric)`` into its bracket in the order the driver received them, so
    the cutoffs, and the decisions taken on the way, are those of the run that was cut
    short. Restored trials then continue as they would have:

    * a trial whose last recorded result was a stop decision (the driver died before the
      trial ended) is stopped when it reports that epoch again;
    * a trial the store already holds as finished is stopped at its first result;
    * a trial re-running epochs it had already reported (its checkpoint in the snapshot is
      older) is not judged again at rungs it has passed.

    Args:
        results_root: Results root of the experiment (local path or URI).
        experiment: Experiment name.
        **kwargs: :class:`~ray.tune.schedulers.ASHAScheduler` arguments (one bracket).
    """

    def __init__(self, *, results_root: str, experiment: str, **kwargs):
        super().__init__(**kwargs)
        self.results_root, self.experiment = results_root, experiment
        self.finished: set[str] = set()
        #: Trial id -> epoch at which the replayed run had stopped it.
        self.stopped: dict[str, int] = {}
        self.replayed = 0
        self._known: set[str] = set()
        self._loaded = False

    def rebuild(self, records: Iterable[tuple[str, int, float]]) -> int:
        """Replay recorded results into the rungs; returns how many were replayed.

        Args:
            records: ``(trial_id, epoch, metric value)`` in the order they were reported.
        """
        bracket, n = self._brackets[0], 0
        last: dict[str, tuple[int, str]] = {}
        for trial_id, epoch, value in records:
            if value is None or value != value:  # NaN
                continue
            reward = self._metric_op * float(value)
            last[trial_id] = (int(epoch), bracket.on_result(_Recorded(trial_id), epoch, reward))
            n += 1
        for trial_id, (epoch, action) in last.items():
            if action == TrialScheduler.STOP:
                self.stopped[trial_id] = epoch
        return n

    def rung_sizes(self) -> dict[int, int]:
        """Results recorded per rung (milestone epoch -> count)."""
        return {int(m): len(rec) for m, rec in reversed(self._brackets[0]._rungs)}

    def _load(self) -> None:
        from tuner.results import ResultsStore, load

        store = ResultsStore(self.results_root, self.experiment)
        trials, epochs = load(store.uri, on_corrupt="warn")
        done = trials[trials["status"].isin(FINISHED)]
        self.finished = set(done["trial_id"].astype(str))
        if epochs.empty or self._metric not in epochs.columns:
            return
        # Only trials of this search: not those the restored snapshot never knew.
        rows = epochs[epochs["trial_id"].astype(str).isin(self._known)]
        rows = rows.dropna(subset=[self._metric]).sort_values(["time", "epoch"], kind="stable")
        records = zip(
            rows["trial_id"].astype(str), rows["epoch"].astype(int), rows[self._metric], strict=True
        )
        self.replayed = self.rebuild(records)
        pending = set(self.stopped) - self.finished
        if self.replayed:
            rungs = ", ".join(f"epoch {m}: {n}" for m, n in self.rung_sizes().items())
            print(
                f"ASHA rebuilt from the epochs table: {self.replayed} results of "
                f"{rows['trial_id'].nunique()} trials replayed (recorded per rung: {rungs}); "
                f"{len(self.finished)} trials already finished, {len(pending)} stopped "
                "without a final row",
                flush=True,
            )

    def on_trial_add(self, tune_controller, trial) -> None:
        self._known.add(trial.trial_id)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if not self._loaded:  # every restored trial has been added by now
            self._loaded = True
            self._load()
        if trial.trial_id in self.finished:
            return TrialScheduler.STOP
        stop_at = self.stopped.get(trial.trial_id)
        if stop_at is not None and result.get(self._time_attr, 0) >= stop_at:
            return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)


class TimeBudget:
    """Scheduler mixin for ``search.time_budget`` (see :mod:`tuner.budget`).

    Once the budget is spent: the searcher is told it is finished (no new trials), trials
    not yet started are removed (they get no row), and every running trial is stopped at its
    next result, i.e. after the epoch it is in, whatever the scheduler below would decide.
    The scheduler is the one place that both picks the trials to run and rules on results.
    """

    budget: Budget | None = None
    _budget_announced = False

    def _spent(self) -> bool:
        return self.budget is not None and self.budget.spent()

    def choose_trial_to_run(self, tune_controller):
        if not self._spent():
            return super().choose_trial_to_run(tune_controller)
        tune_controller.search_alg.set_finished()
        trials = list(tune_controller.get_trials())
        waiting = [t for t in trials if t.status in ("PENDING", "PAUSED")]
        if not self._budget_announced:
            self._budget_announced = True
            running = sum(t.status == "RUNNING" for t in trials)
            print(
                f"time budget {format_duration(self.budget.seconds)} spent: no more trials "
                f"are launched ({len(waiting)} waiting cancelled); {running} running trial(s) "
                "stop after the epoch they are in",
                flush=True,
            )
        for trial in waiting:
            tune_controller.stop_trial(trial)
        return None

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.STOP if self._spent() else decision


class BudgetASHA(TimeBudget, ResumableASHA):
    """:class:`ResumableASHA` under a time budget."""

    def __init__(self, *, budget: Budget, **kwargs):
        super().__init__(**kwargs)
        self.budget = budget


class BudgetFIFO(TimeBudget, FIFOScheduler):
    """No early stopping, under a time budget."""

    def __init__(self, *, budget: Budget):
        super().__init__()
        self.budget = budget


@dataclass
class _Recorded:
    """Stands for a trial in a replayed result (the bracket only reads its id)."""

    trial_id: str


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------------- ray
def init_ray(address: str | None, *, num_cpus: int | None, num_gpus: float | None) -> dict:
    """Start (local) or join (``address``) Ray; returns the cluster's resources.

    Joining a cluster, the driver's ``TUNER_*`` environment variables (cache folder, test
    switches) are passed to every trial worker through the job's runtime environment.
    """
    if ray.is_initialized():
        return ray.cluster_resources()
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": "ERROR"}
    if address:
        # Trial workers on other nodes do not inherit this process's environment. In a job
        # submitted with its own env_vars (tuner.submit), the same keys are allowed to meet.
        env = {k: v for k, v in os.environ.items() if k.startswith("TUNER_")}
        env.pop(provenance.MANIFEST_ENV, None)
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **quiet)
    else:
        global _local
        _local = _LocalRun.start()
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                num_gpus=num_gpus,
                include_dashboard=False,
                object_store_memory=256 * 1024**2,
                _temp_dir=_local.temp_dir,
                **quiet,
            )
        except BaseException:
            _local.stop()
            _local = None
            raise
        _local.announce()
    return ray.cluster_resources()


@dataclass
class _LocalRun:
    """What a local run changes in this process to keep its Ray instance private.

    * **Loopback only.** Ray binds every server of a node (GCS, raylet, workers, the
      dashboard and runtime-env agents) to the node's IP address, and its gRPC servers to
      all interfaces unless that address is 127.0.0.1. On Linux it picks a routable
      address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is ``0`` (read when ``ray`` is
      imported: both the variable, for the processes Ray starts, and Ray's constant, for
      this process, are set). Measured with ``ss -ltnp``: every socket of the run listens
      on 127.0.0.1 (see the README's security section).
    * **Token authentication** with a random token per run, passed to Ray's processes in
      their environment (never written to disk; Ray would otherwise write
      ``~/.ray/auth_token``), unless ``RAY_AUTH_MODE=disabled`` is set explicitly.
    * **A private folder** for Ray's session (its Unix sockets and logs): a fresh
      ``/tmp/tuner-ray-*`` of mode 0700, where Ray's default ``/tmp/ray`` is writable by
      every user.
    * **Clean-up after a SIGKILL.** A reaper process (:mod:`tuner.reaper`) follows the
      processes ``ray.init`` started and their descendants, and stops them and removes the
      folder when this process ends, however it ends.

    :meth:`stop` restores the environment (a test may start several runs in one process).
    """

    saved_env: dict[str, str | None]
    cluster_flag: bool
    reaper: subprocess.Popen | None
    temp_dir: str

    @classmethod
    def start(cls) -> _LocalRun:
        from ray._private import ray_constants

        from tuner import reaper

        run_id = secrets.token_hex(8)
        env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", reaper.MARK: run_id}
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
            env["RAY_AUTH_MODE"] = "token"
            if not os.environ.get("RAY_AUTH_TOKEN"):
                env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        temp_dir = tempfile.mkdtemp(prefix="tuner-ray-", dir="/tmp")  # short: socket paths
        proc = None
        if Path("/proc/self/environ").exists():
            proc = subprocess.Popen(
                [sys.executable, "-m", "tuner.reaper", run_id, temp_dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(Path(__file__).resolve().parents[1]),
            )
        saved = {k: os.environ.get(k) for k in env}
        run = cls(saved, ray_constants.ENABLE_RAY_CLUSTER, proc, temp_dir)
        os.environ.update(env)
        ray_constants.ENABLE_RAY_CLUSTER = False
        _reload_auth()
        return run

    def announce(self) -> None:
        """Tell the reaper which processes ``ray.init`` started: this process's children
        since the reaper (the reaper follows their descendants)."""
        if self.reaper is None or self.reaper.stdin is None:
            return
        from tuner import reaper

        kids = reaper.children(os.getpid(), since=reaper.start_time(self.reaper.pid))
        kids.pop(self.reaper.pid, None)
        try:
            self.reaper.stdin.write(" ".join(f"{p}:{t}" for p, t in kids.items()).encode())
            self.reaper.stdin.write(b"\n")
            self.reaper.stdin.flush()
        except OSError:  # the reaper is gone: nothing to clean up after a SIGKILL then
            pass

    def stop(self) -> None:
        """Restore the environment and let the reaper stop what is left."""
        from ray._private import ray_constants

        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray_constants.ENABLE_RAY_CLUSTER = self.cluster_flag
        _reload_auth()
        if self.reaper is not None and self.reaper.stdin is not None:
            self.reaper.stdin.close()  # the reaper removes the folder after the processes
        else:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


#: The local run started by :func:`init_ray` (stopped by :func:`shutdown_ray`).
_local: _LocalRun | None = None


def _reload_auth() -> None:
    """Make Ray in this process read ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` again (cached)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this driver is connected to."""
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def on_every_node(fn: Callable, *args) -> dict[str, tuple[str, object]]:
    """Run ``fn(*args)`` once on every alive node: node id -> (node IP, its result).

    One zero-CPU task per node, pinned to it (a node without free CPUs still answers).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(fn)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    found = ray.get(
        [
            task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(*args)
            for n in nodes
        ]
    )
    return {n["NodeID"]: (n["NodeManagerAddress"], r) for n, r in zip(nodes, found, strict=True)}


def _exists(path: str) -> bool:
    return Path(path).expanduser().exists()


def missing_on_nodes(path: str) -> dict[str, str]:
    """Alive nodes on which ``path`` does not exist (node id -> node IP).

    Every node must read a dataset from the same path (a shared mount, or a copy synced by
    cluster setup).
    """
    return {node: ip for node, (ip, ok) in on_every_node(_exists, path).items() if not ok}


def _code_problem() -> str | None:
    try:
        provenance.check_process()
    except provenance.CodeMismatchError as err:
        return str(err)
    return None


def code_skew_on_nodes() -> dict[str, str]:
    """Alive nodes whose workers import other code than this driver (node id -> problem).

    The driver's fingerprint (``$TUNER_CODE_HASH``) reaches the workers through the job's
    runtime environment; see :mod:`tuner.provenance`.
    """
    found = on_every_node(_code_problem)
    return {node: f"{ip}: {problem}" for node, (ip, problem) in found.items() if problem}


def shutdown_ray() -> None:
    """Disconnect from Ray (and stop it when this process started it)."""
    global _local
    if ray.is_initialized():
        ray.shutdown()
    if _local is not None:
        _local.stop()
        _local = None


def visible_gpus(resources: dict) -> float:
    """GPUs Ray can schedule (logical GPUs count, so tests can declare them)."""
    return float(resources.get("GPU", 0.0))


def experiment_path(results_root: str, experiment: str) -> str:
    """Where Ray keeps its experiment state (trial checkpoints, searcher snapshots)."""
    from tuner.results import filesystem

    _, base = filesystem(results_root)
    scheme = str(results_root).split("://", 1)[0] + "://" if "://" in str(results_root) else ""
    return f"{scheme}{base}/{experiment}"


def can_resume(results_root: str, experiment: str) -> bool:
    """Whether Ray's state for this experiment exists (a search to continue)."""
    return tune.Tuner.can_restore(f"{experiment_path(results_root, experiment)}/{RAY_DIR}")


def build_tuner(
    spec: Spec,
    *,
    results_root: str,
    packing: Packing,
    pretrained: dict[str, str],
    resume: bool,
    callbacks: list[Callback],
    max_batches: int | None = None,
    budget: Budget | None = None,
) -> tune.Tuner:
    """Assemble (or restore) the ``tune.Tuner`` of a spec (``budget``: its time budget)."""
    data = spec.dataset.model_dump(mode="json") if spec.dataset else None
    finished = ResultsStore(results_root, spec.experiment).final_results() if resume else {}
    fn = tune.with_parameters(
        _trainable,
        kind=spec.trainable,
        data=data,
        pretrained=pretrained,
        cpus=packing.cpu,
        max_batches=max_batches,
        finished=finished,
    )
    fn = tune.with_resources(fn, {"cpu": packing.cpu, "gpu": packing.gpu})
    base = experiment_path(results_root, spec.experiment)
    s = spec.search
    scheduler = None
    if spec.scheduler.type == "asha":
        asha = {
            "results_root": str(results_root),
            "experiment": spec.experiment,
            "time_attr": "epoch",
            "max_t": spec.max_epochs,
            "grace_period": spec.scheduler.grace_period,
            "reduction_factor": spec.scheduler.reduction_factor,
        }
        scheduler = BudgetASHA(budget=budget, **asha) if budget else ResumableASHA(**asha)
    elif budget is not None:
        scheduler = BudgetFIFO(budget=budget)
    if resume:
        tuner = tune.Tuner.restore(
            f"{base}/{RAY_DIR}", fn, resume_unfinished=True, resume_errored=True
        )
        rebind(tuner, callbacks=callbacks, scheduler=scheduler)
        return tuner
    if s.algorithm == "grid":
        param_space = {"cell": tune.grid_search(grid_cells(spec))}
        search_alg, num_samples = None, 1
    else:
        space = OptunaSpace(spec.params, s.seed_list[0])
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=s.sampler_seed)
        search_alg = OptunaSearch(
            space,
            metric=s.metric,
            mode=s.mode,
            sampler=sampler,
            points_to_evaluate=[dict(p) for p in s.points] or None,
        )
        if packing.concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=packing.concurrent)
        param_space, num_samples = {}, s.num_samples
    return tune.Tuner(
        fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode=s.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            reuse_actors=True,
            max_concurrent_trials=packing.concurrent if s.algorithm == "grid" else None,
        ),
        run_config=tune.RunConfig(
            name=RAY_DIR,
            storage_path=base,
            callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def rebind(tuner: tune.Tuner, *, callbacks: list[Callback], scheduler) -> None:
    """Bind a restored ``Tuner`` to this session's callbacks and scheduler.

    ``Tuner.restore`` rebinds the experiment's storage (and every trial's checkpoints) to the
    folder it restores from, but takes the run config, callbacks included, and the tune
    config, scheduler included, from ``tuner.pkl``: the objects of the session that started
    the search, bound to the results folder *it* was given. A folder moved or copied and
    resumed elsewhere would then write its rows into the old folder. So the restored
    callbacks and scheduler are replaced with this session's, built from the folder given
    now (the searcher is restored from the folder's own snapshot by Tune).

    With Ray Client (``ray://``) the tuner lives in a remote actor: its callbacks are
    replaced through its run config; its scheduler keeps the pickled one, which only reads
    the old folder's epochs table to rebuild ASHA's rungs.
    """
    if tuner._local_tuner is not None:
        tuner._local_tuner.get_run_config().callbacks = callbacks
        tuner._local_tuner._tune_config.scheduler = scheduler
        return
    remote = tuner._remote_tuner
    run_config = ray.get(remote.get_run_config.remote())
    run_config.callbacks = callbacks
    ray.get(remote.set_run_config_and_remote_string_queue.remote(run_config, None))


class _TrialFailureFilter(logging.Filter):
    """Drops Tune's own report of trial failures: a Ray traceback per failure on the console.

    The live view prints each failure's message, and the trials table keeps its message
    (``error``) and traceback (``error_traceback``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Trial task failed", "Trials did not complete"))


def _quiet_trial_failures() -> None:
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _TrialFailureFilter) for f in logger.filters):
            logger.addFilter(_TrialFailureFilter())


def run_search(
    spec: Spec,
    *,
    results_root: str,
    packing: Packing,
    pretrained: dict[str, str],
    resume: bool = False,
    stream=None,
    status_every_s: float = 10.0,
    max_batches: int | None = None,
    budget: Budget | None = None,
) -> None:
    """Run the search to the end; results land in the Parquet store as trials end.

    A resumed search first moves unreadable result files to ``_quarantine/`` (listed);
    :class:`ResultsCallback` rebuilds their rows from the checkpoints and Tune's records.
    With ``budget`` the search stops launching trials when it is spent (:class:`TimeBudget`).
    The trackers of ``spec.tracking`` and the Optuna study export follow the trials table
    (:class:`Exports`).
    """
    _quiet_trial_failures()
    if resume:
        moved = ResultsStore(results_root, spec.experiment).quarantine_unreadable()
        if moved:
            print(
                f"note: {len(moved)} unreadable result file(s) moved to _quarantine/; their "
                "rows are rebuilt from the trials' checkpoints and Tune's records:\n  "
                + "\n  ".join(moved),
                flush=True,
            )
    callbacks = [
        ResultsCallback(results_root, spec, packing, budget=budget),
        Exports(results_root, spec),  # after ResultsCallback: it reads the rows written
        LiveView(
            spec,
            every_s=status_every_s,
            stream=stream,
            results_root=results_root,
            request=(packing.cpu, packing.gpu),
            budget=budget,
        ),
    ]
    if packing.gpu:  # a trial out of GPU memory is retried with fewer neighbours
        from tuner.gpu_memory import oom_callback

        callbacks.append(oom_callback(packing.cpu))
    tuner = build_tuner(
        spec,
        results_root=results_root,
        packing=packing,
        pretrained=pretrained,
        resume=resume,
        callbacks=callbacks,
        max_batches=max_batches,
        budget=budget,
    )
    tuner.fit()
