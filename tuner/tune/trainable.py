"""The Ray Tune function trainable: one trial of a search, run in a Ray worker.

It restores the trial's checkpoint, calls the trainable module's ``run_trial`` (
:mod:`trainables.classify` or :mod:`trainables.toy`, by the spec's ``trainable``) and reports
every epoch to Tune with a checkpoint.
"""

from __future__ import annotations

import importlib
import json
import shutil
import socket
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune import Checkpoint

from tuner import provenance
from tuner.spec import flat_params


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


def node_cpus(node_id: str) -> float | None:
    """The CPU resource Ray gives the node ``node_id`` (``None`` if it is not listed)."""
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("Alive"):
            return node.get("Resources", {}).get("CPU")
    return None


def trainable(
    config: dict,
    *,
    kind: str,
    data: dict | None,
    pretrained: dict,
    cpus: float,
    max_batches: int | None,
    finished: dict[str, dict] | None = None,
    share_idle_cpus: bool = False,
):
    """The Ray Tune function trainable: restore, train, report every epoch.

    A trial restored from the checkpoint of its last epoch has nothing left to train: it
    reports the result saved in that checkpoint again. A trial listed in ``finished`` (trial
    id -> its last epoch row in the results store: a resumed search restores a trial that
    finished after Tune's last snapshot as unfinished, from an older checkpoint) reports
    that row again, without training. With ``share_idle_cpus`` a CPU trial also uses the
    CPUs of its node that no other trial uses (:mod:`trainables.cpushare`).
    """
    provenance.check_process()  # the driver's code, not another installed copy
    from trainables.config import DataConfig

    module = importlib.import_module(f"trainables.{kind}")
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

        params = flat_params(config)
        if params.get("weights") == "pretrain" and params.get("model") in pretrained:
            from tuner.pretrain import local_checkpoint

            # A remote stage (s3://, gs://, file:// results) is downloaded once per node.
            model = params["model"]
            cache_dir = (data or {}).get("cache_dir")
            pretrained = {**pretrained, model: local_checkpoint(pretrained[model], cache_dir)}
        module.run_trial(
            params,
            data=DataConfig.model_validate(data) if data else None,
            report=report,
            checkpoint_dir=work_dir,
            resume=restored is not None,
            num_threads=max(1, int(cpus)),
            pretrained=pretrained,
            max_batches=max_batches,
            cpu_pool=node_cpus(node_id) if share_idle_cpus else None,
        )
        if not reported and last_file.is_file():
            tune.report(json.loads(last_file.read_text()))
