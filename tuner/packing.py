"""How trials share a machine or a cluster: CPUs and GPU share per trial, trials at once.

No Ray here: the driver asks Ray what the cluster has (:func:`tuner.tune.init_ray`) and this
module decides how trials are packed onto it (``--laptop`` or the spec's ``resources``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.spec import Spec


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
