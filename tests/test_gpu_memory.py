"""Trials per GPU from measured memory (memory source injected: no GPU needed)."""

from __future__ import annotations

import pytest

from tuner import gpu_memory
from tuner.gpu_memory import (
    CONTEXT_BYTES,
    gpu_share,
    is_out_of_memory,
    next_share,
    plan_per_gpu,
    probe_configs,
    trials_per_gpu,
)
from tuner.spec import validate

GiB = 2**30


def test_trials_per_gpu_fits_the_peaks_with_headroom():
    total = 80 * GiB
    peak = 8 * GiB
    n = trials_per_gpu(peak, total)
    assert n == int(total * 0.85 // (peak + CONTEXT_BYTES)) == 7
    assert n * (peak + CONTEXT_BYTES) <= total * 0.85 < (n + 1) * (peak + CONTEXT_BYTES)
    assert trials_per_gpu(100 * GiB, total) == 1, "a trial larger than the GPU still runs alone"
    assert trials_per_gpu(1, total) == gpu_memory.MAX_PER_GPU
    with pytest.raises(ValueError, match=r"peak > 0.*peak=0"):
        trials_per_gpu(0, total)
    with pytest.raises(ValueError, match="headroom=1"):
        trials_per_gpu(peak, total, headroom=1)


def test_shares_fit_on_one_gpu_and_double_after_out_of_memory():
    assert gpu_share(3) == 0.333 and 3 * gpu_share(3) <= 1
    assert [next_share(s) for s in (0.125, 0.25, 0.333, 0.5, 1.0)] == [0.25, 0.5, 1.0, 1.0, None]
    with pytest.raises(ValueError, match="per_gpu=0"):
        gpu_share(0)


def test_out_of_memory_is_recognised_in_errors_and_their_text():
    assert is_out_of_memory("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate")
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(None)


def _spec(tmp_path, factors: dict, hyper: dict) -> object:
    return validate(
        {
            "experiment": "probe",
            "dataset": {
                "preset": "synthetic",
                "root": str(tmp_path / "images"),
                "classes": ["farmland", "water", "forest"],
                "synthetic": {"per_class": 8, "size": 16},
                "image_size": 16,
                "cache_dir": str(tmp_path / "cache"),
            },
            "factors": factors,
            "hyperparameters": hyper,
        },
        check_data=False,
    )


class FakeMemory:
    """A GPU of ``total`` bytes on which model ``m`` peaks at ``peaks[m]`` bytes."""

    def __init__(self, total: int, peaks: dict[str, int]) -> None:
        self.total, self.peaks, self.ran = total, peaks, []

    def total_bytes(self) -> int:
        return self.total

    def peak_bytes(self, step) -> int:
        step()  # the real probe: a few batches of a real trial (on the CPU here)
        self.ran.append(step)
        return self.peaks[self.current]


def test_the_probe_runs_the_most_demanding_trial_of_each_model(tmp_path):
    spec = _spec(
        tmp_path,
        {"model": ["tiny_cnn", "pixels"], "transfer": ["scratch"]},
        {"batch_size": [4, 8], "epochs": 3},
    )
    configs = probe_configs(spec)
    assert [c.model for c in configs] == ["tiny_cnn", "pixels"]
    assert all(c.batch_size == 8 and c.max_batches == gpu_memory.PROBE_BATCHES for c in configs)
    assert all(c.augmentation == "none" and c.epochs == 1 for c in configs)

    peaks = {"tiny_cnn": 3 * GiB, "pixels": 10 * GiB}
    memory = FakeMemory(40 * GiB, peaks)
    steps = iter(configs)

    def peak_bytes(step):
        memory.current = next(steps).model
        return FakeMemory.peak_bytes(memory, step)

    memory.peak_bytes = peak_bytes
    n, note = plan_per_gpu(configs, memory)
    assert len(memory.ran) == 2
    assert n == trials_per_gpu(10 * GiB, 40 * GiB) == 3, "sized by the larger peak"
    assert "pixels" in note and "3 trial(s) per GPU" in note


def test_transfer_of_the_probe(tmp_path):
    weights = tmp_path / "tiny.pt"
    import torch

    from trainables.models import create_model

    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), weights)
    both = _spec(
        tmp_path,
        {"model": "tiny_cnn", "transfer": ["frozen", "finetune"], "weights": str(weights)},
        {},
    )
    assert [(c.transfer, c.weights) for c in probe_configs(both)] == [("scratch", None)]
    frozen = _spec(
        tmp_path, {"model": "tiny_cnn", "transfer": "frozen", "weights": str(weights)}, {}
    )
    assert [(c.transfer, c.weights) for c in probe_configs(frozen)] == [("frozen", str(weights))]


def test_laptop_without_a_gpu_keeps_the_default_count(tmp_path):
    from tuner.run import _measured_per_gpu

    spec = _spec(tmp_path, {"model": "tiny_cnn", "transfer": "scratch"}, {})
    assert _measured_per_gpu(spec, 0.0) == 4


@pytest.mark.slow
def test_a_trial_out_of_gpu_memory_is_retried_with_fewer_neighbours(tmp_path):
    """Logical GPUs on the CPU: a trial 'runs out of memory' below half a GPU."""
    ray = pytest.importorskip("ray")
    from ray import tune

    from tuner.tune.callbacks import FewerNeighbours

    def trainable(config):
        share = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
        if share < 0.5:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        tune.report({"share": share})

    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        object_store_memory=80 * 2**20,
        include_dashboard=False,
        ignore_reinit_error=True,
    )
    try:
        callback = FewerNeighbours(cpu=0.5)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 0.5, "gpu": 0.25}),
            param_space={"i": tune.grid_search([0, 1])},
            run_config=tune.RunConfig(
                storage_path=str(tmp_path),
                failure_config=tune.FailureConfig(max_failures=2),
                callbacks=[callback],
                verbose=0,
            ),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert not results.errors
    assert sorted(r.metrics["share"] for r in results) == [0.5, 0.5]
    assert sorted(callback.retried.values()) == [0.5, 0.5]
