"""Trials per GPU from measured memory, and fewer neighbours for a trial that runs out of it.

Laptop mode packs several trials on each GPU. How many fit depends on the model, the
batch size, the input size and the transfer mode, so instead of a fixed count a short
probe trains the spec's most demanding trial of each model for a few batches and reads its
peak memory (``torch.cuda.max_memory_allocated``); :func:`trials_per_gpu` then packs as
many as fit in the GPU's memory less :data:`HEADROOM`, counting :data:`CONTEXT_BYTES` per
process for what the allocator statistics do not see (the CUDA context, cuDNN workspaces,
fragmentation).

A trial that still runs out of memory is not lost: Ray Tune retries it from its last
checkpoint (``search.max_failures``) and
:class:`tuner.tune.callbacks.FewerNeighbours` first doubles its GPU share
(:func:`next_share`), so it restarts with fewer neighbours (up to a whole GPU). That
callback is the Ray side; this module imports neither Ray nor, until a probe runs, torch.

The memory source is injectable (:class:`MemorySource`), so the planning is tested on a
machine without a GPU; ``benchmarks/gpu.py`` measures it on one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Protocol

HEADROOM = 0.15
"""Share of the GPU's memory left free by the packing."""

CONTEXT_BYTES = 768 * 2**20
"""Memory per trial process beyond ``max_memory_allocated`` (CUDA context, workspaces)."""

MAX_PER_GPU = 8
"""Most trials packed on one GPU, however small they are (they also share its compute)."""

PROBE_BATCHES = 3
"""Training batches of the probe (the first ones allocate the optimiser state)."""


class MemorySource(Protocol):
    """Where memory figures come from (the GPU, or a stand-in in tests)."""

    def total_bytes(self) -> int:
        """Memory of one GPU."""
        ...

    def peak_bytes(self, step: Callable[[], None]) -> int:
        """Peak memory allocated while ``step`` runs."""
        ...


class CudaMemory:
    """The memory of CUDA device ``device`` (``torch.cuda``)."""

    def __init__(self, device: int = 0) -> None:
        self.device = device

    def total_bytes(self) -> int:
        import torch

        return int(torch.cuda.get_device_properties(self.device).total_memory)

    def peak_bytes(self, step: Callable[[], None]) -> int:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        step()
        torch.cuda.synchronize(self.device)
        peak = int(torch.cuda.max_memory_allocated(self.device))
        torch.cuda.empty_cache()
        return peak


def trials_per_gpu(
    peak: int,
    total: int,
    *,
    headroom: float = HEADROOM,
    context: int = CONTEXT_BYTES,
    most: int = MAX_PER_GPU,
) -> int:
    """How many trials of peak memory ``peak`` fit on a GPU of ``total`` bytes (at least 1).

    Raises:
        ValueError: A non-positive ``peak`` or ``total``, or ``headroom`` outside [0, 1).
    """
    if peak <= 0 or total <= 0:
        raise ValueError(
            f"`peak > 0 and total > 0` must hold, but got (peak={peak}, total={total})"
        )
    if not 0 <= headroom < 1:
        raise ValueError(f"`0 <= headroom < 1` must hold, but got headroom={headroom}")
    fit = int(total * (1 - headroom) // (peak + context))
    return max(1, min(most, fit))


def gpu_share(per_gpu: int) -> float:
    """The fractional GPU of each of ``per_gpu`` trials, rounded down so they fit on one."""
    if per_gpu < 1:
        raise ValueError(f"per_gpu must be >= 1, but got per_gpu={per_gpu}")
    return math.floor(1000 / per_gpu) / 1000


def next_share(share: float) -> float | None:
    """The share of a trial retried after running out of memory (twice as much, at most 1)."""
    if share >= 1:
        return None
    return min(1.0, gpu_share(max(1, math.floor(1 / share + 1e-9) // 2)))


def is_out_of_memory(error: BaseException | str | None) -> bool:
    """Whether an error (or its text, as Ray passes it on) is a CUDA out-of-memory error."""
    if error is None:
        return False
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return "OutOfMemoryError" in text or "CUDA out of memory" in text


def probe_configs(spec) -> list:
    """The most demanding trial of each model of a spec, as :class:`TrialConfig` objects.

    Per model: the largest batch size; ``scratch`` (which trains what ``finetune`` trains)
    unless every trial is ``frozen`` with a weights file or ImageNet weights at hand, then
    ``frozen``; augmentation ``none``; :data:`PROBE_BATCHES` batches of one epoch.
    """
    from trainables.config import TrialConfig, has_weights
    from tuner.spec import RANGE_KINDS

    by_name = {p.name: p for p in spec.params}

    def values(name: str) -> list:
        p = by_name.get(name)
        if p is None:
            return [TrialConfig.model_fields[name].default]
        if p.kind in RANGE_KINDS:
            return [p.values[1]]
        return list(p.values)

    transfers = values("transfer")
    weights = next((w for w in values("weights") if has_weights(w) and w != "pretrain"), None)
    # finetune trains what scratch trains (same memory, no weights file needed); frozen
    # trials need far less, and are probed as such when the spec's weights are at hand
    frozen_only = set(transfers) == {"frozen"} and weights is not None
    transfer = "frozen" if frozen_only else "scratch"
    return [
        TrialConfig(
            data=spec.dataset,
            model=model,
            transfer=transfer,
            weights=weights if transfer == "frozen" else None,
            batch_size=int(max(values("batch_size"))),
            augmentation="none",
            epochs=1,
            max_batches=PROBE_BATCHES,
            feature_store=False,
        )
        for model in values("model")
    ]


def probe_step(cfg) -> Callable[[], None]:
    """One short training run of ``cfg`` (what :meth:`MemorySource.peak_bytes` measures)."""

    def step() -> None:
        from trainables.classify import Trial

        trial = Trial(cfg, log=lambda _: None)
        trial.fit()
        del trial

    return step


def plan_per_gpu(configs: Iterable, source: MemorySource) -> tuple[int, str]:
    """Trials per GPU for the largest peak among ``configs``, and a line for the user."""
    configs = list(configs)
    if not configs:
        raise ValueError("plan_per_gpu needs at least one trial configuration to probe")
    peaks = {cfg.model: source.peak_bytes(probe_step(cfg)) for cfg in configs}
    model, peak = max(peaks.items(), key=lambda kv: kv[1])
    total = source.total_bytes()
    n = trials_per_gpu(peak, total)
    note = (
        f"memory probe: peak {peak / 2**30:.2f} GiB ({model}, batch {configs[0].batch_size}) "
        f"+ {CONTEXT_BYTES / 2**30:.2f} GiB per process on a {total / 2**30:.0f} GiB GPU with "
        f"{HEADROOM:.0%} headroom -> {n} trial(s) per GPU"
    )
    return n, note
