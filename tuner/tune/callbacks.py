"""Driver-side Tune callbacks: the results tables, the trackers and exports, the live view,
fewer neighbours for a trial out of GPU memory.

:class:`ResultsCallback` writes the Parquet tables (through :class:`~tuner.results.ResultsStore`,
which owns every row and path) as trials report and end, :class:`Segments` compacts them as
the search goes; :class:`Exports` feeds the trackers
and the Optuna study export from them; :class:`LiveViewCallback` is :class:`tuner.live.LiveView`
as a Tune callback; :class:`FewerNeighbours` gives a trial retried after a CUDA
out-of-memory error a larger GPU share (:mod:`tuner.gpu_memory`).
"""

from __future__ import annotations

import json
import time

import ray
from ray.tune import Callback

from tuner.budget import Budget
from tuner.compact import SEGMENT_TRIALS
from tuner.gpu_memory import is_out_of_memory, next_share
from tuner.live import LiveView, never_ran, status_of
from tuner.packing import Packing
from tuner.results import ERROR, ResultsStore, effective_defaults, epoch_row, trial_row, utc
from tuner.spec import Spec, flat_params
from tuner.tune.errors import trial_error
from tuner.tune.trainable import HISTORY, LAST_RESULT


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

        An epochs file that cannot be read is quarantined by the store; the rows are then
        rebuilt from the trial's checkpoint, when ``trial`` is given.
        """
        if trial_id not in self.epochs:
            rows = self.store.read_epochs(trial_id)
            if rows is None:
                rows = (self._rebuild_epochs(trial) if trial is not None else None) or {}
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
                **epoch_row(result, result.get("reported_at")),
                "node": result.get("hostname"),
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
        old = self.store.rebase_checkpoints()
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
            row = self._trial_row(trial, status_of(trial, trial.last_result or {}, self.spec))
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
        # stamped when the driver received it (sub-second; ResumableASHA replays in this order)
        rows[int(result["epoch"])] = epoch_row(result, time.time())
        self.last[trial.trial_id] = result
        self.store.write_epochs(trial.trial_id, list(rows.values()))

    def _trial_row(
        self, trial, status: str, error: str | None = None, traceback: str | None = None
    ) -> dict:
        """The trials-table row of a trial that ended (see :func:`tuner.results.trial_row`)."""
        last = self.last.get(trial.trial_id, {})
        if not last and trial.last_result:
            last = trial.last_result
        checkpoint = trial.checkpoint
        spec = self.spec
        return trial_row(
            trial_id=trial.trial_id,
            status=status,
            last=last,
            params={**self.defaults, **flat_params(trial.config)},
            epochs=self._epoch_rows(trial.trial_id),
            dataset=spec.dataset.preset if spec.dataset else spec.trainable,
            max_epochs=spec.max_epochs,
            error=error,
            error_traceback=traceback,
            cpus=self.packing.cpu,
            gpu_fraction=self.packing.gpu,
            # Node losses reported as preemptions do not count in num_failures.
            retries=max(trial.num_failures, self.recovered.get(trial.trial_id, 0)),
            checkpoint=checkpoint.path if checkpoint is not None else None,
            start_time=utc(self.started.get(trial.trial_id) or trial.run_metadata.start_time),
            end_time=utc(time.time()),
        )

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
        self.epochs.pop(row["trial_id"], None)  # the store holds them; memory stays flat
        self.last.pop(row["trial_id"], None)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.finished:
            return
        last = self.last.get(trial.trial_id) or trial.last_result or {}
        if never_ran(trial, last, self.budget):
            return
        self._write_final(self._trial_row(trial, status_of(trial, last, self.spec, self.budget)))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.finished:
            return
        message, traceback = trial_error(trial)
        self._write_final(self._trial_row(trial, ERROR, message, traceback))


#: The study export waits at least this many times its last duration (it reads the whole
#: trials table: at most 5 % of the driver's time, whatever the number of trials).
EXPORT_RATIO = 19


class Exports(Callback):
    """Feeds the trackers (:mod:`tuner.tracking`) and the Optuna export
    (:mod:`tuner.optuna_export`) from what :class:`ResultsCallback` writes.

    Placed after :class:`ResultsCallback`: at a trial's end it reads the trial's row back
    from the store, so every tracker receives exactly the Parquet row. Per-epoch figures go
    to the trackers as they arrive. The study export is rewritten at most every
    :data:`~tuner.optuna_export.EVERY_S` seconds (or :data:`EXPORT_RATIO` times its last
    duration, when longer) as trials end; ``tuner.run`` writes the final one.
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
        self.last_export = self.export_s = 0.0

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

    def _ended(self, trial) -> None:
        if trial.trial_id in self.finished:
            return
        if self._trackers() is not None:
            row = self.store.read_trial(trial.trial_id)  # None: cancelled before it ran
            if row is not None:
                self.tracking.end(row, self._params(trial))
        if time.time() - self.last_export >= max(self.every_s, self.export_s * EXPORT_RATIO):
            self._export()

    def _export(self) -> None:
        from tuner.optuna_export import export

        self.last_export = time.time()
        try:
            export(self.store.uri, self.spec)
            self.export_s = time.time() - self.last_export
        except Exception as err:  # the study file is a convenience; the tables are the record
            print(f"warning: optuna.db export failed: {type(err).__name__}: {err}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials, **info) -> None:
        """Close the trackers; the final study export is ``tuner.run``'s, once the tables
        are compacted (one export, reading one file per table)."""
        if self.tracking is not None:
            self.tracking.close()


class Segments(Callback):
    """Compacts the results tables as a search goes: a segment every :attr:`EVERY` trials.

    A long search otherwise leaves one Parquet file per trial in each table until its end,
    and every reader (``tuner.rank``, the report, the study export) then opens thousands of
    files. After every :attr:`EVERY` trials that end, this packs the finished ones into one
    more compacted file per table (``compact(merge=False)``, :mod:`tuner.compact`: each row
    goes into one segment, so the cost per trial stays flat), and ``tuner.run`` merges
    the segments at the end. Placed after :class:`ResultsCallback` and :class:`Exports`, in
    the driver thread that writes the rows: nothing writes the folder while it compacts.
    Only for a local results folder (compaction swaps folders in one step).
    """

    #: Trials ended between two segments.
    EVERY = SEGMENT_TRIALS

    def __init__(self, exp_dir: str, every: int | None = None):
        self.exp_dir = exp_dir
        self.every = every or self.EVERY
        self.ended = 0
        self.enabled = "://" not in exp_dir

    def _ended(self) -> None:
        self.ended += 1
        if not self.enabled or self.ended < self.every:
            return
        from tuner.compact import CompactionError, compact

        self.ended = 0
        try:
            compact(self.exp_dir, merge=False)
        except CompactionError as err:  # a filesystem without the atomic swap: files stay
            print(f"note: results not compacted during the search: {err}", flush=True)
            self.enabled = False

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended()


class LiveViewCallback(LiveView, Callback):
    """:class:`~tuner.live.LiveView` as a Tune callback, reading failures from Tune's record.

    Without ``resources``, what the cluster has is asked of Ray.
    """

    def __init__(self, spec: Spec, **kwargs):
        kwargs.setdefault("resources", ray.cluster_resources)
        super().__init__(spec, **kwargs)

    def error_of(self, trial) -> str:
        return trial_error(trial)[0]


class FewerNeighbours(Callback):
    """A trial retried after a CUDA out-of-memory error gets twice the GPU share (fewer
    neighbours, up to a whole GPU); the retry itself is Tune's (``search.max_failures``).

    ``cpu``: the CPUs of a trial, kept as they are. ``retried`` maps each trial id given a
    larger share to that share.
    """

    def __init__(self, cpu: float) -> None:
        self.cpu = cpu
        self.retried: dict[str, float] = {}

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        message, text = trial_error(trial)
        if not is_out_of_memory(f"{message}\n{text or ''}"):
            return
        share = trial.placement_group_factory.required_resources.get("GPU", 0.0)
        new = next_share(share) if share else None
        if new is not None:
            trial.update_resources({"CPU": self.cpu, "GPU": new})
            self.retried[trial.trial_id] = new
