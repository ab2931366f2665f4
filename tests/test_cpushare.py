"""CPU trials widen to the node's idle CPUs (trainables.cpushare), with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from trainables.cpushare import REREAD_S, CpuShare

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)


def test_idle_cpus_are_shared_in_proportion_to_the_requests(tmp_path):
    a_set, b_set = Recorder(), Recorder()
    a = CpuShare(own=1, pool=6, board=tmp_path, set_threads=a_set)
    b = CpuShare(own=2, pool=6, board=tmp_path, set_threads=b_set)
    # 3 CPUs requested, 3 idle: a gets 1 + 3 * 1 // 3, b gets 2 + 3 * 2 // 3
    assert (a.update(), b.update()) == (2, 4)
    b.close()
    assert a.update() == 6
    assert a_set.calls == [2, 6] and b_set.calls == [4]


def test_a_full_node_keeps_every_trial_at_its_request(tmp_path):
    shares = [CpuShare(own=1, pool=2, board=tmp_path, set_threads=Recorder()) for _ in range(2)]
    (tmp_path / f"{os.getpid()}-1").touch()  # both entries of this process share a name
    extra = CpuShare(own=2, pool=2, board=tmp_path, set_threads=Recorder())
    assert [s.update() for s in (*shares, extra)] == [1, 1, 2]
    assert all(s.set_threads.calls == [] for s in (*shares, extra))


def test_unchanged_board_is_not_read_again(tmp_path, monkeypatch):
    share = CpuShare(own=1, pool=2, board=tmp_path, set_threads=Recorder())
    share.update()
    reads = []
    monkeypatch.setattr(share, "live_cpus", lambda: reads.append(1) or 1)
    for _ in range(100):
        share.update()
    assert reads == []


def test_entries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{dead.pid}-3"
    stale.touch()
    (tmp_path / "not-an-entry.txt").touch()
    share = CpuShare(own=1, pool=4, board=tmp_path, set_threads=Recorder())
    assert share.update() == 4
    assert not stale.exists() and (tmp_path / "not-an-entry.txt").exists()


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="own and pool must be >= 1 CPUs, but got own=0"):
        CpuShare(own=0, pool=2, board=tmp_path)


def test_a_killed_neighbour_frees_its_cpus_at_the_next_batch(tmp_path):
    """Another trial process registers, then is SIGKILLed: this one widens at once."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from trainables.cpushare import CpuShare
        share = CpuShare(own=1, pool=2, board=Path({str(tmp_path)!r}), set_threads=lambda n: None)
        print(share.update(), flush=True)
        time.sleep(120)
        """
    )
    neighbour = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert neighbour.stdout.readline().strip() == "2"  # alone on the board: the whole pool
        share = CpuShare(own=1, pool=2, board=tmp_path, set_threads=Recorder())
        assert share.update() == 1
        neighbour.send_signal(signal.SIGKILL)
        neighbour.wait()  # its entry stays: the next full read notices the dead pid
        deadline = time.time() + REREAD_S + 10
        while share.update() != 2 and time.time() < deadline:
            time.sleep(0.05)
        assert share.threads == 2 and share.set_threads.calls == [2]
    finally:
        neighbour.kill()


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    from trainables.config import DataConfig

    root = tmp_path_factory.mktemp("synthetic")
    return DataConfig(
        preset="synthetic",
        root=str(root / "images"),
        classes=["farmland", "water", "forest"],
        synthetic={"per_class": 12, "size": 32, "seed": 0},
        image_size=32,
        cache_dir=str(root / "cache"),
    )


def test_a_trial_checks_the_board_before_every_batch(data_cfg, tmp_path, monkeypatch):
    import torch

    from trainables import classify, cpushare
    from trainables.config import TrialConfig

    cfg = TrialConfig(
        data=data_cfg, model="tiny_cnn", transfer="scratch", epochs=1, batch_size=4, num_threads=1
    )
    share = CpuShare(own=1, pool=3, board=tmp_path / "board", set_threads=Recorder())
    calls = []
    update = share.update
    monkeypatch.setattr(share, "update", lambda: calls.append(1) or update())
    trial = classify.Trial(cfg, log=lambda _: None, cpu_share=share)
    trial._run_epoch()
    batches = len(trial.splits["train"]) + len(trial.splits["val"])
    assert len(calls) == batches and share.set_threads.calls == [3]

    # the search's entry point registers on the node's board and leaves it when done
    monkeypatch.setattr(cpushare, "default_board", lambda: tmp_path / "node")
    threads, seen = torch.get_num_threads(), []
    try:
        classify.run_trial(
            {"model": "tiny_cnn", "transfer": "scratch", "epochs": 1, "batch_size": 8},
            data=data_cfg,
            report=lambda m, d: seen.append(sorted((tmp_path / "node").iterdir())),
            checkpoint_dir=tmp_path / "ckpt",
            resume=False,
            num_threads=1,
            cpu_pool=2,
        )
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in seen[0]] == [f"{os.getpid()}-1"]
    assert list((tmp_path / "node").iterdir()) == []


@pytest.mark.slow
def test_the_lone_trial_of_a_search_uses_every_core(tmp_path, monkeypatch):
    """Through ``tuner.run``: one CPU trial asking for 1 CPU on a 2-CPU Ray trains on 2
    threads, and on 1 with ``resources.share_idle_cpus: false``."""
    import pandas as pd
    import yaml

    from tuner.run import main

    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TUNER_CPU_BOARD", str(tmp_path / "board"))
    spec = {
        "experiment": "lone",
        "dataset": {
            "preset": "synthetic",
            "root": str(tmp_path / "images"),
            "classes": ["farmland", "water", "forest"],
            "synthetic": {"per_class": 8, "size": 16, "seed": 0},
            "image_size": 16,
        },
        "factors": {"model": "tiny_cnn", "transfer": "scratch"},
        "hyperparameters": {"lr": [1e-3, 3e-3], "batch_size": 8, "epochs": 2},
        "search": {"algorithm": "grid", "max_concurrent": 1},
        "scheduler": {"type": "none"},
        "resources": {"cpu": 1},
    }
    for share, threads in ((True, 2), (False, 1)):
        spec["resources"]["share_idle_cpus"] = share
        path = tmp_path / f"{share}.yaml"
        path.write_text(yaml.safe_dump(spec))
        results = tmp_path / f"results-{share}"
        assert main([str(path), "--results", str(results), "--num-cpus", "2"]) == 0
        epochs = pd.read_parquet(results / "lone" / "epochs")
        assert len(epochs) == 4 and set(epochs["threads"]) == {threads}, epochs
    assert list((tmp_path / "board").iterdir()) == []
