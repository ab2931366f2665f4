"""Optuna's TPE without repeats: a configuration that has run is never run again.

Every configuration an Optuna search samples runs with the same seed (``search.seeds``:
the first one, unless ``seed`` is itself a hyperparameter), so a repeated configuration is
an identical trial whose result is already known. In a space of choices TPE repeats often:
over the 48 cells of ``benchmarks/search_efficiency.py``, 60 suggestions held only 33-38
distinct cells, one of them suggested up to 19 times. :class:`DistinctOptunaSearch` runs
each configuration once:

* a suggestion that has already run is told to the study again with its known result
  (a suggestion of a trial still running is told as failed, which TPE ignores), without
  running anything, and the sampler is asked again;
* after :data:`REASKS` repeats in a row, in a finite space (every parameter a choice or an
  integer range, at most :data:`MAX_CELLS` configurations), the next trial is a
  configuration never tried, drawn at random (seeded by ``search.sampler_seed``);
* when every configuration of a finite space has run or is running, the search is
  finished, however many ``num_samples`` it asked for.

A space with a continuous parameter has no repeats to speak of (a float is sampled again
with probability 0); there, after :data:`REASKS` repeats the next suggestion runs, repeat
or not.

The searcher is Ray's ``OptunaSearch`` otherwise (its sampler, its study, its snapshot:
the known results and the running trials are pickled with it, so a resumed search keeps
them).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

#: Repeated suggestions in a row before a never-tried configuration is drawn.
REASKS = 8
#: Largest space enumerated to draw never-tried configurations from.
MAX_CELLS = 10_000

Key = tuple


class _Branch(Exception):
    """The probe reached a parameter its path does not fix: it has ``n`` values."""

    def __init__(self, n: int):
        self.n = n


class _Continuous(Exception):
    """The space has a continuous parameter."""


class _Probe:
    """A stand-in for an Optuna trial that follows one path through a space's choices."""

    def __init__(self, path: tuple[int, ...]):
        self.path, self.params = path, {}

    def suggest_categorical(self, name: str, choices):
        depth = len(self.params)
        if depth == len(self.path):
            raise _Branch(len(choices))
        self.params[name] = value = list(choices)[self.path[depth]]
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False):
        if (high - low) // step + 1 > MAX_CELLS:
            raise _Continuous
        return self.suggest_categorical(name, range(low, high + 1, step))

    def suggest_float(self, *args, **kwargs):
        raise _Continuous


def finite_space(space: Callable, limit: int = MAX_CELLS) -> list[dict] | None:
    """Every configuration of a define-by-run ``space`` (the parameters it suggests), in
    order; ``None`` when it has a continuous parameter or more than ``limit`` of them."""
    if not callable(space):
        return None
    cells: list[dict] = []
    paths: list[tuple[int, ...]] = [()]
    while paths:
        path = paths.pop()
        probe = _Probe(path)
        try:
            space(probe)
        except _Branch as branch:
            paths.extend(path + (i,) for i in reversed(range(branch.n)))
            continue
        except _Continuous:
            return None
        cells.append(probe.params)
        if len(cells) > limit:
            return None
    return cells


def key(params: dict) -> Key:
    """A configuration's identity: its suggested parameters, in name order."""
    return tuple(sorted(params.items()))


class DistinctOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch`` that runs each configuration once (see the module).

    Args:
        draw_seed: Seed of the draw of never-tried configurations.
        *args, **kwargs: Those of ``OptunaSearch``.
    """

    def __init__(self, *args, draw_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._results: dict[Key, tuple[float | None, object]] = {}
        self._running: dict[str, Key] = {}
        self._draw = random.Random(draw_seed)
        self._cells: list[dict] | None | bool = False  # False: not enumerated yet
        self.repeats_told = 0

    def suggest(self, trial_id: str):
        for _ in range(REASKS):
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            k = key(self._ot_trials[trial_id].params)
            if k not in self._results and k not in self._running.values():
                return self._start(trial_id, k, config)
            self._tell_again(trial_id, k)
        untried = self._untried()
        if untried is not None and not untried:
            logger.warning(
                "search: every one of the space's %d configurations has run; the search "
                "ends here (num_samples asked for more)",
                len(self._cells),
            )
            return Searcher.FINISHED
        if untried:
            self._ot_study.enqueue_trial(dict(self._draw.choice(untried)))
        config = super().suggest(trial_id)
        return self._start(trial_id, key(self._ot_trials[trial_id].params), config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        k = self._running.pop(trial_id, None)
        super().on_trial_complete(trial_id, result=result, error=error)
        if k is None:
            return
        told = self._ot_study.get_trials(deepcopy=False)[self._ot_trials[trial_id].number]
        if told.state == TrialState.COMPLETE:
            self._results[k] = (told.value, told.state)
        else:  # pruned, failed, or left running by a value the study refused
            finished = told.state.is_finished()
            self._results[k] = (None, told.state if finished else TrialState.FAIL)

    def _start(self, trial_id: str, k: Key, config: dict) -> dict:
        self._running[trial_id] = k
        return config

    def _tell_again(self, trial_id: str, k: Key) -> None:
        """Tell the study a repeated suggestion's known result (failed while it runs)."""
        ot_trial = self._ot_trials.pop(trial_id)
        value, state = self._results.get(k, (None, TrialState.FAIL))
        self._ot_study.tell(ot_trial, value, state=state)
        self.repeats_told += 1

    def _untried(self) -> list[dict] | None:
        """The configurations never started, or ``None`` when the space is not finite."""
        if self._cells is False:
            self._cells = finite_space(self._space)
        if self._cells is None:
            return None
        started = set(self._results) | set(self._running.values())
        return [c for c in self._cells if key(c) not in started]
