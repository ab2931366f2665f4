"""Laptop-mode packing of trials onto GPUs and cores, and the live view's lines (no Ray)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from tuner.search import LiveView, flat_params, plan_packing
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


@dataclass
class _Trial:
    trial_id: str
    config: dict
    status: str = "TERMINATED"
    last_result: dict = field(default_factory=dict)


def test_live_view_names_a_trials_best_epoch_when_its_last_is_lower():
    out = io.StringIO()
    view = LiveView(_spec(), stream=out)
    trial = _Trial("t0", {"lr": 0.1, "epochs": 3})
    for epoch, acc in ((1, 0.5), (2, 0.7), (3, 0.6)):
        trial.last_result = {"epoch": epoch, "val_acc": acc}
        view.on_trial_result(0, [], trial, trial.last_result)
    view.on_trial_complete(0, [], trial)
    line = out.getvalue()
    assert "val_acc 0.6000 after 3 epochs (best 0.7000 at epoch 2)" in line, line
    assert "best val_acc 0.7000 (t0)" in view.status_line()
