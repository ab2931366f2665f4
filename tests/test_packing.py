"""Laptop-mode packing of trials onto GPUs and cores (pure arithmetic, no Ray started)."""

from __future__ import annotations

from tuner.search import flat_params, plan_packing
from tuner.spec import validate


def _spec(gpu: float = 0.0, cpu: float = 1.0, max_concurrent: int | None = None):
    search = {"algorithm": "grid"}
    if max_concurrent:
        search["max_concurrent"] = max_concurrent
    return validate(
        {
            "experiment": "p",
            "trainable": "toy",
            "hyperparameters": {"lr": [0.1]},
            "search": search,
            "resources": {"cpu": cpu, "gpu": gpu},
        }
    )


def test_laptop_without_gpu_splits_the_cores():
    p = plan_packing(_spec(), laptop=True, cpus=8, gpus=0, per_gpu=4)
    assert (p.cpu, p.gpu, p.concurrent) == (1, 0, 8)
    p = plan_packing(_spec(max_concurrent=2), laptop=True, cpus=8, gpus=0, per_gpu=4)
    assert (p.cpu, p.gpu, p.concurrent) == (4, 0, 2)
    assert "no GPU" in p.note and "2 trials at once" in p.note


def test_laptop_with_gpus_packs_trials_per_gpu():
    p = plan_packing(_spec(), laptop=True, cpus=16, gpus=1, per_gpu=4)
    assert (p.gpu, p.concurrent, p.cpu) == (0.25, 4, 4)
    p = plan_packing(_spec(gpu=0.5), laptop=True, cpus=16, gpus=2, per_gpu=4)
    assert (p.gpu, p.concurrent, p.cpu) == (0.5, 4, 4)
    assert "4 trials at once, each 0.5 GPU + 4 CPU" in p.note


def test_spec_resources_are_used_as_written_outside_laptop_mode():
    p = plan_packing(_spec(gpu=0.25, cpu=2), laptop=False, cpus=2, gpus=1, per_gpu=4)
    assert (p.cpu, p.gpu) == (2, 0.25)
    cpu_only = plan_packing(_spec(gpu=0.25), laptop=False, cpus=2, gpus=0, per_gpu=4)
    assert cpu_only.gpu == 0 and "no GPU is visible" in cpu_only.note


def test_flat_params_merges_grid_cells():
    assert flat_params({"cell": {"lr": 0.1, "seed": 1}, "x": 2}) == {"lr": 0.1, "seed": 1, "x": 2}
