"""Laptop-mode packing of trials onto GPUs and cores, and the live view's lines (no Ray)."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from tuner.live import LiveView
from tuner.packing import plan_packing
from tuner.run import main
from tuner.spec import flat_params, validate


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


def test_on_a_cluster_the_gpu_request_is_kept_while_no_gpu_node_is_up():
    p = plan_packing(_spec(gpu=0.5, cpu=4), laptop=False, cpus=0, gpus=0, per_gpu=4, cluster=True)
    assert (p.cpu, p.gpu) == (4, 0.5) and "trials wait for GPU nodes" in p.note


def test_live_view_says_what_pending_trials_wait_for_and_how_long(monkeypatch):
    out = io.StringIO()
    have = {"CPU": 2.0}
    view = LiveView(_spec(), stream=out, request=(4.0, 0.5), resources=lambda: have)
    clock = [1000.0]
    monkeypatch.setattr("tuner.live.time.time", lambda: clock[0])
    view.setup()
    pending = [_Trial("t0", {}, status="PENDING"), _Trial("t1", {}, status="PENDING")]
    view.on_step_end(0, pending)
    clock[0] += 125
    line = view.status_line()
    assert "running 0 |" in line
    assert (
        "waiting 2:05 for nodes: 2 trial(s) pending, each needs cpu 4 / gpu 0.5, the cluster "
        "has 2 CPUs, 0 GPUs" in line
    )
    have.update(CPU=8.0, GPU=1.0)  # the autoscaler added a node: no longer too small
    assert "waiting" not in view.status_line()
    have.update(CPU=2.0, GPU=0.0)
    view.on_step_end(1, [_Trial("t0", {}, status="RUNNING"), pending[1]])
    assert "waiting" not in view.status_line(), "a running trial: nothing waits for nodes"


@pytest.mark.slow
def test_a_trial_too_big_for_local_ray_exits_2_at_once(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "experiment": "big",
                "trainable": "toy",
                "hyperparameters": {"lr": [1e-3]},
                "search": {"algorithm": "grid"},
                "resources": {"cpu": 4, "gpu": 0.25},
            }
        )
    )
    results = tmp_path / "results"
    # A subprocess with a generous guard: before the check, this run never ended.
    argv = [sys.executable, "-m", "tuner.run", str(spec), "--results", str(results)]
    run = subprocess.run([*argv, "--num-cpus", "2"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 2, run.stdout + run.stderr
    err = run.stderr
    assert "a trial asks for cpu 4 (the spec's resources), but this machine's Ray has 2 CPUs" in err
    assert "--laptop (packs trials onto this machine) or --set resources.cpu=2" in err
    assert not results.exists()
    assert main([str(spec), "--results", str(results), "--num-cpus", "2", "--laptop"]) == 0
