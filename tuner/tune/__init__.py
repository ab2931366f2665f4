"""Everything that imports ``ray``: Ray Tune assembly, the trial adapter, Ray itself.

The rest of the tuner stands without Ray: the spec (:mod:`tuner.spec`), trial packing
(:mod:`tuner.packing`), the live view (:mod:`tuner.live`), the results store
(:mod:`tuner.results`) and the reports. A change of Ray's API touches this package only.

Modules, by job:

* :mod:`tuner.tune.session`: start a private local Ray or join a cluster; ask every node.
* :mod:`tuner.tune.trainable`: the function trainable a Ray worker runs for one trial.
* :mod:`tuner.tune.callbacks`: driver-side callbacks (results tables, exports, live view,
  fewer neighbours for a trial out of GPU memory).
* :mod:`tuner.tune.errors`: a failed trial's message and traceback.
* :mod:`tuner.tune.schedulers`: ASHA rebuilt on resume; the time budget.
* :mod:`tuner.tune.scale`: snapshot period, checkpoint pruning and TPE options that keep
  the cost per trial flat as a search grows.
* :mod:`tuner.tune.distinct`: Optuna's TPE that runs each configuration once.
* :mod:`tuner.tune.assemble`: the ``tune.Tuner`` of a spec, and :func:`run_search`.

Fault tolerance: a trial that crashes, or whose node dies, is retried from its last
checkpoint (``search.max_failures``); a killed driver is continued with ``--resume`` from
Tune's experiment snapshot (trials and the Optuna searcher), and
:class:`~tuner.tune.schedulers.ResumableASHA` rebuilds the scheduler's rung records, which
the snapshot does not hold, from the epochs table.
"""

import os

# Before ray is imported: no TensorBoard/CSV/JSON loggers (the Parquet store is the record).
# The experiment snapshot's period adapts to its cost (tuner.tune.scale.adaptive_snapshots).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "auto")

from tuner.tune.assemble import build_tuner, can_resume, rebind, run_search  # noqa: E402
from tuner.tune.callbacks import (  # noqa: E402
    Exports,
    FewerNeighbours,
    LiveViewCallback,
    ResultsCallback,
    Segments,
)
from tuner.tune.distinct import DistinctOptunaSearch, finite_space  # noqa: E402
from tuner.tune.errors import error_message, trial_error  # noqa: E402
from tuner.tune.scale import CheckpointPruner, adaptive_snapshots, tpe_sampler  # noqa: E402
from tuner.tune.schedulers import BudgetASHA, BudgetFIFO, ResumableASHA, TimeBudget  # noqa: E402
from tuner.tune.session import (  # noqa: E402
    alive_nodes,
    code_skew_on_nodes,
    init_ray,
    job_client,
    missing_on_nodes,
    on_every_node,
    shutdown_ray,
    visible_gpus,
)
from tuner.tune.trainable import HISTORY, LAST_RESULT, trainable  # noqa: E402

__all__ = [
    "HISTORY",
    "LAST_RESULT",
    "BudgetASHA",
    "BudgetFIFO",
    "CheckpointPruner",
    "DistinctOptunaSearch",
    "Exports",
    "FewerNeighbours",
    "LiveViewCallback",
    "ResultsCallback",
    "ResumableASHA",
    "Segments",
    "TimeBudget",
    "adaptive_snapshots",
    "alive_nodes",
    "build_tuner",
    "can_resume",
    "code_skew_on_nodes",
    "error_message",
    "finite_space",
    "init_ray",
    "job_client",
    "missing_on_nodes",
    "on_every_node",
    "rebind",
    "run_search",
    "shutdown_ray",
    "tpe_sampler",
    "trainable",
    "trial_error",
    "visible_gpus",
]
