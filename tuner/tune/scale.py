"""Per-trial costs of a search that would grow with the trials already run, kept flat.

Measured in ``benchmarks/scale.py`` (figures in the README's performance section). The
results tables have their own answer (:mod:`tuner.compact`); the other costs are here.

**Tune's experiment snapshot.** Tune snapshots the whole experiment (every trial's state,
the searcher, the callbacks) into ``tune/experiment_state-*.json`` and
``searcher-state-*.pkl``; both grow with the trials already run. Written every second, as
this project used to, or forced whenever a trial has saved ``CheckpointConfig(num_to_keep)``
checkpoints since the last snapshot (Tune does that so that no snapshot names a checkpoint
it deleted), the bytes written per trial grow with the number of trials. Here:

* **The period adapts to the snapshot's cost** (:func:`adaptive_snapshots`), in time and
  in bytes: Tune's ``"auto"`` period, ``max(MIN_PERIOD_S, 19 x the last snapshot's
  duration, its size / BYTES_PER_S)``, so that snapshots take at most :data:`SHARE` of the
  driver's time and write at most :data:`BYTES_PER_S` on average, whatever their size: the
  bytes written per trial stay flat as the search grows (with a period bounded by time
  alone, a snapshot that is quick to write but grows with the trials is rewritten as often
  at 4,000 trials as at 250). Tune's own ``"auto"`` has a floor of 10 s and no byte term;
  :data:`MIN_PERIOD_S` keeps a small search's snapshots about as fresh as before. An
  explicit ``TUNE_GLOBAL_CHECKPOINT_S`` number is respected.
* **No forced snapshots**: Tune keeps every checkpoint (``num_to_keep=None``, which turns
  the forcing off) and :class:`CheckpointPruner` deletes the old ones itself: it keeps the
  two newest checkpoints of each trial and every checkpoint that one of the last two
  snapshots names, so a search resumed from either snapshot finds its checkpoints.

What a snapshot lags behind costs nothing in the results: the Parquet tables are written as
results arrive and stay the record; a resumed search keeps the rows of trials that finished
after the snapshot and sets aside those of trials it never knew (see
:class:`tuner.tune.callbacks.ResultsCallback`).

**Optuna's TPE** reads every finished trial at every suggestion, in Python: its time per
suggestion grows with the study. :func:`tpe_sampler` uses Optuna's options for that case.

Elsewhere: :class:`~tuner.tune.callbacks.ResultsCallback` forgets a trial's rows once they
are written, :class:`~tuner.tune.callbacks.Exports` spaces the study export by its cost,
:class:`tuner.live.LiveView` counts the trials at most once a second.
"""

from __future__ import annotations

import os
import re
from collections import deque

import pyarrow.fs as pafs
from ray.tune import Callback

#: Share of the driver's time snapshots may take (Tune's "auto": 5 %).
SHARE = 0.05
#: Shortest period between two snapshots, seconds.
MIN_PERIOD_S = 1.0
#: Snapshot size written per second of search, at most, on average (1 MiB: 22 MB at 1,000
#: trials is rewritten every 21 s; Tune writes it to its staging folder, then copies it to
#: the results folder, uploaded there on ``s3://``).
BYTES_PER_S = 1024**2
#: Checkpoints kept per trial beyond those a snapshot names (Tune's num_to_keep before).
KEEP = 2
_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")


def adaptive_snapshots(
    min_period_s: float = MIN_PERIOD_S, share: float = SHARE, bytes_per_s: float = BYTES_PER_S
) -> bool:
    """Make Tune's ``"auto"`` snapshot period ``max(min_period_s, duration x (1 - share) /
    share, size / bytes_per_s)`` of the last snapshot.

    Sets ``TUNE_GLOBAL_CHECKPOINT_S=auto`` unless the variable is set, and adjusts Tune's
    experiment checkpoint manager (a private class: one place to follow when Ray changes).

    Returns:
        Whether the period adapts (False: Ray changed, its own ``"auto"`` applies).
    """
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    try:
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    except ImportError:
        return False
    if not hasattr(_ExperimentCheckpointManager, "_update_auto_checkpoint_time"):
        return False

    def update(self, time_taken: float) -> None:
        if self._auto_checkpoint_enabled:
            size = snapshot_bytes(getattr(self._storage, "experiment_driver_staging_path", None))
            self._checkpoint_period = max(
                min_period_s, time_taken * (1 - share) / share, size / bytes_per_s
            )

    _ExperimentCheckpointManager._update_auto_checkpoint_time = update
    return True


def snapshot_bytes(folder: str | None) -> int:
    """Size of the snapshot files in an experiment folder (its top-level files: the
    experiment state, the searcher's, the callbacks', ``tuner.pkl``)."""
    if not folder:
        return 0
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat().st_size
    return total


class CheckpointPruner(Callback):
    """Deletes a trial's old checkpoints, but never one that a recent snapshot names.

    Tune's ``num_to_keep`` deletes checkpoints as soon as newer ones exist, and so forces a
    snapshot every ``num_to_keep`` checkpoints of any trial. With ``num_to_keep=None`` Tune
    deletes nothing and forces nothing; this callback keeps the :data:`KEEP` newest
    checkpoints of each trial plus those named by the last two snapshots (Tune writes a
    snapshot's trial states, then asks the callbacks for their state: :meth:`get_state`
    records what it named; the one before stays pinned in case this one is cut short).
    """

    def __init__(self) -> None:
        self.setup()

    def setup(self, **info) -> None:
        #: Trial folder -> (filesystem, newest checkpoint path).
        self.latest: dict[str, tuple[pafs.FileSystem, str]] = {}
        #: Checkpoint paths named by the last two snapshots.
        self.pins: deque[set[str]] = deque([set(), set()], maxlen=2)
        #: Trial folders holding more than KEEP checkpoints (some pinned when last pruned).
        self.crowded: set[str] = set()
        self._restored = False

    def __getstate__(self) -> dict:
        return {}  # nothing to restore: a resumed search starts from its own snapshot

    def __setstate__(self, state: dict) -> None:
        self.setup()

    def get_state(self) -> dict | None:
        self.pins.append({path for _, path in self.latest.values()})
        for folder in list(self.crowded):
            self._prune(self.latest[folder][0], folder)
        return None

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._restored:
            return
        self._restored = True  # a resumed search: the restored snapshot names these
        named = {t.checkpoint.path for t in trials if t.checkpoint is not None}
        self.pins.append(named)
        self.pins.append(set(named))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        folder = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
        self.latest[folder] = (checkpoint.filesystem, checkpoint.path)
        self._prune(checkpoint.filesystem, folder)

    def _prune(self, fs: pafs.FileSystem, folder: str) -> None:
        """Delete the checkpoints of a trial folder that are neither new nor pinned."""
        found = []
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            match = _CHECKPOINT.search(info.base_name)
            if match and info.type == pafs.FileType.Directory:
                found.append((int(match.group(1)), info.path))
        found.sort()
        pinned = set().union(*self.pins)
        kept = len(found)
        for _, path in found[:-KEEP]:
            if path not in pinned:
                fs.delete_dir(path)
                kept -= 1
        if kept > KEEP:
            self.crowded.add(folder)
        else:
            self.crowded.discard(folder)


def tpe_sampler(seed: int | None):
    """Optuna's TPE with the options for large, parallel studies.

    ``multivariate=True``: one joint density over all parameters per suggestion, instead of
    one pass over the trials per parameter (and it models how parameters interact);
    ``constant_liar=True``: trials still running count as bad results, so that the trials
    suggested while others run (``search.max_concurrent``) spread out instead of repeating
    the same point.
    """
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
