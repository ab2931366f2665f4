"""Assemble a spec's ``tune.Tuner`` (or restore it) and run the search.

Optuna's TPE (or a grid), ASHA (or no scheduler), per-trial resources, failure retries from
the last checkpoint, and the driver-side callbacks of :mod:`tuner.tune.callbacks`.
"""

from __future__ import annotations

import logging

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter

from tuner.budget import Budget
from tuner.packing import Packing
from tuner.results import RAY_DIR, ResultsStore, experiment_path
from tuner.spec import OptunaSpace, Spec, grid_cells
from tuner.tune.callbacks import (
    Exports,
    FewerNeighbours,
    LiveViewCallback,
    ResultsCallback,
    Segments,
)
from tuner.tune.distinct import DistinctOptunaSearch
from tuner.tune.scale import CheckpointPruner, adaptive_snapshots, tpe_sampler
from tuner.tune.schedulers import BudgetASHA, BudgetFIFO, ResumableASHA
from tuner.tune.trainable import trainable


def can_resume(results_root: str, experiment: str) -> bool:
    """Whether Ray's state for this experiment exists (a search to continue)."""
    return tune.Tuner.can_restore(f"{experiment_path(results_root, experiment)}/{RAY_DIR}")


def _scheduler(spec: Spec, results_root: str, budget: Budget | None):
    """ASHA rebuilt on resume (``scheduler.type: asha``) or none, under the time budget."""
    if spec.scheduler.type == "asha":
        asha = {
            "results_root": str(results_root),
            "experiment": spec.experiment,
            "time_attr": "epoch",
            "max_t": spec.max_epochs,
            "grace_period": spec.scheduler.grace_period,
            "reduction_factor": spec.scheduler.reduction_factor,
        }
        return BudgetASHA(budget=budget, **asha) if budget else ResumableASHA(**asha)
    return BudgetFIFO(budget=budget) if budget is not None else None


def _sampling(spec: Spec, packing: Packing) -> tuple[dict, object, int]:
    """``(param_space, search_alg, num_samples)``: every grid cell, or Optuna's TPE (each
    configuration run once: :class:`~tuner.tune.distinct.DistinctOptunaSearch`)."""
    s = spec.search
    if s.algorithm == "grid":
        return {"cell": tune.grid_search(grid_cells(spec))}, None, 1
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search_alg = DistinctOptunaSearch(
        OptunaSpace(spec.params, s.seed_list[0]),
        metric=s.metric,
        mode=s.mode,
        sampler=tpe_sampler(s.sampler_seed),
        points_to_evaluate=[dict(p) for p in s.points] or None,
        draw_seed=s.sampler_seed,
    )
    if packing.concurrent:
        search_alg = ConcurrencyLimiter(search_alg, max_concurrent=packing.concurrent)
    return {}, search_alg, s.num_samples


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
    adaptive_snapshots()
    data = spec.dataset.model_dump(mode="json") if spec.dataset else None
    finished = ResultsStore(results_root, spec.experiment).final_results() if resume else {}
    fn = tune.with_parameters(
        trainable,
        kind=spec.trainable,
        data=data,
        pretrained=pretrained,
        cpus=packing.cpu,
        max_batches=max_batches,
        finished=finished,
        share_idle_cpus=spec.resources.share_idle_cpus and packing.gpu == 0,
    )
    fn = tune.with_resources(fn, {"cpu": packing.cpu, "gpu": packing.gpu})
    base = experiment_path(results_root, spec.experiment)
    scheduler = _scheduler(spec, results_root, budget)
    if resume:
        tuner = tune.Tuner.restore(
            f"{base}/{RAY_DIR}", fn, resume_unfinished=True, resume_errored=True
        )
        rebind(tuner, callbacks=callbacks, scheduler=scheduler)
        return tuner
    s = spec.search
    param_space, search_alg, num_samples = _sampling(spec, packing)
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
            # Tune keeps every checkpoint and forces no snapshot; CheckpointPruner keeps two
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
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
    (:class:`Exports`; the final export is the caller's, ``tuner.run`` writes it after
    compacting the tables), which is compacted as trials end (:class:`Segments`). With
    GPUs, a trial out of GPU memory is retried with a larger share (:class:`FewerNeighbours`).
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
        LiveViewCallback(
            spec,
            every_s=status_every_s,
            stream=stream,
            results_root=results_root,
            request=(packing.cpu, packing.gpu),
            budget=budget,
        ),
        CheckpointPruner(),
        Segments(ResultsStore(results_root, spec.experiment).uri),  # after the writers
    ]
    if packing.gpu:  # a trial out of GPU memory is retried with fewer neighbours
        callbacks.append(FewerNeighbours(packing.cpu))
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
