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
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
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
from ray.tune import Callback, Checkpoint  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from tuner.results import ResultsStore  # noqa: E402
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


def plan_packing(spec: Spec, *, laptop: bool, cpus: int, gpus: float, per_gpu: int) -> Packing:
    """Resources per trial.

    Without ``laptop`` the spec's ``resources`` are used as written. In laptop mode, trials
    are packed onto this machine: with GPUs, ``per_gpu`` trials share each GPU (or the
    spec's fractional ``gpu``) and the cores are split between them; without a GPU the
    cores are split between ``search.max_concurrent`` trials (default: one per core).
    """
    res, limit = spec.resources, spec.search.max_concurrent
    if not laptop:
        gpu = res.gpu if gpus else 0.0
        note = f"{res.cpu:g} CPU" + (f" + {gpu:g} GPU" if gpu else "") + " per trial"
        if res.gpu and not gpus:
            note += f" (spec asks gpu: {res.gpu:g} but no GPU is visible: trials use the CPU)"
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
    from trainables.config import DataConfig

    module = importlib.import_module(TRAINABLES[kind])
    # Several nodes of one machine share a host name: the node id tells them apart.
    node_id = ray.get_runtime_context().get_node_id()
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


def _status(trial, last: dict, epochs: int) -> str:
    if trial.status == "ERROR":
        return "error"
    done = int(last.get("epoch") or 0)
    return "completed" if done >= epochs and last.get("test_acc") is not None else "early-stopped"


FINISHED = ("completed", "early-stopped")


class ResultsCallback(Callback):
    """Writes the trials and epochs Parquet tables from the driver as results arrive.

    Epoch rows are keyed by epoch, so a trial retried from its last checkpoint replaces,
    never duplicates, the epochs it runs again; a resumed search reads back the rows
    already written before adding to them. On resume, trials the store already holds as
    finished keep their rows (a trial that finished after Tune's last snapshot is restored
    as unfinished and may report again), and the rows of trials that the snapshot never
    knew (started after it, so they are never resumed) are moved to ``_orphaned/``.
    """

    def __init__(self, results_root: str, spec: Spec, packing: Packing):
        self.results_root, self.spec, self.packing = results_root, spec, packing
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

    def _epoch_rows(self, trial_id: str) -> dict[int, dict]:
        if trial_id not in self.epochs:
            import pandas as pd

            path = f"{self.store.dir}/epochs/{trial_id}.parquet"
            rows: dict[int, dict] = {}
            info = self.store.fs.get_file_info(path)
            if info.type.name == "File":
                import pyarrow.parquet as pq

                old = pq.read_table(path, filesystem=self.store.fs).to_pandas()
                old = old.astype(object).where(pd.notna(old), None)
                rows = {int(r["epoch"]): dict(r) for _, r in old.iterrows()}
            self.epochs[trial_id] = rows
        return self.epochs[trial_id]

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

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.recovered[trial.trial_id] = self.recovered.get(trial.trial_id, 0) + 1

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if trial.trial_id in self.finished:
            return
        rows = self._epoch_rows(trial.trial_id)
        row = {
            **result,
            "node": result.get("hostname") or result.get("node_ip"),
            # when the driver received it (sub-second; ResumableASHA replays in this order)
            "time": _utc(time.time()),
        }
        rows[int(result["epoch"])] = row
        self.last[trial.trial_id] = result
        self.store.write_epochs(trial.trial_id, list(rows.values()))

    def _trial_row(self, trial, status: str, error: str | None = None) -> dict:
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
            **params,
            **last,
            **decoded,
            "trial_id": trial.trial_id,
            "status": status,
            "error": error,
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
        epochs = int(flat_params(trial.config).get("epochs") or self.spec.max_epochs)
        self._write_final(self._trial_row(trial, _status(trial, last, epochs)))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.finished:
            return
        error = None
        err = trial.get_error()
        if err is not None:
            error = str(err).strip()[-4000:]
        self._write_final(self._trial_row(trial, "error", error or "trial failed"))


class LiveView(Callback):
    """A compact status line: running / finished / stopped early / failed, best, elapsed.

    With ``results_root``, a resumed search counts the trials that already have a final
    row and does not announce them again.
    """

    def __init__(
        self, spec: Spec, every_s: float = 10.0, stream=None, results_root: str | None = None
    ):
        self.spec, self.every_s, self.stream = spec, every_s, stream
        self.results_root = results_root
        self.setup()

    def setup(self, **info) -> None:
        self.t0 = time.time()
        self.last_print = 0.0
        self.counts = {"completed": 0, "early-stopped": 0, "error": 0}
        self.best: tuple[float, str] | None = None
        #: Trial id -> (best metric value, its epoch) so far.
        self.trial_best: dict[str, tuple[float, int | None]] = {}
        self.running = 0
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
            f"stopped early {c['early-stopped']} | failed {c['error']}{best}"
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
        epochs = int(flat_params(trial.config).get("epochs") or self.spec.max_epochs)
        self._ended(trial, _status(trial, last, epochs))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial, "error")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        err = trial.get_error()
        cause = str(err).strip().splitlines()[-1][:200] if err is not None else "trial failed"
        self._print(
            f"{'retrying':<13} {self._describe(trial)}  failure {trial.num_failures} of "
            f"{trial.max_failures} allowed, from its last checkpoint: {cause}"
        )

    def on_step_end(self, iteration, trials, **info) -> None:
        self.running = sum(t.status == "RUNNING" for t in trials)
        if time.time() - self.last_print >= self.every_s:
            self.last_print = time.time()
            self._print(self.status_line())

    def on_experiment_end(self, trials, **info) -> None:
        self.running = 0
        self._print(self.status_line())


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
        # Trial workers on other nodes do not inherit this process's environment.
        env = {k: v for k, v in os.environ.items() if k.startswith("TUNER_")}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **quiet)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=num_gpus,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            **quiet,
        )
    return ray.cluster_resources()


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this driver is connected to."""
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def missing_on_nodes(path: str) -> dict[str, str]:
    """Alive nodes on which ``path`` does not exist (node id -> node IP).

    One zero-CPU task per node, pinned to it, looks at the path: every node must read a
    dataset from the same path (a shared mount, or a copy synced by cluster setup).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def exists(p: str) -> bool:
        return Path(p).expanduser().exists()

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    found = ray.get(
        [
            exists.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(path)
            for n in nodes
        ]
    )
    return {
        n["NodeID"]: n["NodeManagerAddress"] for n, ok in zip(nodes, found, strict=True) if not ok
    }


def shutdown_ray() -> None:
    """Disconnect from Ray (and stop it when this process started it)."""
    if ray.is_initialized():
        ray.shutdown()


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
) -> tune.Tuner:
    """Assemble (or restore) the ``tune.Tuner`` of a spec."""
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
    if resume:
        return tune.Tuner.restore(
            f"{base}/{RAY_DIR}", fn, resume_unfinished=True, resume_errored=True
        )
    s = spec.search
    scheduler = None
    if spec.scheduler.type == "asha":
        scheduler = ResumableASHA(
            results_root=str(results_root),
            experiment=spec.experiment,
            time_attr="epoch",
            max_t=spec.max_epochs,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
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
) -> None:
    """Run the search to the end; results land in the Parquet store as trials end."""
    callbacks = [
        ResultsCallback(results_root, spec, packing),
        LiveView(spec, every_s=status_every_s, stream=stream, results_root=results_root),
    ]
    tuner = build_tuner(
        spec,
        results_root=results_root,
        packing=packing,
        pretrained=pretrained,
        resume=resume,
        callbacks=callbacks,
        max_batches=max_batches,
    )
    tuner.fit()
