"""Hostile and broken inputs: oversized specs, degenerate datasets, stale driver locks.

Each bad input must end with a clear message naming the problem, exit status 2 and nothing
created; each measured figure of the README's fault table is printed (``pytest -s``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch
import yaml
from PIL import Image

from tests.fixtures import make_nwpu
from trainables.classify import train
from trainables.config import DataConfig, TrialConfig
from trainables.data import __main__ as inspect_cli
from trainables.data.dataset import prepare
from trainables.metrics import detailed
from tuner.lock import ExperimentLock, ExperimentLocked, this_process
from tuner.run import main
from tuner.spec import MAX_SPEC_BYTES, MAX_SPEC_VALUES, MAX_TRIALS

ROOT = Path(__file__).resolve().parents[1]
TOY = {
    "experiment": "hostile",
    "trainable": "toy",
    "hyperparameters": {"lr": 1e-3, "epochs": 1},
    "search": {"algorithm": "grid"},
    "scheduler": {"type": "none"},
}


def _bomb(levels: int) -> str:
    """A "billion laughs" spec: ``10 ** levels`` strings from a few hundred bytes."""
    lines = ["experiment: bomb", "trainable: toy", 'l0: &l0 ["lol","lol","lol","lol","lol",'
             '"lol","lol","lol","lol","lol"]']  # fmt: skip
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _refused(tmp_path: Path, capsys, text: str, *extra: str) -> tuple[str, float]:
    """Run the CLI on a spec; assert exit 2 with nothing created; (message, seconds)."""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    results = tmp_path / "results"
    t0 = time.perf_counter()
    assert main([str(path), "--results", str(results), *extra]) == 2
    took = time.perf_counter() - t0
    assert not results.exists(), "nothing may be created for a refused spec"
    return capsys.readouterr().err, took


# --------------------------------------------------------------------------------- specs
def test_alias_bomb_is_refused_by_size(tmp_path, capsys):
    err, took = _refused(tmp_path, capsys, _bomb(6))
    assert f"more than {MAX_SPEC_VALUES:,} values" in err and "the limit is" in err
    print(f"\nFIGURES alias-bomb-1e6: exit=2, refused_in_s={took:.3f}")


def test_billion_laughs_is_refused_in_a_fresh_process(tmp_path):
    """The full bomb (10**9 strings), as a user would run it."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tuner.run", str(path), "--results", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    assert "the limit is" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
    print(
        f"\nFIGURES alias-bomb-1e9: file_bytes={path.stat().st_size}, exit=2, "
        f"process_wall_s={took:.2f} (interpreter start and imports included)"
    )


def test_oversized_spec_file_is_refused(tmp_path, capsys):
    text = yaml.safe_dump({**TOY, "description": "x" * (MAX_SPEC_BYTES + 1)})
    err, took = _refused(tmp_path, capsys, text)
    assert f"the limit for a spec is {MAX_SPEC_BYTES:,} bytes" in err
    print(f"\nFIGURES oversized-file: exit=2, refused_in_s={took:.3f}")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"search": {"algorithm": "optuna", "num_samples": 1e12}}, "less than or equal to 100000"),
        ({"search": {"algorithm": "grid", "seeds": 10_000_000}}, "100,000 seeds are allowed"),
        (
            {
                "hyperparameters": {
                    name: list(range(1, 11))
                    for name in ("lr", "batch_size", "epochs", "lr_step", "mlp_hidden", "seed")
                },
                "search": {"algorithm": "grid"},
            },
            "grid would expand to up to 1,000,000 trials",
        ),
    ],
    ids=["num_samples", "seeds", "grid"],
)
def test_absurd_search_sizes_are_refused(tmp_path, capsys, change, expected):
    spec = {**TOY, **change}
    if "hyperparameters" in change:
        spec["scheduler"] = {"type": "none"}
    err, took = _refused(tmp_path, capsys, yaml.safe_dump(spec))
    assert expected in err, err
    assert f"{MAX_TRIALS:,}" in err or str(MAX_TRIALS) in err
    print(f"\nFIGURES absurd-size: exit=2, refused_in_s={took:.3f}, message={err.strip()[:120]!r}")


def test_hostile_saved_spec_is_refused_on_resume(tmp_path, capsys):
    """A copied results folder may hold anything in spec.yaml; --resume reads it with limits."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(TOY))
    exp = tmp_path / "results" / "hostile"
    exp.mkdir(parents=True)
    (exp / "spec.yaml").write_text(_bomb(7))
    before = sorted(p.name for p in exp.iterdir())
    assert main([str(path), "--results", str(tmp_path / "results"), "--resume"]) == 2
    assert "the limit is" in capsys.readouterr().err
    assert sorted(p.name for p in exp.iterdir()) == before


# ------------------------------------------------------------------------------ datasets
def _data(root: Path, **kw) -> DataConfig:
    return DataConfig(preset="folder", root=str(root), image_size=16, **kw)


def test_class_with_one_image_warns_and_its_test_accuracy_is_nan(tmp_path):
    root = make_nwpu(tmp_path / "d", classes=("airplane", "bridge", "palace"), per_class=10)
    for extra in sorted((root / "palace").iterdir())[1:]:
        extra.unlink()
    with pytest.warns(UserWarning, match=r"class 'palace' has 1 usable image\(s\), split train 1"):
        data = prepare(_data(root, cache_dir=str(tmp_path / "c")), num_workers=1)
    assert data.counts().loc["palace"].tolist() == [1, 0, 0]
    # what a trial reports for such a class: NaN (no test image), not 0
    cfg = TrialConfig(
        data=data.config,
        model="tiny_cnn",
        transfer="scratch",
        epochs=1,
        batch_size=8,
        num_workers=0,
    )
    summary = train(cfg, data=data, log=lambda _: None)
    per_class = summary["test_per_class_acc"]
    assert math.isnan(per_class[data.class_names.index("palace")])
    assert not any(math.isnan(v) for i, v in enumerate(per_class) if i != 2)
    result = detailed(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)
    assert result["per_class_acc"][:2] == [0.5, 1.0] and math.isnan(result["per_class_acc"][2])


def test_class_without_readable_images_is_refused(tmp_path, capsys, monkeypatch):
    root = make_nwpu(tmp_path / "d", classes=("airplane", "bridge", "palace"), per_class=6)
    for f in (root / "bridge").iterdir():
        f.write_bytes(b"not an image")
    cfg = _data(root, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="class 'bridge' has no readable image: all 6"):
        prepare(cfg, num_workers=1)
    # inspect shows the summary, then refuses
    assert inspect_cli.main(["inspect", str(root), "--cache-dir", str(tmp_path / "c")]) == 2
    out = capsys.readouterr().out
    assert "error: class 'bridge' has no readable image" in out and "airplane" in out
    # and the search refuses before anything is created
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "c"))
    spec = {
        "experiment": "unreadable",
        "dataset": {"preset": "folder", "root": str(root), "image_size": 16},
        "factors": {"model": "tiny_cnn", "transfer": "scratch"},
        "hyperparameters": {"epochs": 1},
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
    }
    err, _ = _refused(tmp_path, capsys, yaml.safe_dump(spec))
    assert "class 'bridge' has no readable image" in err, err


def test_same_image_under_two_classes_is_reported(tmp_path):
    root = make_nwpu(tmp_path / "d", classes=("airplane", "bridge"), per_class=8)
    source = sorted((root / "airplane").iterdir())[0]
    (root / "bridge" / "bridge_copy.jpg").write_bytes(source.read_bytes())
    with pytest.warns(UserWarning, match="under classes 'airplane' and 'bridge'") as caught:
        prepare(_data(root, cache_dir=str(tmp_path / "c")), num_workers=1)
    text = " ".join(str(w.message) for w in caught)
    assert source.name in text and "bridge_copy.jpg" in text


def test_image_kinds_summary(tmp_path):
    """The bad-image rows of the fault table: what each kind does to a prepared dataset."""
    root = make_nwpu(tmp_path / "d", classes=("airplane", "bridge", "palace"), per_class=8)
    Image.new("RGB", (16, 16)).save(root / "airplane" / "odd_size.png")
    (root / "airplane" / "broken.jpg").write_bytes(b"\x00broken")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file"):
        data = prepare(_data(root, cache_dir=str(tmp_path / "c")), num_workers=1)
    assert len(data.manifest) == 3 * 8 + 1 and data.findings == []
    print("\nFIGURES bad-images: unreadable file skipped with a warning naming it, rows 0 lost")


# ---------------------------------------------------------------------------------- locks
def _owner(folder: str, **kw) -> dict:
    owner = this_process(folder).__dict__ | kw
    return owner


def test_lock_of_a_live_driver_on_another_host_is_respected(tmp_path):
    fs, folder = pafs.LocalFileSystem(), str(tmp_path / "exp")
    Path(folder).mkdir()
    lock_file = Path(folder) / ".driver.json"
    lock_file.write_text(json.dumps(_owner(folder, host="node-7", pid=4242)))
    lock = ExperimentLock(fs, folder, beat_s=0.2, stale_s=5)
    with pytest.raises(ExperimentLocked, match=r"host node-7, pid 4242, started .* UTC"):
        lock.check("exp")
    with pytest.raises(ExperimentLocked, match="is being run by another driver"):
        lock.acquire("exp")
    # a heartbeat that looks old (a skewed clock) but still moves: the driver lives
    old = _owner(folder, host="node-7", pid=4242, heartbeat=time.time() - 3600)
    lock_file.write_text(json.dumps(old))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.05):
            old["beats"] += 1
            lock_file.write_text(json.dumps(old))

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        with pytest.raises(ExperimentLocked, match="node-7"):
            lock.acquire("exp")
    finally:
        stop.set()
        beater.join()


def test_lock_of_a_dead_driver_is_taken_over(tmp_path):
    fs, folder = pafs.LocalFileSystem(), str(tmp_path / "exp")
    Path(folder).mkdir()
    lock_file = Path(folder) / ".driver.json"
    # another host, heartbeat stopped an hour ago
    stale = _owner(folder, host="node-7", pid=4242, heartbeat=time.time() - 3600)
    lock_file.write_text(json.dumps(stale))
    lock = ExperimentLock(fs, folder, beat_s=0.2, stale_s=5)
    note = lock.acquire("exp")
    assert "took over" in note and "node-7" in note and "no heartbeat for" in note
    mine = json.loads(lock_file.read_text())
    assert mine["pid"] == os.getpid() and mine["token"] != stale["token"]
    time.sleep(0.5)
    assert json.loads(lock_file.read_text())["beats"] >= 1, "the holder keeps beating"
    lock.release()
    assert not lock_file.exists()
    # this host, a pid that no longer runs
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file.write_text(json.dumps(_owner(folder, pid=dead.pid, pid_start=None)))
    lock = ExperimentLock(fs, folder)
    note = lock.acquire("exp")
    lock.release()
    assert f"pid {dead.pid} no longer runs" in note
    # a lock copied along with its folder guards the folder it came from
    lock_file.write_text(json.dumps(_owner(str(tmp_path / "elsewhere"))))
    lock = ExperimentLock(fs, folder)
    note = lock.acquire("exp")
    lock.release()
    assert "copied from" in note and "elsewhere" in note
