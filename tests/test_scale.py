"""What keeps a search's cost per trial flat (tuner.tune.scale), and benchmarks/scale.py.

The switches are tested on Tune's own checkpoint manager and on checkpoint folders built
here; a toy search through ``tuner.run`` ends compacted, and rank, report and ``--resume``
read it; the benchmark runs in its ``--quick`` form (its figures are printed, not checked).
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml

from tuner import rank as rank_cli
from tuner.results import COMPACTED, load

ROOT = Path(__file__).resolve().parents[1]


def test_snapshot_period_adapts_to_its_cost(tmp_path):
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from tuner.tune.scale import MIN_PERIOD_S, adaptive_snapshots

    assert adaptive_snapshots()
    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period="auto")
    manager._update_auto_checkpoint_time(0.01)
    assert manager._checkpoint_period == MIN_PERIOD_S
    manager._update_auto_checkpoint_time(2.0)
    assert manager._checkpoint_period == pytest.approx(38.0)  # 5 % of the time
    # a large snapshot is written no more than BYTES_PER_S on average
    from types import SimpleNamespace

    from tuner.tune.scale import BYTES_PER_S

    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "experiment_state-x.json").write_bytes(b"x" * (3 * BYTES_PER_S))
    (folder / "trial_0").mkdir()  # trial folders do not count
    (folder / "trial_0" / "big").write_bytes(b"x" * (5 * BYTES_PER_S))
    manager._storage = SimpleNamespace(experiment_driver_staging_path=str(folder))
    manager._update_auto_checkpoint_time(0.01)
    assert manager._checkpoint_period == pytest.approx(3.0)
    fixed = _ExperimentCheckpointManager(storage=None, checkpoint_period=3)
    fixed._update_auto_checkpoint_time(2.0)
    assert fixed._checkpoint_period == 3.0


class _Checkpoint:
    def __init__(self, folder: Path, index: int):
        self.path = str(folder / f"checkpoint_{index:06d}")
        self.filesystem = pafs.LocalFileSystem()
        Path(self.path).mkdir(parents=True, exist_ok=True)


class _Trial:
    def __init__(self, checkpoint):
        self.checkpoint = checkpoint


def test_pruner_keeps_the_newest_and_what_the_last_two_snapshots_name(tmp_path):
    from tuner.tune.scale import CheckpointPruner

    folder = tmp_path / "trial"
    pruner = CheckpointPruner()
    pruner.on_step_begin(0, [])

    def save(i):
        pruner.on_checkpoint(0, [], None, _Checkpoint(folder, i))
        return sorted(int(p.name[-6:]) for p in folder.iterdir())

    assert save(0) == [0] and save(1) == [0, 1] and save(2) == [1, 2]
    pruner.get_state()  # a snapshot names checkpoint 2
    assert save(3) == [2, 3] and save(4) == [2, 3, 4] and save(5) == [2, 4, 5]
    pruner.get_state()  # names 5; the one before (2) stays pinned
    assert save(6) == [2, 5, 6]
    pruner.get_state()  # names 6: 2 is no longer pinned, pruned at this snapshot
    assert sorted(int(p.name[-6:]) for p in folder.iterdir()) == [5, 6]
    # a resumed search pins what its restored snapshot names
    resumed = CheckpointPruner()
    resumed.on_step_begin(0, [_Trial(_Checkpoint(folder, 5))])
    resumed.on_checkpoint(0, [], None, _Checkpoint(folder, 7))
    resumed.on_checkpoint(0, [], None, _Checkpoint(folder, 8))
    assert sorted(int(p.name[-6:]) for p in folder.iterdir()) == [5, 7, 8]


@pytest.mark.slow
def test_a_search_ends_compacted_and_reads_and_resumes(tmp_path, monkeypatch, capsys):
    from tuner import compact as compact_mod
    from tuner.report.__main__ import main as report_main
    from tuner.run import main as run_main
    from tuner.tune import Segments

    monkeypatch.setenv("TUNER_TOY_EPOCH_S", "0.02")
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    bench = runpy.run_path(str(ROOT / "benchmarks" / "scale.py"), run_name="benchmarks_scale")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(bench["toy_spec"](8, 4, 2)))
    exp = tmp_path / "r" / "scale"
    segments: list[tuple[bool, int, int]] = []  # (merge, compacted files, per-trial files)
    real = compact_mod.compact

    def spy(exp_dir, *, merge=True):
        done = real(exp_dir, merge=merge)
        names = [p.name for p in (exp / "trials").glob("*.parquet")]
        compacted = sum(n.startswith(COMPACTED) for n in names)
        segments.append((merge, compacted, len(names) - compacted))
        return done

    monkeypatch.setattr(compact_mod, "compact", spy)
    monkeypatch.setattr(Segments, "EVERY", 3)
    args = [str(spec), "--results", str(tmp_path / "r"), "--num-cpus", "2"]
    assert run_main(args) == 0
    out = capsys.readouterr().out
    # a segment after every 3 trials that ended, each adding one file; merged at the end
    assert segments[:2] == [(False, 1, 0), (False, 2, 0)], segments
    assert re.search(r"results compacted: trials: 4 file\(s\) packed into one of 8 rows", out), out
    for table in ("trials", "epochs"):
        files = [p.name for p in (exp / table).glob("*.parquet")]
        assert len(files) == 1 and files[0].startswith(COMPACTED), files
    trials, epochs = load(exp)
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert len(epochs) == trials["epochs_run"].sum()
    assert rank_cli.main([str(exp)]) == 0
    assert report_main([str(exp), "--no-figures"]) == 0
    # CheckpointPruner: per trial the two newest checkpoints, plus at most one that the
    # snapshot before the final one named (the final one names each trial's newest)
    kept = {d.name: len(list(d.glob("checkpoint_*"))) for d in (exp / "tune").iterdir()}
    kept = {name: n for name, n in kept.items() if n}
    assert kept and max(kept.values()) <= 3, kept
    full = trials.loc[trials["epochs_run"] == 4, "trial_id"]
    full_kept = [n for name, n in kept.items() for t in full if f"_{t}_" in name]
    assert full_kept and max(full_kept) < 4, kept  # 4 checkpoints written, one or more deleted
    capsys.readouterr()
    assert run_main([*args, "--resume"]) == 0
    again, again_epochs = load(exp)
    pd.testing.assert_frame_equal(
        again.drop(columns=["end_time"]).sort_values("trial_id", ignore_index=True),
        trials.drop(columns=["end_time"]).sort_values("trial_id", ignore_index=True),
    )
    assert len(again_epochs) == len(epochs)


@pytest.mark.slow
def test_scale_benchmark_quick_form_prints_every_figure(tmp_path, capsys):
    bench = runpy.run_path(str(ROOT / "benchmarks" / "scale.py"), run_name="benchmarks_scale")
    assert bench["main"](["--quick", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for side in ("tuner", "peer "):
        assert len(re.findall(rf"^{side}\s+\d+ trials .* bytes/trial ", out, re.M)) == 2, out
    assert re.search(r"^tuner: time per trial growth: \d+\.\d\dx", out, re.M), out
    assert re.search(r"^tuner: bytes per trial growth: \d+\.\d\dx", out, re.M)
    assert re.search(r"^peer: time per trial growth: \d+\.\d\dx", out, re.M)
    assert re.search(r"^peer: bytes per trial growth: \d+\.\d\dx", out, re.M)
    assert re.search(r"TPE suggestion in a study of 12 trials: Optuna's defaults", out)
    assert re.search(
        r"tuner.rank on 200 synthetic trials: per-trial files \d+\.\d\d s; during a search "
        r"\(a segment every 50 trials\) \d+\.\d\d s; compacted",
        out,
    ), out
