"""Fault handling that needs no cluster: corrupt result files, ASHA's rebuilt rungs, orphaned
epoch rows and the shared-storage rule (the cluster itself is exercised in test_cluster.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tuner import rank as rank_cli
from tuner.cluster import StorageError, check_storage, is_local
from tuner.results import CorruptResultsError, ResultsStore, load


# ------------------------------------------------------------------------ corrupt files
def test_truncated_parquet_is_reported_not_dropped(tmp_path, capsys):
    store = ResultsStore(tmp_path, "cut")
    for i in range(3):
        store.write_trial({"trial_id": f"t{i}", "status": "completed", "test_acc": 0.5 + i / 10})
        store.write_epochs(f"t{i}", [{"epoch": 1, "val_acc": 0.5}])
    victim = tmp_path / "cut" / "trials" / "t1.parquet"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(CorruptResultsError, match="t1.parquet"):
        load(tmp_path / "cut")
    assert rank_cli.main([str(tmp_path / "cut")]) == 1
    assert "1 unreadable result file" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="quarantined 1 unreadable"):
        assert rank_cli.main([str(tmp_path / "cut"), "--quarantine"]) == 0
    assert (tmp_path / "cut" / "trials" / "_quarantine" / "t1.parquet").is_file()
    trials, epochs = load(tmp_path / "cut")
    assert sorted(trials["trial_id"]) == ["t0", "t2"] and len(epochs) == 3


def test_rows_of_trials_the_search_never_knew_are_moved_aside(tmp_path):
    store = ResultsStore(tmp_path, "o")
    for trial_id in ("done", "unseen_done"):
        store.write_trial({"trial_id": trial_id, "status": "completed"})
    for trial_id in ("done", "known", "unseen", "unseen_done"):
        store.write_epochs(trial_id, [{"epoch": 1, "val_acc": 0.1}])
    assert store.move_orphans({"done", "known"}) == ["unseen", "unseen_done"]
    assert store.trial_ids("epochs") == {"done", "known"}
    assert store.trial_ids("trials") == {"done"} and store.finished_trial_ids() == {"done"}
    assert (tmp_path / "o" / "epochs" / "_orphaned" / "unseen.parquet").is_file()
    assert (tmp_path / "o" / "trials" / "_orphaned" / "unseen_done.parquet").is_file()
    trials, epochs = load(tmp_path / "o")  # the tables skip the _orphaned/ folders
    assert list(trials["trial_id"]) == ["done"] and set(epochs["trial_id"]) == {"done", "known"}


def test_final_results_are_the_last_epoch_rows_of_finished_trials(tmp_path):
    store = ResultsStore(tmp_path, "f")
    store.write_trial({"trial_id": "done", "status": "completed"})
    store.write_trial({"trial_id": "cut", "status": "early-stopped"})
    store.write_trial({"trial_id": "bad", "status": "error"})
    rows = [{"epoch": e, "val_acc": e / 10, "val_loss": 1 / e} for e in (3, 1, 2)]
    for trial_id in ("done", "bad", "running"):
        store.write_epochs(trial_id, rows)
    store.write_epochs("cut", rows[1:2])
    final = store.final_results()
    assert set(final) == {"done", "cut"}
    assert final["done"] == {"epoch": 3, "val_acc": 0.3, "val_loss": 1 / 3}
    assert final["cut"]["epoch"] == 1 and isinstance(final["cut"]["epoch"], int)


# ----------------------------------------------------------------------------------- ASHA
@dataclass(frozen=True)
class _Trial:
    trial_id: str


def _asha(tmp_path, mode: str = "max"):
    from tuner.tune import ResumableASHA

    return ResumableASHA(
        results_root=str(tmp_path),
        experiment="x",
        time_attr="epoch",
        metric="val_acc",
        mode=mode,
        max_t=8,
        grace_period=1,
        reduction_factor=2,
    )


def _results(n_trials: int = 12, epochs: int = 8, seed: int = 0) -> list[tuple[str, int, float]]:
    """Results of trials of different quality and speed, in the order they arrive."""
    rng = random.Random(seed)
    timed = []
    for i in range(n_trials):
        quality, epoch_s, start = rng.random(), rng.uniform(0.5, 2), rng.uniform(0, 3)
        for e in range(1, epochs + 1):
            value = quality * (1 - 0.5**e) + rng.gauss(0, 0.01)
            timed.append((start + e * epoch_s, f"t{i}", e, value))
    return [(t, e, v) for _, t, e, v in sorted(timed)]


def _live(asha, results) -> tuple[dict[str, int], list]:
    """Feed results to a scheduler as Tune would: (epoch each trial stopped at, results)."""
    stopped: dict[str, int] = {}
    received = []
    for trial_id, epoch, value in results:
        if trial_id in stopped:
            continue
        received.append((trial_id, epoch, value))
        if trial_id not in asha._trial_info:
            asha.on_trial_add(None, _Trial(trial_id))
        action = asha.on_trial_result(None, _Trial(trial_id), {"epoch": epoch, "val_acc": value})
        if action == "STOP":
            stopped[trial_id] = epoch
    return stopped, received


@pytest.mark.parametrize("mode", ["max", "min"])
def test_asha_rebuild_reproduces_rungs_and_decisions(tmp_path, mode):
    results = _results()
    cut = len(results) // 3
    stopped_all, _ = _live(_asha(tmp_path, mode), results)
    # The same stream cut a third of the way: the epochs table holds what was received.
    before = _asha(tmp_path, mode)
    stopped_before, table = _live(before, results[:cut])
    stopped_before = {t: e for t, e in stopped_before.items() if e < 8}  # ASHA's, not max_t
    resumed = _asha(tmp_path, mode)
    resumed._loaded = True
    assert resumed.rebuild(table) == len(table)
    assert resumed._brackets[0]._rungs == before._brackets[0]._rungs
    assert resumed.stopped == stopped_before
    # Continuing after the rebuild, every trial stops where the uninterrupted run stopped it;
    # a fresh scheduler (what Tune's restore gives) takes other decisions.
    rest = [r for r in results[cut:] if r[0] not in stopped_before]
    assert {**stopped_before, **_live(resumed, rest)[0]} == stopped_all
    fresh = _asha(tmp_path, mode)
    fresh._loaded = True
    assert {**stopped_before, **_live(fresh, rest)[0]} != stopped_all


def test_asha_stops_a_trial_at_its_recorded_stop(tmp_path):
    asha = _asha(tmp_path)
    asha._loaded = True
    good = [(f"g{i}", 1, 0.9) for i in range(4)]
    asha.rebuild([*good, ("bad", 1, 0.1)])
    assert asha.stopped == {"bad": 1}
    asha.on_trial_add(None, _Trial("bad"))
    assert asha.on_trial_result(None, _Trial("bad"), {"epoch": 1, "val_acc": 0.1}) == "STOP"
    asha.finished = {"g0"}
    asha.on_trial_add(None, _Trial("g0"))
    assert asha.on_trial_result(None, _Trial("g0"), {"epoch": 1, "val_acc": 0.9}) == "STOP"
    asha.on_trial_add(None, _Trial("g1"))
    assert asha.on_trial_result(None, _Trial("g1"), {"epoch": 2, "val_acc": 0.9}) == "CONTINUE"


# -------------------------------------------------------------------------------- storage
def test_local_results_refused_on_more_than_one_node(tmp_path):
    with pytest.raises(StorageError, match="s3://") as err:
        check_storage(str(tmp_path / "r"), "10.0.0.1:6379", nodes=3)
    assert str(tmp_path / "r") in str(err.value) and "3 nodes" in str(err.value)
    check_storage(str(tmp_path / "r"), "10.0.0.1:6379", nodes=3, shared=True)
    check_storage(str(tmp_path / "r"), None, nodes=1)
    check_storage("s3://bucket/tuner", "10.0.0.1:6379", nodes=3)
    check_storage("gs://bucket/tuner", "10.0.0.1:6379", nodes=3)
    with pytest.raises(StorageError, match="scheme 'ftp'"):
        check_storage("ftp://host/x", None, nodes=1)
    with pytest.raises(StorageError, match="local path"):
        check_storage(f"file://{tmp_path}", "auto", nodes=2)
    assert is_local("results") and is_local("file:///x") and not is_local("s3://b/x")
