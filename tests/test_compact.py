"""Compaction of the results store (tuner.compact).

The results folders are built by hand (``ResultsStore``) or by ``benchmarks/scale.py``'s
``synthetic_results``; a compaction is killed with SIGKILL at several moments in a child
process, and read concurrently, to show that no row is ever lost or doubled.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from tuner import compact as compact_mod
from tuner import rank as rank_cli
from tuner.compact import LEFTOVER, CompactionError, compact
from tuner.lock import ExperimentLock
from tuner.results import COMPACTED, TRIAL_SCHEMA, ResultsStore, load, write_atomic

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(root: Path, trials: int) -> Path:
    bench = runpy.run_path(str(ROOT / "benchmarks" / "scale.py"), run_name="benchmarks_scale")
    return bench["synthetic_results"](root, trials)


def _rows(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables as ``pd.read_parquet`` reads the folders, in a stable order."""
    trials = pd.read_parquet(exp / "trials").sort_values("trial_id", ignore_index=True)
    epochs = pd.read_parquet(exp / "epochs")
    return trials, epochs.sort_values(["trial_id", "epoch"], ignore_index=True)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet") if not p.name.startswith("."))


@pytest.fixture
def exp(tmp_path) -> Path:
    """50 trials: 49 finished (per-trial files), one failed; plus one trial still running."""
    exp = _synthetic(tmp_path, 50)
    ResultsStore(tmp_path, "scale").write_epochs("running", [{"epoch": 1, "val_acc": 0.3}])
    return exp


def test_compaction_packs_finished_trials_into_one_file_per_table(exp):
    trials, epochs = _rows(exp)
    done = compact(str(exp))
    assert done.packed == {"trials": 49, "epochs": 49}
    assert done.kept == {"trials": 1, "epochs": 2}  # the failed trial, the running one
    after_t, after_e = _rows(exp)
    pd.testing.assert_frame_equal(trials, after_t)
    pd.testing.assert_frame_equal(epochs, after_e)
    t_files, e_files = _files(exp / "trials"), _files(exp / "epochs")
    assert len(t_files) == 2 and sum(f.startswith(COMPACTED) for f in t_files) == 1
    assert "00000_00049.parquet" in t_files  # failed: a resumed search retries it
    assert "running.parquet" in e_files and len(e_files) == 3
    assert not list(exp.glob(f"{LEFTOVER}*"))
    # The next compaction merges the new finished trials with the compacted file.
    store = ResultsStore(exp.parent, "scale")
    store.write_trial({"trial_id": "running", "status": "completed", "epochs_run": 1})
    again = compact(str(exp))
    assert again.packed == {"trials": 2, "epochs": 2} and again.rows["trials"] == 50
    assert _files(exp / "trials") == ["00000_00049.parquet"] + [
        f for f in _files(exp / "trials") if f.startswith(COMPACTED)
    ]
    trials2, epochs2 = _rows(exp)
    assert trials2["trial_id"].is_unique and len(trials2) == 51
    assert not epochs2.duplicated(["trial_id", "epoch"]).any() and len(epochs2) == len(epochs)
    assert compact(str(exp)).packed == {"trials": 0, "epochs": 0}  # nothing new: untouched


def test_segments_add_a_file_without_rewriting_earlier_ones_and_merge_at_the_end(exp):
    trials, epochs = _rows(exp)
    first = compact(str(exp), merge=False)
    assert first.packed == {"trials": 49, "epochs": 49}
    (segment,) = (exp / "trials").glob(f"{COMPACTED}*")
    inode = segment.stat().st_ino
    store = ResultsStore(exp.parent, "scale")
    store.write_trial({"trial_id": "running", "status": "completed", "epochs_run": 1})
    second = compact(str(exp), merge=False)
    assert second.packed == {"trials": 1, "epochs": 1}  # the new trial's files only
    assert second.rows == {"trials": 1, "epochs": 1}
    t_files = _files(exp / "trials")
    assert sum(f.startswith(COMPACTED) for f in t_files) == 2 and segment.name in t_files
    assert segment.stat().st_ino == inode  # linked into the new folder, not rewritten
    both_t, both_e = _rows(exp)
    assert both_t["trial_id"].is_unique and len(both_t) == len(trials) + 1
    pd.testing.assert_frame_equal(both_e, epochs)  # "running" had its epoch row already
    assert compact(str(exp), merge=False).packed == {"trials": 0, "epochs": 0}
    merged = compact(str(exp))
    assert merged.packed == {"trials": 2, "epochs": 2} and merged.rows["trials"] == 50
    assert sum(f.startswith(COMPACTED) for f in _files(exp / "trials")) == 1
    pd.testing.assert_frame_equal(_rows(exp)[0], both_t)


def test_a_segment_rewrites_an_earlier_one_whose_rows_a_trial_file_replaces(exp):
    compact(str(exp), merge=False)
    store = ResultsStore(exp.parent, "scale")
    table = pd.read_parquet(exp / "trials")
    short = table[(table["epochs_run"] < 20) & (table["status"] == "early-stopped")]
    trial = short["trial_id"].iloc[0]
    # a finished trial written again (a resumed search that re-ran it after the snapshot)
    store.write_trial({"trial_id": trial, "status": "completed", "epochs_run": 20})
    assert store.finished_trial_ids() >= {trial}
    done = compact(str(exp), merge=False)
    assert done.packed["trials"] == 2  # the trial's file and the segment that held it
    trials = pd.read_parquet(exp / "trials")
    assert trials["trial_id"].is_unique and len(trials) == 50
    row = trials.set_index("trial_id").loc[trial]
    assert row["epochs_run"] == 20 and row["status"] == "completed"  # the new row, once
    assert sum(f.startswith(COMPACTED) for f in _files(exp / "trials")) == 1


def test_store_operations_see_compacted_rows(exp):
    store = ResultsStore(exp.parent, "scale")
    ids_before = (store.trial_ids("trials"), store.trial_ids("epochs"))
    finished, final = store.finished_trial_ids(), store.final_results()
    compact(str(exp))
    assert (store.trial_ids("trials"), store.trial_ids("epochs")) == ids_before
    assert store.finished_trial_ids() == finished and store.final_results() == final
    # rows written in another folder: their checkpoint paths are re-rooted, compacted or not
    trial = sorted(finished)[0]
    old = f"/elsewhere/scale/tune/{trial}/checkpoint_000001"
    table = pd.read_parquet(exp / "trials")
    assert table["checkpoint"].isna().all()
    path = next((exp / "trials").glob(f"{COMPACTED}*"))
    rows = pd.read_parquet(path)
    rows.loc[rows["trial_id"] == trial, "checkpoint"] = old
    write_atomic(pa.Table.from_pandas(rows, schema=TRIAL_SCHEMA, preserve_index=False), str(path))
    assert store.rebase_checkpoints("tune") == ["/elsewhere/scale"]
    rebased = pd.read_parquet(exp / "trials").set_index("trial_id")["checkpoint"][trial]
    assert rebased == f"{exp}/tune/{trial}/checkpoint_000001"
    # trials a resumed snapshot never knew: their rows leave the compacted files too
    known = store.trial_ids("trials") - {trial}
    assert store.move_orphans(known | {"running"}) == [trial]
    trials, epochs = load(exp)
    assert trial not in set(trials["trial_id"]) and trial not in set(epochs["trial_id"])
    assert len(trials) == 49 and trials["trial_id"].is_unique
    assert (exp / "trials" / "_orphaned" / f"{trial}.parquet").is_file()
    assert (exp / "epochs" / "_orphaned" / f"{trial}.parquet").is_file()


def test_a_failed_compaction_changes_nothing_and_is_cleaned_up(exp, monkeypatch):
    before = _rows(exp)

    def refuse(a, b):
        raise CompactionError("no swap here")

    monkeypatch.setattr(compact_mod, "exchange", refuse)
    with pytest.raises(CompactionError):
        compact(str(exp))
    assert list(exp.glob(f"{LEFTOVER}*"))  # the folder it built, never swapped in
    for got, want in zip(_rows(exp), before, strict=True):
        pd.testing.assert_frame_equal(got, want)
    monkeypatch.undo()
    # killed after the swap, before the old content was removed
    monkeypatch.setattr(compact_mod.shutil, "rmtree", lambda *a, **k: None)
    compact(str(exp))
    assert len(list(exp.glob(f"{LEFTOVER}*"))) == 3
    for got, want in zip(_rows(exp), before, strict=True):
        pd.testing.assert_frame_equal(got, want)
    monkeypatch.undo()
    compact(str(exp))
    assert not list(exp.glob(f"{LEFTOVER}*"))


def test_compaction_killed_at_any_moment_loses_and_doubles_nothing(tmp_path):
    exp = _synthetic(tmp_path, 300)
    want_t, want_e = _rows(exp)
    code = "import sys; from tuner.compact import compact; compact(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tuner.compact"], env=env, check=True)
    start_s = time.perf_counter() - t0
    kills = 0
    for delay in (0.3, 0.6, 0.9, 1.2, 1.6, 2.0, 3.0):
        proc = subprocess.Popen([sys.executable, "-c", code, str(exp)], env=env)
        time.sleep(start_s + delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        got_t, got_e = _rows(exp)
        pd.testing.assert_frame_equal(got_t, want_t)
        pd.testing.assert_frame_equal(got_e, want_e)
    assert kills, "every compaction ended before its kill: the test killed none"
    compact(str(exp))
    assert not list(exp.glob(f"{LEFTOVER}*"))
    assert len(_files(exp / "trials")) == 7  # the compacted file and the 6 failed trials
    for got, want in zip(_rows(exp), (want_t, want_e), strict=True):
        pd.testing.assert_frame_equal(got, want)


def test_readers_during_a_compaction_see_every_row_once(tmp_path):
    exp = _synthetic(tmp_path, 200)
    n_trials, n_epochs = (len(t) for t in _rows(exp))
    seen, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            trials, epochs = load(exp)
            seen.append((len(trials), trials["trial_id"].nunique(), len(epochs)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        compact(str(exp))
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) == {(n_trials, n_trials, n_epochs)}


def test_rank_compact_refuses_a_running_experiment_and_compacts_a_stopped_one(exp, capsys):
    store = ResultsStore(exp.parent, "scale")
    lock = ExperimentLock(pafs.LocalFileSystem(), store.dir)
    lock.acquire("scale")
    try:
        assert rank_cli.main([str(exp), "--compact"]) == 2
        assert "error: " in capsys.readouterr().err
        assert not any(f.startswith(COMPACTED) for f in _files(exp / "trials"))
    finally:
        lock.release()
    before = rank_cli.main([str(exp)]), capsys.readouterr().out
    assert rank_cli.main([str(exp), "--compact"]) == 0
    out = capsys.readouterr()
    assert "compacted: trials: 49 file(s) packed" in out.err
    assert (0, out.out) == before  # the same ranking from the compacted folder
    assert not (exp / ".driver.json").exists()


def test_rank_compact_of_a_folder_without_results_creates_nothing(tmp_path, capsys):
    assert rank_cli.main([str(tmp_path / "none"), "--compact"]) == 2
    assert "no trials" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_compaction_needs_a_local_folder():
    with pytest.raises(CompactionError, match="local results folder"):
        compact("s3://bucket/results/exp")
