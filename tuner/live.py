"""The live view of a running search: one status line, and a line per trial that ends.

No Ray here (it reads Tune's trial objects by their attributes); the search runs it through
:class:`tuner.tune.callbacks.LiveViewCallback`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from trainables.numbers import param_value
from tuner.budget import Budget
from tuner.results import (
    COMPLETED,
    EARLY_STOPPED,
    ERROR,
    FINISHED_STATUSES,
    STOPPED_BUDGET,
    TRIAL_STATUSES,
    ResultsStore,
    TrialStatus,
    final_status,
)
from tuner.spec import Spec, flat_params


def status_of(trial, last: dict, spec: Spec, budget: Budget | None = None) -> TrialStatus:
    """The final status of a Tune trial that ended (see :func:`tuner.results.final_status`)."""
    epochs = int(flat_params(trial.config).get("epochs") or spec.max_epochs)
    return final_status(
        errored=trial.status == "ERROR",
        last=last,
        epochs=epochs,
        budget_spent=budget is not None and budget.spent(),
    )


def never_ran(trial, last: dict, budget: Budget | None) -> bool:
    """A trial cancelled by the budget before it started: it has no result and no row."""
    return not last and not trial.last_result and budget is not None and budget.spent()


class LiveView:
    """A compact status line: running / finished / stopped early / failed, best, elapsed.

    With ``results_root``, a resumed search counts the trials that already have a final
    row and does not announce them again. With ``request`` (one trial's CPUs and GPU
    share), a search whose trials cannot fit the cluster as it is (an autoscaler has yet
    to add nodes) says so in the status line: what a trial needs, what the cluster has,
    and how long nothing has run (``resources`` says what the cluster has now).

    It implements the hooks of a Ray Tune ``Callback`` on duck-typed trials (``trial_id``,
    ``config``, ``status``, ``last_result``) without importing Ray: the search runs it as
    :class:`tuner.tune.callbacks.LiveViewCallback`.
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
        self.resources = resources
        self.setup()

    def setup(self, **info) -> None:
        self.t0 = time.time()
        self.last_print = 0.0
        self.counts = dict.fromkeys(TRIAL_STATUSES, 0)
        self.best: tuple[float, str] | None = None
        #: Trial id -> (best metric value, its epoch) so far.
        self.trial_best: dict[str, tuple[float, int | None]] = {}
        self.running = self.pending = 0
        #: Since when nothing has run while trials were pending (``None``: not so now).
        self.idle_since: float | None = None
        self.finished: set[str] | None = None

    def error_of(self, trial) -> str:
        """The message of a trial's last failure (Tune's record: see the Ray subclass)."""
        return "trial failed"

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self.finished is not None:
            return
        self.finished = set()
        if self.results_root is not None:
            statuses = ResultsStore(self.results_root, self.spec.experiment).trial_statuses()
            for trial_id, status in statuses.items():
                if status in FINISHED_STATUSES:
                    self.finished.add(trial_id)
                    self.counts[status] += 1

    def _describe(self, trial) -> str:
        p = flat_params(trial.config)
        keys = [q.name for q in self.spec.searched if q.name in p]
        return " ".join(f"{k}={param_value(p[k])}" for k in keys) or trial.trial_id

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
            f"running {self.running} | finished {c[COMPLETED]} | "
            f"stopped early {c[EARLY_STOPPED]} | failed {c[ERROR]}"
            + (f" | stopped by budget {c[STOPPED_BUDGET]}" if c[STOPPED_BUDGET] else "")
            + f"{best}{self._waiting()}"
        )

    def _waiting(self) -> str:
        """What the pending trials wait for, when one trial does not fit the cluster now."""
        if self.idle_since is None or self.request is None or self.resources is None:
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
        if never_ran(trial, last, self.budget):
            return
        self._ended(trial, status_of(trial, last, self.spec, self.budget))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in (self.finished or ()):
            return
        self._ended(trial, ERROR)
        self._print(f"{'':<13} {self.error_of(trial)[:300]}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        cause = self.error_of(trial)[:300]
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
