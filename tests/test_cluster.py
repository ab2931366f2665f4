"""Fault tolerance on a real multi-node Ray cluster on this machine.

A head node (no CPUs, so no trial lands on it) and two worker nodes, each with 4 CPUs, one
*logical* GPU, 2 GiB of memory and an 80 MiB object store, started with
:class:`ray.cluster_utils.Cluster` and token authentication (the same ``RAY_AUTH_MODE`` and
token for every process). Each search runs ``python -m tuner.run`` as its own driver
process joining the cluster by address, as on a real cluster; nodes are removed and the
driver is SIGKILLed while trials run. The figures of the README's fault-tolerance table are
printed (run ``pytest -s`` to see them).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.raycluster import Driver, peak_concurrency
from tuner.results import load

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORKER = {
    "num_cpus": 4,
    "num_gpus": 1,
    "memory": 2 * 1024**3,
    "object_store_memory": 80 * 1024**2,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_auth_cache() -> None:
    """Make this process re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both)."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:  # older Ray: no token authentication to reset
        return
    reset_auth_token_state()


@dataclass
class Harness:
    """The running cluster, its worker nodes by name, and the environment of its drivers."""

    cluster: object
    env: dict[str, str]
    workers: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_worker(self, name: str) -> None:
        self.workers[name] = self.cluster.add_node(**WORKER)

    def remove_worker(self, name: str) -> None:
        self.cluster.remove_node(self.workers.pop(name), allow_graceful=False)

    def restore(self) -> None:
        """Back to two worker nodes (after a test removed one)."""
        for name in ("worker-a", "worker-b"):
            if name not in self.workers:
                self.add_worker(name)
        self.cluster.wait_for_nodes()

    def names(self) -> dict[str, str]:
        """Ray node id -> worker name."""
        return {node.node_id: name for name, node in self.workers.items()}


@pytest.fixture(scope="module")
def ray_cluster():
    """Head + two GPU worker nodes with token auth; torn down (only these nodes) at the end."""
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "token")
    mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    mp.delenv("RAY_ADDRESS", raising=False)
    # Leave /tmp/ray/ray_current_cluster alone: another Ray on this machine may rely on it.
    mp.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
    mp.setattr(ray._common.utils, "reset_ray_address", lambda *a, **k: None)
    _reset_auth_cache()
    temp = tempfile.mkdtemp(prefix="trc", dir="/tmp")  # short: Unix socket paths
    t0 = time.time()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "num_gpus": 0,
            "memory": 1024**3,
            "object_store_memory": 80 * 1024**2,
            "gcs_server_port": _free_port(),
            "include_dashboard": False,
            "temp_dir": temp,
        },
    )
    harness = Harness(cluster, env={})
    try:
        harness.restore()
        harness.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        print(f"\ncluster: head + 2 GPU workers up in {time.time() - t0:.1f} s")
        yield harness
    finally:
        cluster.shutdown()
        mp.undo()
        _reset_auth_cache()
        shutil.rmtree(temp, ignore_errors=True)


def _write_spec(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / f"{spec['experiment']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _run_args(spec: str, results: Path, harness: Harness, *extra: str) -> list[str]:
    return [
        spec,
        "--results",
        str(results),
        "--address",
        harness.address,
        "--shared-storage",  # every "node" of this cluster is this machine
        "--status-every",
        "2",
        *extra,
    ]


def _env(harness: Harness, **kw: str) -> dict[str, str]:
    return {**harness.env, **kw}


def _rows(exp_dir: Path, table: str) -> pd.DataFrame:
    folder = exp_dir / table
    files = [f for f in folder.glob("*.parquet") if not f.name.startswith((".", "_"))]
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except (OSError, ValueError):  # replaced while reading
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _check_tables(exp_dir: Path, n_trials: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial, no duplicated (trial, epoch), every trial's epochs 1..epochs_run."""
    trials, epochs = load(exp_dir)
    assert len(trials) == n_trials and trials["trial_id"].is_unique, trials
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, group in epochs.groupby("trial_id"):
        run = int(trials.loc[trials["trial_id"] == trial_id, "epochs_run"].iloc[0])
        assert sorted(group["epoch"]) == list(range(1, run + 1)), (trial_id, list(group["epoch"]))
    assert len(epochs) == trials["epochs_run"].sum()
    return trials, epochs


def _trace(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=["key", "epoch", "time", "pid"])
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line])


def _figure(name: str, **values) -> None:
    text = ", ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\nFIGURES {name}: {text}")


def _toy_spec(experiment: str, **kw) -> dict:
    spec = {
        "experiment": experiment,
        "trainable": "toy",
        "hyperparameters": {"lr": [1e-4, 1e-3, 1e-2, 1e-1], "batch_size": [16, 64], "epochs": 4},
        "search": {"algorithm": "grid", "max_failures": 2},
        "scheduler": {"type": "none"},
        "resources": {"cpu": 0.5, "gpu": 0.25},
    }
    spec.update(kw)
    return spec


# ------------------------------------------------------------------------------- storage
def test_local_results_on_multi_node_cluster_are_refused(ray_cluster, tmp_path, capsys):
    from tuner.run import main

    spec = _write_spec(tmp_path, _toy_spec("refused"))
    results = tmp_path / "results"
    args = [spec, "--results", str(results), "--address", ray_cluster.address]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(results) in err and "3 nodes" in err and "s3://" in err and "gs://" in err
    assert not results.exists(), "nothing may be written before the storage check"


def test_dataset_path_is_checked_on_every_node(ray_cluster, tmp_path):
    import ray

    from tuner import tune as search

    ray.init(address=ray_cluster.address, log_to_driver=False)
    try:
        assert search.missing_on_nodes(str(tmp_path)) == {}
        missing = search.missing_on_nodes(str(tmp_path / "absent"))
        assert set(missing) == set(ray_cluster.names()) | {ray_cluster.cluster.head_node.node_id}
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------- 1
def test_trials_spread_over_workers_four_per_logical_gpu(ray_cluster, tmp_path):
    spec = _write_spec(tmp_path, _toy_spec("spread", hyperparameters={
        "lr": [1e-4, 1e-3, 1e-2, 1e-1], "batch_size": [16, 64], "epochs": 5,
    }))  # fmt: skip
    results = tmp_path / "results"
    driver = Driver(_run_args(spec, results, ray_cluster), _env(ray_cluster, TUNER_TOY_EPOCH_S="1"))
    assert driver.wait() == 0, driver.output
    trials, _ = _check_tables(results / "spread", 8)
    assert (trials["status"] == "completed").all() and (trials["gpu_fraction"] == 0.25).all()
    names = ray_cluster.names()
    trials["worker"] = trials["node_id"].map(names)
    assert trials["worker"].notna().all(), "every trial ran on a worker node, none on the head"
    peaks = {
        w: peak_concurrency(list(zip(g["start_time"], g["end_time"], strict=True)))
        for w, g in trials.groupby("worker")
    }
    assert set(peaks) == {"worker-a", "worker-b"}, peaks
    assert all(p == 4 for p in peaks.values()), f"expected 4 trials at once per GPU: {peaks}"
    _figure("spread", nodes=3, trials=len(trials), peak_per_worker=str(peaks))


# ---------------------------------------------------------------------------------- 2
def _classify_spec(experiment: str, data: Path) -> dict:
    return {
        "experiment": experiment,
        "dataset": {
            "preset": "synthetic",
            "root": str(data),
            "classes": ["farmland", "water", "dense_residential", "forest"],
            "synthetic": {"per_class": 16, "size": 16, "seed": 0},
            "image_size": 16,
        },
        "factors": {"model": "tiny_cnn", "transfer": "scratch", "augmentation": "none"},
        "hyperparameters": {"lr": [1e-3, 3e-3, 1e-2], "batch_size": 8, "epochs": 20},
        "search": {"algorithm": "grid", "seeds": 2, "max_failures": 3},
        "scheduler": {"type": "none"},
        "resources": {"cpu": 0.5, "gpu": 0.25},
    }


def test_node_loss_retries_trials_from_checkpoints(ray_cluster, tmp_path):
    spec = _write_spec(tmp_path, _classify_spec("nodeloss", tmp_path / "data"))
    results = tmp_path / "results"
    exp = results / "nodeloss"
    env = _env(ray_cluster, TUNER_CACHE=str(tmp_path / "cache"))
    driver = Driver(_run_args(spec, results, ray_cluster), env)
    # Half way: remove the worker that holds an unfinished trial with checkpointed epochs.
    names, victim, removed_at, deadline = ray_cluster.names(), None, None, time.time() + 180
    while victim is None and time.time() < deadline and driver.proc.poll() is None:
        epochs = _rows(exp, "epochs")
        done = set(_rows(exp, "trials").get("trial_id", []))
        if not epochs.empty:
            live = epochs[~epochs["trial_id"].isin(done)]
            live = live[live["epoch"].between(2, 12)]
            if not live.empty:
                victim = names.get(live["node_id"].iloc[0])
        if victim is None:
            time.sleep(0.2)
    assert victim is not None, f"no trial reached epoch 2 in time:\n{driver.output}"
    on_victim = set(epochs.loc[epochs["node_id"].map(names) == victim, "trial_id"]) - done
    removed_at = time.time()
    ray_cluster.remove_worker(victim)
    try:
        assert driver.wait(timeout=300) == 0, driver.output
    finally:
        ray_cluster.restore()
    trials, epochs = _check_tables(exp, 6)
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    retried = trials[trials["retries"] > 0]
    assert on_victim <= set(retried["trial_id"]), (on_victim, retried["trial_id"].tolist())
    lost_id = next(n for n, w in names.items() if w == victim)
    assert lost_id not in set(trials.loc[trials["trial_id"].isin(on_victim), "node_id"])
    detected = driver.first(r"retrying ")
    assert detected is not None, driver.output
    # recovered: the first epoch a retried trial reported from the surviving node
    moved = epochs[epochs["trial_id"].isin(on_victim) & (epochs["node_id"] != lost_id)]
    resumed = min(t.timestamp() for t in moved["time"] if t.timestamp() > removed_at)
    _figure(
        "node-loss",
        nodes="3 -> 2",
        trials=len(trials),
        trials_seen_on_lost_node=len(on_victim),
        retried_trials=len(retried),
        retries=int(trials["retries"].sum()),
        rows_lost=0,
        rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
        detect_s=detected - removed_at,
        recover_s=resumed - removed_at,
        total_s=time.time() - driver.started,
    )


# ---------------------------------------------------------------------------------- 3
def _asha_spec(experiment: str) -> dict:
    return {
        "experiment": experiment,
        "trainable": "toy",
        "hyperparameters": {
            "lr": {"loguniform": [1e-4, 1e-1]},
            "batch_size": [16, 32, 64],
            "epochs": 6,
        },
        "search": {"algorithm": "optuna", "num_samples": 12, "max_concurrent": 4},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpu": 0.5, "gpu": 0.25},
    }


def test_driver_kill_then_resume(ray_cluster, tmp_path):
    spec = _write_spec(tmp_path, _asha_spec("driverkill"))
    results, trace = tmp_path / "results", tmp_path / "trace.jsonl"
    exp = results / "driverkill"
    env = _env(ray_cluster, TUNER_TOY_EPOCH_S="0.5", TUNER_TOY_TRACE=str(trace))
    first = Driver(_run_args(spec, results, ray_cluster), env)
    deadline = time.time() + 180
    while time.time() < deadline and first.proc.poll() is None:
        if len(list((exp / "trials").glob("*.parquet"))) >= 4:
            break
        time.sleep(0.1)
    first.kill()
    killed_at = time.time()
    before = {f.name: f.read_bytes() for f in (exp / "trials").glob("*.parquet")}
    assert 4 <= len(before) < 12, f"kill should land half way, {len(before)} trials done"
    epochs_before = _rows(exp, "epochs")

    second = Driver(_run_args(spec, results, ray_cluster, "--resume"), env)
    assert second.wait() == 0, second.output
    trials, epochs = _check_tables(exp, 12)
    assert set(trials["status"]) <= {"completed", "early-stopped"}, trials["status"]
    # Finished trials keep their rows, byte for byte; a trial that started and ended between
    # two snapshots (1 s apart) is unknown to the restored search, which runs another in its
    # place: its rows are set aside, not lost.
    note = re.search(r"note: (\d+) trial\(s\) started after Tune's last snapshot", second.output)
    unseen = int(note.group(1)) if note else 0
    for name, data in before.items():
        kept = exp / "trials" / name
        path = kept if kept.exists() else exp / "trials" / "_orphaned" / name
        assert path.read_bytes() == data, name
    set_aside = list((exp / "trials" / "_orphaned").glob("*.parquet"))
    assert len(set_aside) <= unseen
    assert "ASHA rebuilt from the epochs table" in second.output, second.output
    replayed = int(re.search(r"(\d+) results of", second.output).group(1))
    orphans = epochs_before["trial_id"].isin([p.stem for p in (exp / "epochs").glob("_*/*")])
    assert replayed == (~orphans).sum()
    # Optuna continued from its history (kept in Tune's snapshot, no database): the resumed
    # session's study holds every trial, the first session's included, none sampled twice.
    states = sorted((exp / "tune").glob("searcher-state-*.pkl"))
    assert len(states) == 2, states  # one per driver session
    with states[-1].open("rb") as f:
        study = pickle.load(f)["_ot_study"]  # our own experiment folder: trusted
    assert len(study.trials) == 12 and trials["lr"].nunique() == 12
    assert {round(t.params["lr"], 12) for t in study.trials} == set(trials["lr"].round(12))
    # Each trial's value in the study is its final result: the val_acc of its last row (a
    # trial that finished after the snapshot re-reports that row, not its older checkpoint).
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id")
    lrs = zip(trials["trial_id"], trials["lr"], strict=True)
    final = {round(lr, 12): last.at[t, "val_acc"] for t, lr in lrs}
    assert {round(t.params["lr"], 12): t.value for t in study.trials} == pytest.approx(final)
    executed = _trace(trace)
    resumed = executed.loc[executed["time"] > second.started, "time"].min()
    # ASHA was not reset: fed the same results in the order they were first produced, an
    # ASHA that never restarted stops every trial exactly where this search stopped it.
    known = epochs_before[epochs_before["trial_id"].isin(trials["trial_id"])]
    extra, fewer = _asha_gap(trials, epochs, known, _asha_spec("x"))
    assert extra == 0 and fewer == 0, (extra, fewer)
    _figure(
        "driver-kill",
        nodes=3,
        trials=len(trials),
        finished_before_kill=len(before),
        unknown_to_snapshot=unseen,
        retries=int(trials["retries"].sum()),
        rows_lost=0,
        rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
        recover_s=resumed - second.started,
        kill_to_resume_s=second.started - killed_at,
        epochs_run=len(executed),
        epochs_kept=len(epochs),
        epochs_rerun=len(executed) - len(executed.drop_duplicates(["key", "epoch"])),
        asha_extra_epochs=extra,
        asha_fewer_epochs=fewer,
        total_s=time.time() - first.started,
    )


def _asha_gap(trials, epochs, before, spec: dict) -> tuple[int, int]:
    """Epochs run past / short of where an uninterrupted ASHA would have stopped each trial.

    That ASHA sees every result once, in the order the drivers received them: the rows of
    the epochs table at the kill (``before``) in their order, then the rows added after it.
    """
    from tuner.tune import ResumableASHA

    sched = spec["scheduler"]
    asha = ResumableASHA(
        results_root="unused",
        experiment="unused",
        time_attr="epoch",
        metric="val_acc",
        mode="max",
        max_t=spec["hyperparameters"]["epochs"],
        grace_period=sched["grace_period"],
        reduction_factor=sched["reduction_factor"],
    )
    asha._loaded = True
    key = ["trial_id", "epoch"]
    added = epochs.merge(before[key], on=key, how="left", indicator=True)
    added = added[added["_merge"] == "left_only"]
    ordered = pd.concat([frame.sort_values("time")[[*key, "val_acc"]] for frame in (before, added)])
    stopped: dict[str, int] = {}
    for trial_id, epoch, value in ordered.itertuples(index=False):
        if trial_id in stopped:
            continue
        if trial_id not in asha._trial_info:
            asha.on_trial_add(None, _Ref(trial_id))
        if asha.on_trial_result(None, _Ref(trial_id), {"epoch": epoch, "val_acc": value}) == "STOP":
            stopped[trial_id] = int(epoch)
    run = dict(zip(trials["trial_id"], trials["epochs_run"].astype(int), strict=True))
    extra = sum(max(0, n - stopped.get(t, n)) for t, n in run.items())
    fewer = sum(max(0, stopped.get(t, n) - n) for t, n in run.items())
    return extra, fewer


@dataclass(frozen=True)
class _Ref:
    trial_id: str


# ---------------------------------------------------------------------------------- 4
def test_crash_after_checkpoint_is_retried_without_duplicate_rows(ray_cluster, tmp_path):
    spec = _write_spec(tmp_path, _toy_spec("crash", hyperparameters={
        "lr": [1e-3, 1e-2], "batch_size": [16, 64], "epochs": 4,
    }))  # fmt: skip
    results, trace = tmp_path / "results", tmp_path / "trace.jsonl"
    env = _env(
        ray_cluster,
        TUNER_TOY_EPOCH_S="0.3",
        TUNER_TOY_CRASH_AT="2",
        TUNER_TOY_CRASH_DIR=str(tmp_path / "crashed"),
        TUNER_TOY_TRACE=str(trace),
    )
    driver = Driver(_run_args(spec, results, ray_cluster), env)
    assert driver.wait() == 0, driver.output
    trials, epochs = _check_tables(results / "crash", 4)
    assert (trials["status"] == "completed").all() and (trials["retries"] == 1).all()
    assert len(list((tmp_path / "crashed").iterdir())) == 4
    assert len(epochs) == 16
    executed = _trace(trace)
    _figure(
        "crash-once",
        trials=len(trials),
        retries=int(trials["retries"].sum()),
        epochs_run=len(executed),
        epochs_rerun=len(executed) - len(executed.drop_duplicates(["key", "epoch"])),
        rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
    )


# ---------------------------------------------------------------------------------- 5
def test_truncated_checkpoint_fails_its_trial_loudly(ray_cluster, tmp_path):
    spec = _write_spec(tmp_path, _toy_spec("torn", hyperparameters={
        "lr": [1e-3, 1e-2], "batch_size": 32, "epochs": 8,
    }, search={"algorithm": "grid", "max_failures": 1}))  # fmt: skip
    results = tmp_path / "results"
    exp = results / "torn"
    env = _env(ray_cluster, TUNER_TOY_EPOCH_S="0.5")
    first = Driver(_run_args(spec, results, ray_cluster), env)
    deadline = time.time() + 120
    while time.time() < deadline and first.proc.poll() is None:
        epochs = _rows(exp, "epochs")
        if not epochs.empty and epochs.groupby("trial_id")["epoch"].max().ge(3).sum() == 2:
            break
        time.sleep(0.1)
    first.kill()
    # The checkpoints of one trial are cut short, as by a disk that filled up: whichever of
    # them Tune's snapshot names, the resumed trial cannot load it.
    trial_dir = sorted(p for p in (exp / "tune").iterdir() if p.is_dir())[-1]
    torn = sorted(trial_dir.glob("checkpoint_*/toy.json"))
    assert torn, list(trial_dir.iterdir())
    for f in torn:
        f.write_bytes(f.read_bytes()[:7])
    second = Driver(_run_args(spec, results, ray_cluster, "--resume"), env)
    assert second.wait() == 0, second.output
    trials, _ = load(exp)
    assert len(trials) == 2
    errors = trials[trials["status"] == "error"]
    assert len(errors) == 1 and (trials["status"] == "completed").sum() == 1, trials
    assert "JSONDecodeError" in errors["error"].iloc[0] or "Expecting" in errors["error"].iloc[0]
    assert "1 error" in second.output
    cause = errors["error"].iloc[0].strip().splitlines()[-1]
    print(f"\ntruncated {len(torn)} checkpoint(s) of {trial_dir.name}: trial row 'error' ({cause})")
