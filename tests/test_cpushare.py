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

from tests.fixtures import synthetic_data
from trainables import cpushare
from trainables.cpushare import CpuShare, MachineLoad

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)


class Idle:
    """A machine load that reports ``cpus`` idle CPUs."""

    def __init__(self, cpus: float | None) -> None:
        self.cpus = cpus

    def idle_cpus(self) -> float | None:
        return self.cpus


@pytest.fixture(autouse=True)
def _check_every_call(monkeypatch):
    monkeypatch.setattr(cpushare, "CHECK_S", 0.0)


def _share(board: Path, own: int, pool: int, idle: float | None = 64) -> CpuShare:
    return CpuShare(own=own, pool=pool, board=board, set_threads=Recorder(), load=Idle(idle))


def test_idle_cpus_are_shared_in_proportion_to_the_requests(tmp_path):
    a, b = _share(tmp_path, 1, 6), _share(tmp_path, 2, 6)
    # 3 CPUs requested, 3 idle: a gets 1 + 3 * 1 // 3, b gets 2 + 3 * 2 // 3
    assert (a.update(), b.update()) == (2, 4)
    b.close()
    assert a.update() == 6
    assert a.set_threads.calls == [2, 6] and b.set_threads.calls == [4]


def test_a_full_node_keeps_every_trial_at_its_request(tmp_path):
    shares = [_share(tmp_path, 1, 2) for _ in range(2)]
    (tmp_path / f"{os.getpid()}-1").touch()  # both entries of this process share a name
    extra = _share(tmp_path, 2, 2)
    assert [s.update() for s in (*shares, extra)] == [1, 1, 2]
    assert all(s.set_threads.calls == [] for s in (*shares, extra))


@pytest.mark.parametrize(("idle", "threads"), [(0.3, 1), (1.4, 1), (2.5, 3), (3.6, 4), (9, 4)])
def test_cores_that_other_work_uses_are_left_alone(tmp_path, idle, threads):
    """Alone on a 4-CPU pool, a trial widens only to the CPUs measured idle (half up)."""
    assert _share(tmp_path, 1, 4, idle).update() == threads


def test_load_that_appears_narrows_the_trial_again(tmp_path):
    share = _share(tmp_path, 1, 2)
    assert share.update() == 2
    share.load.cpus = 0.8  # another process took a core
    assert share.update() == 1
    share.load.cpus = None  # too short an interval to tell: the decision stands
    assert share.update() == 1
    assert share.set_threads.calls == [2, 1]


def test_checks_are_spaced_by_check_s(tmp_path, monkeypatch):
    monkeypatch.setattr(cpushare, "CHECK_S", 3600.0)
    share = _share(tmp_path, 1, 2)
    reads = []
    monkeypatch.setattr(share, "board_threads", lambda: reads.append(1) or 2)
    for _ in range(100):
        share.update()
    assert reads == [1] and share.threads == 2  # the first batch checks, then not for an hour


def test_a_stated_idle_count_replaces_the_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CPU_IDLE", "3")
    share = CpuShare(own=1, pool=8, board=tmp_path, set_threads=Recorder())
    assert share.update() == 3
    monkeypatch.setenv("TUNER_CPU_IDLE", "-1")
    with pytest.raises(ValueError, match="TUNER_CPU_IDLE must be >= 0 CPUs, but got -1.0"):
        cpushare.MachineLoad.of_this_machine()


def test_without_a_load_measure_a_trial_keeps_its_request(tmp_path, monkeypatch):
    monkeypatch.setattr(cpushare.MachineLoad, "of_this_machine", classmethod(lambda cls: None))
    share = CpuShare(own=1, pool=4, board=tmp_path, set_threads=Recorder())
    assert share.update() == 1 and share.set_threads.calls == []


def test_entries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{dead.pid}-3"
    stale.touch()
    (tmp_path / "not-an-entry.txt").touch()
    assert _share(tmp_path, 1, 4).update() == 4
    assert not stale.exists() and (tmp_path / "not-an-entry.txt").exists()


def test_bad_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="own and pool must be >= 1 CPUs, but got own=0"):
        CpuShare(own=0, pool=2, board=tmp_path)


def test_load_counts_other_processes_not_this_one():
    """Synthetic counters: 4 CPUs, 400 ticks per interval; this process used 150 of 250 busy."""
    ticks = iter([(0, 0, 0, 4), (400, 250, 150, 4), (401, 250, 150, 4), (800, 650, 150, 4)])
    load = MachineLoad(read=lambda: next(ticks))
    assert load.idle_cpus() == pytest.approx(3.0)  # others used 100 ticks = 1 CPU
    assert load.idle_cpus() is None  # 1 tick: too short, the interval goes on
    assert load.idle_cpus() == pytest.approx(0.0)  # others used 400 ticks = all 4 CPUs


def test_a_busy_process_shows_as_load():
    """A real spinning process takes most of a core away from the idle count."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        load = MachineLoad()
        time.sleep(1.5)
        idle = load.idle_cpus()
        assert idle is not None and idle <= os.cpu_count() - 0.7, idle
    finally:
        spinner.kill()
        spinner.wait()


def test_a_killed_neighbour_frees_its_cpus(tmp_path):
    """Another trial process registers, then is SIGKILLed: this one widens at its next check."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from trainables import cpushare
        cpushare.CHECK_S = 0
        idle = type("Idle", (), {{"idle_cpus": lambda self: 64}})()
        share = cpushare.CpuShare(
            own=1, pool=2, board=Path({str(tmp_path)!r}), set_threads=lambda n: None, load=idle
        )
        print(share.update(), flush=True)
        time.sleep(120)
        """
    )
    neighbour = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert neighbour.stdout.readline().strip() == "2"  # alone on the board: the whole pool
        share = _share(tmp_path, 1, 2)
        assert share.update() == 1
        neighbour.send_signal(signal.SIGKILL)
        neighbour.wait()  # its entry stays: the next read notices the dead pid
        assert share.update() == 2 and share.set_threads.calls == [2]
    finally:
        neighbour.kill()


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return synthetic_data(root, ["farmland", "water", "forest"], per_class=12)


def test_a_trial_checks_the_board_before_every_batch(data_cfg, tmp_path, monkeypatch):
    import torch

    from trainables import classify
    from trainables.config import TrialConfig

    cfg = TrialConfig(
        data=data_cfg, model="tiny_cnn", transfer="scratch", epochs=1, batch_size=4, num_threads=1
    )
    share = _share(tmp_path / "board", 1, 3)
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
    monkeypatch.setenv("TUNER_CPU_IDLE", "2")  # as on an idle machine, whatever else runs
    spec = {
        "experiment": "lone",
        "dataset": {
            "preset": "synthetic",
            "root": str(tmp_path / "images"),
            "classes": ["farmland", "water", "forest"],
            "synthetic": {"per_class": 24, "size": 32, "seed": 0},
            "image_size": 32,
        },
        "factors": {"model": "tiny_cnn", "transfer": "scratch"},
        "hyperparameters": {"lr": 1e-3, "batch_size": 4, "epochs": 3},
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
        assert len(epochs) == 3 and set(epochs["threads"]) == {threads}, epochs
    assert list((tmp_path / "board").iterdir()) == []
