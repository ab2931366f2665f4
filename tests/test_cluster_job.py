"""``tuner.submit`` to a real two-node ``ray start`` cluster, from a copy that is not installed.

The README's local cluster recipe, run as a user would: a head without GPUs and a worker
with one logical GPU, both ``ray start`` processes of an interpreter in which the project is
*not* installed (:func:`tests.raycluster.python_without_project`), so the job can only run
the code that ``tuner.submit`` uploads. The demo spec is submitted from a plain copy of the
checkout (not pip-installed anywhere) and followed to SUCCEEDED; a second submission whose
upload leaves ``trainables/data/`` out (the old bug) is refused by the version-skew check.
Run ``pytest -s`` to see the measured wall time.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.raycluster import (
    RayHead,
    RayWorker,
    auth_env,
    dashboard_dependency_error,
    peak_concurrency,
    project_copy,
    python_without_project,
)
from tuner import provenance
from tuner.results import load

pytestmark = pytest.mark.slow

#: The issue's command line, after ``--address`` and ``--results``.
DEMO_ARGS = ["--shared-storage", "--set", "resources.gpu=0.25", "--set", "resources.cpu=0.5"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (2 CPUs, no GPU) + worker (2 CPUs, 1 logical GPU), both without the project."""
    reason = dashboard_dependency_error()
    if reason:
        pytest.skip(f"Ray's job server cannot run here ({reason}); pip install 'ray[default]'")
    base = tmp_path_factory.mktemp("cluster")
    python = python_without_project(base / "venv")
    env = {**auth_env(), "TUNER_CACHE": str(base / "cache")}
    t0 = time.time()
    head = RayHead(num_cpus=2, env=env, python=str(python))
    worker = None
    try:
        head.wait_ready()
        worker = RayWorker(head, num_cpus=2, num_gpus=1, python=str(python))
        head.wait_for_nodes(2)
        print(f"\ncluster: head + GPU worker up in {time.time() - t0:.1f} s")
        yield head
    finally:
        if worker is not None:
            worker.stop()
        head.stop()


def _tuner(
    copy: Path, head: RayHead, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m tuner.submit ARGS`` run from the copy (so it imports the copy)."""
    return subprocess.run(
        [sys.executable, "-m", "tuner.submit", *args],
        cwd=copy,
        env=head.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _submit_and_follow(copy: Path, head: RayHead, results: Path) -> tuple[int, str, float]:
    """Submit the demo as the README says; follow its logs to the end."""
    t0 = time.time()
    sub = _tuner(
        copy,
        head,
        "search_spaces/demo.yaml",
        "--address",
        head.address,
        "--results",
        str(results),
        *DEMO_ARGS,
    )
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    logs = _tuner(copy, head, "logs", job_id, "--follow", "--address", head.address, timeout=900)
    return logs.returncode, logs.stdout + logs.stderr, time.time() - t0


def test_demo_job_runs_the_uploaded_copy_on_two_nodes(cluster, tmp_path):
    copy = project_copy(tmp_path / "checkout")
    results = tmp_path / "results"
    code, logs, took = _submit_and_follow(copy, cluster, results)
    assert code == 0 and "SUCCEEDED" in logs, logs[-4000:]
    # The driver ran the uploaded package, and said so.
    expected = provenance.fingerprint(provenance.manifest(copy))
    line = next(ln for ln in logs.splitlines() if ln.startswith("code: "))
    assert expected in line and "working_dir_files" in line, line
    trials, epochs = load(results / "demo")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "early-stopped"}, trials["status"].tolist()
    assert (trials["gpu_fraction"] == 0.25).all()
    assert trials["node_id"].nunique() == 1, "every trial needs a GPU: all ran on the worker"
    peak = peak_concurrency(list(zip(trials["start_time"], trials["end_time"], strict=True)))
    assert peak == 4, f"the worker's one GPU at 0.25 per trial runs 4 at once, not {peak}"
    assert len(epochs) == trials["epochs_run"].sum()
    print(f"\nFIGURES cluster-job: demo submitted to SUCCEEDED in {took:.0f} s, peak {peak}")


def test_an_upload_missing_a_package_is_refused(cluster, tmp_path):
    copy = project_copy(tmp_path / "checkout")
    submit = copy / "tuner" / "submit.py"
    # The old, unanchored pattern: it also drops trainables/data/ from the upload.
    submit.write_text(submit.read_text().replace('"/data/",', '"data/",'))
    results = tmp_path / "results"
    code, logs, _ = _submit_and_follow(copy, cluster, results)
    assert code == 1 and "FAILED" in logs, logs[-4000:]
    assert "not the code that was submitted" in logs, logs[-4000:]
    assert "submitted but missing here: trainables/data/__init__.py" in logs, logs[-4000:]
    assert "ModuleNotFoundError" not in logs and not (results / "demo").exists()
