"""Tune schedulers: ASHA rebuilt on resume, and the time budget over ASHA or FIFO."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuner.budget import Budget, format_duration
from tuner.results import FINISHED_STATUSES, ResultsStore, load


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
        store = ResultsStore(self.results_root, self.experiment)
        trials, epochs = load(store.uri, on_corrupt="warn")
        done = trials[trials["status"].isin(FINISHED_STATUSES)]
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
