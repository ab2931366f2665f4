"""The results folder under faults, with real driver processes on a local Ray.

Each test runs ``python -m tuner.run`` as its own process (its own local Ray, 2 CPUs, the toy
trainable), SIGKILLs it, resumes it, starts two at once, corrupts its files, and checks
that every trial row lands once, in the folder the user named, and that nothing else is
touched. The figures of the README's fault table are printed (``pytest -s``): lines that
start with ``FIGURES``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests import raycluster
from tuner.results import load

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 12


def _toy_spec(experiment: str, **kw) -> dict:
    spec = {
        "experiment": experiment,
        "trainable": "toy",
        "hyperparameters": {
            "lr": [1e-4, 1e-3, 1e-2, 1e-1],
            "batch_size": [16, 32, 64],
            "epochs": 4,
        },
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
    }
    spec.update(kw)
    return spec


def _write_spec(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / f"{spec['experiment']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _env(tmp_path: Path, **kw: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNER_TOY_EPOCH_S": "0.4"}
    env["TUNER_CACHE"] = str(tmp_path / "cache")
    env.pop("RAY_ADDRESS", None)
    env.update(kw)
    return env


class Driver(raycluster.Driver):
    """``python -m tuner.run`` on 2 CPUs with a status line every 2 s (see tests.raycluster)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        super().__init__([*args, "--num-cpus", "2", "--status-every", "2"], env)


def _rows(exp: Path, table: str) -> int:
    return len([f for f in (exp / table).glob("*.parquet") if not f.name.startswith(".")])


def _run_until(driver: Driver, exp: Path, trial_rows: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and driver.proc.poll() is None:
        if _rows(exp, "trials") >= trial_rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{trial_rows} trial rows not reached:\n{driver.output}")


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _settled(folder: Path, quiet_s: float = 2.0, timeout: float = 60) -> dict[str, str]:
    """The tree of ``folder`` once nothing has changed in it for ``quiet_s`` seconds."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        now = _tree(folder)
        if now == last:
            return now
        last = now
        time.sleep(quiet_s)
    raise AssertionError(f"{folder} kept changing after the driver died")


def _check_tables(exp: Path, n_trials: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per trial, no duplicated (trial, epoch), every trial's epochs 1..epochs_run."""
    trials, epochs = load(exp)
    assert len(trials) == n_trials and trials["trial_id"].is_unique, trials
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for trial_id, group in epochs.groupby("trial_id"):
        run = int(trials.loc[trials["trial_id"] == trial_id, "epochs_run"].iloc[0])
        assert sorted(group["epoch"]) == list(range(1, run + 1)), (trial_id, list(group["epoch"]))
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    assert len(epochs) == trials["epochs_run"].sum()
    return trials, epochs


def _figure(name: str, **values) -> None:
    text = ", ".join(f"{k}={v}" for k, v in values.items())
    print(f"\nFIGURES {name}: {text}")


def _orphaned(exp: Path) -> int:
    return len(list(exp.glob("*/_orphaned/*.parquet")))


# ---------------------------------------------------------------- kill, resume, move, copy
def test_killed_driver_resumes_in_place_and_from_a_copied_folder(tmp_path):
    """Issue 10 items 1 and 2: ``--resume --results B`` writes only to B; the dead driver's
    lock is taken over."""
    spec = _write_spec(tmp_path, _toy_spec("moved"))
    a, b = tmp_path / "A", tmp_path / "B"
    exp_a, exp_b = a / "moved", b / "moved"
    env = _env(tmp_path)
    first = Driver([spec, "--results", str(a)], env)
    _run_until(first, exp_a, 3)
    first.kill()
    at_kill = _settled(exp_a)
    done_before = {p.name: p.read_bytes() for p in (exp_a / "trials").glob("*.parquet")}
    assert 3 <= len(done_before) < N_TRIALS, "the kill should land half way"
    shutil.copytree(exp_a, exp_b)

    copy = Driver([spec, "--results", str(b), "--resume"], env)
    assert copy.wait() == 0, copy.output
    assert _tree(exp_a) == at_kill, "resuming the copy touched the original folder"
    assert "took over the lock" in copy.output and "copied from" in copy.output, copy.output
    trials_b, epochs_b = _check_tables(exp_b, N_TRIALS)
    # rows finished before the kill are kept as they were, their checkpoints re-rooted in B
    # (the search ends by compacting its tables: rows are compared, not files)
    table_b = pd.read_parquet(exp_b / "trials")
    for name, data in done_before.items():
        before = pd.read_parquet(io.BytesIO(data))
        after = table_b[table_b["trial_id"] == before["trial_id"][0]].reset_index(drop=True)
        if after.empty:
            assert (exp_b / "trials" / "_orphaned" / name).read_bytes() == data
            continue
        pd.testing.assert_frame_equal(
            before.drop(columns="checkpoint"), after.drop(columns="checkpoint")
        )
        assert after["checkpoint"][0] == before["checkpoint"][0].replace(str(exp_a), str(exp_b))
    assert trials_b["checkpoint"].notna().all()
    assert all(c.startswith(str(exp_b) + os.sep) for c in trials_b["checkpoint"])
    assert all(Path(c, "toy.json").is_file() for c in trials_b["checkpoint"])

    in_place = Driver([spec, "--results", str(a), "--resume"], env)
    assert in_place.wait() == 0, in_place.output
    assert "took over the lock" in in_place.output and "no longer runs" in in_place.output
    trials_a, epochs_a = _check_tables(exp_a, N_TRIALS)
    for trials, epochs, exp, name in (
        (trials_b, epochs_b, exp_b, "copied-folder"),
        (trials_a, epochs_a, exp_a, "in-place"),
    ):
        _figure(
            f"resume-{name}",
            trials=len(trials),
            finished_before_kill=len(done_before),
            rows_lost=N_TRIALS - len(trials),
            rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
            rows_orphaned=_orphaned(exp),
            files_changed_in_original=0 if name == "copied-folder" else "n/a",
            exit=0,
        )


# ----------------------------------------------------------------------- two drivers at once
def test_only_one_driver_runs_an_experiment(tmp_path):
    """Issue 10 item 2: of two drivers started at once one runs, the other exits 2 naming
    it; a ``--resume`` while it runs exits 2 too; the running one loses nothing."""
    spec = _write_spec(tmp_path, _toy_spec("twice"))
    results = tmp_path / "results"
    exp = results / "twice"
    env = _env(tmp_path)
    drivers = [Driver([spec, "--results", str(results)], env) for _ in range(2)]
    deadline = time.time() + 180
    while time.time() < deadline and all(d.proc.poll() is None for d in drivers):
        time.sleep(0.1)
    loser = next(d for d in drivers if d.proc.poll() is not None)
    winner = next(d for d in drivers if d is not loser)
    assert loser.wait() == 2, loser.output
    assert "is being run by another driver" in loser.output, loser.output
    assert f"pid {winner.proc.pid}" in loser.output, loser.output

    _run_until(winner, exp, 1)
    late = Driver([spec, "--results", str(results), "--resume"], env)
    assert late.wait() == 2, late.output
    assert f"pid {winner.proc.pid}" in late.output and "started" in late.output, late.output
    assert "Traceback" not in late.output

    assert winner.wait() == 0, winner.output
    assert "trials: none recorded" not in winner.output
    trials, epochs = _check_tables(exp, N_TRIALS)
    assert (trials["status"] == "completed").all()
    assert _orphaned(exp) == 0
    assert not (exp / ".driver.json").exists(), "the lock is released at the end"
    _figure(
        "concurrent-second-run",
        winner_trials=len(trials),
        rows_lost=N_TRIALS - len(trials),
        rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
        rows_orphaned=_orphaned(exp),
        second_start_exit=2,
        resume_while_running_exit=2,
        winner_exit=0,
    )


# ------------------------------------------------------------------------- corrupt files
def test_resume_quarantines_corrupt_files_and_rebuilds_their_rows(tmp_path):
    """Issue 10 item 3: truncated epochs and trials files do not crash ``--resume``."""
    spec = _write_spec(tmp_path, _toy_spec("torn"))
    results = tmp_path / "results"
    exp = results / "torn"
    env = _env(tmp_path)
    first = Driver([spec, "--results", str(results)], env)
    deadline = time.time() + 180
    while time.time() < deadline and first.proc.poll() is None:
        done = {p.stem for p in (exp / "trials").glob("*.parquet")}
        running = {p.stem for p in (exp / "epochs").glob("*.parquet")} - done
        if len(done) >= 3 and running:
            break
        time.sleep(0.1)
    first.kill()
    _settled(exp)
    done = sorted(p.stem for p in (exp / "trials").glob("*.parquet"))
    running = sorted({p.stem for p in (exp / "epochs").glob("*.parquet")} - set(done))
    assert len(done) >= 3 and running, (done, running)
    victims = [
        exp / "epochs" / f"{running[0]}.parquet",  # a running trial's epochs
        exp / "epochs" / f"{done[0]}.parquet",  # a finished trial's epochs
        exp / "trials" / f"{done[1]}.parquet",  # a finished trial's row
    ]
    for path in victims:
        path.write_bytes(path.read_bytes()[:40])

    second = Driver([spec, "--results", str(results), "--resume"], env)
    assert second.wait() == 0, second.output
    assert "Traceback" not in second.output and "ArrowInvalid" not in second.output
    assert "3 unreadable result file(s) moved to _quarantine/" in second.output, second.output
    for path in victims:
        assert str(path.parent / "_quarantine" / path.name) in second.output
        assert (path.parent / "_quarantine" / path.name).is_file()
    trials, epochs = _check_tables(exp, N_TRIALS)
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status"]]
    rebuilt = re.findall(r"trial (\S+): (\d+) epoch row\(s\) rebuilt", second.output)
    _figure(
        "corrupt-files",
        truncated="epochs of a running trial, epochs of a finished trial, a trial row",
        quarantined=len(victims),
        epoch_files_rebuilt_from_checkpoints=len(rebuilt),
        rows_lost=N_TRIALS - len(trials),
        epoch_rows_missing=int(trials["epochs_run"].sum() - len(epochs)),
        rows_duplicated=int(epochs.duplicated(["trial_id", "epoch"]).sum()),
        exit=0,
    )


# -------------------------------------------------------------------------- local Ray
def _session(pid: int) -> dict[int, str]:
    """Processes of the session ``pid`` leads, and their descendants: pid -> name."""
    info = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        info[int(d.name)] = (
            int(fields[1]),
            int(fields[3]),
            stat[stat.index("(") + 1 : stat.rindex(")")],
        )
    mine = {p for p, (_, sid, _) in info.items() if sid == pid}
    grown = True
    while grown:
        grown = False
        for p, (ppid, _, _) in info.items():
            if ppid in mine and p not in mine:
                mine.add(p)
                grown = True
    return {p: info[p][2] for p in mine}


def _listening(pids) -> list[tuple[str, str]]:
    """(local address, process name) of the TCP sockets ``pids`` listen on."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for m in re.finditer(r'\("([^"]+)",pid=(\d+)', line):
            if int(m.group(2)) in pids:
                found.append((line.split()[3], m.group(1)))
    return found


LOOPBACK = re.compile(r"(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir() or not shutil.which("ss"), reason="Linux + ss")
def test_local_ray_listens_on_loopback_and_is_cleaned_up_after_sigkill(tmp_path):
    """Issue 10 item 10: a local run's Ray serves on 127.0.0.1 with token authentication,
    writes no token to disk, and its processes go when its driver is SIGKILLed."""
    spec = _write_spec(tmp_path, _toy_spec("local"))
    results = tmp_path / "results"
    home = tmp_path / "home"
    home.mkdir()
    env = _env(tmp_path, HOME=str(home), TUNER_TOY_EPOCH_S="0.5")
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    driver = Driver([spec, "--results", str(results)], env)
    _run_until(driver, results / "local", 1)
    procs = _session(driver.proc.pid)
    reapers = [p for p in procs if b"tuner.reaper" in Path(f"/proc/{p}/cmdline").read_bytes()]
    ray_procs = {p: n for p, n in procs.items() if p != driver.proc.pid and p not in reapers}
    sockets = _listening(set(procs))
    public = [(a, n) for a, n in sockets if not LOOPBACK.match(a)]
    raylet = next(p for p, n in ray_procs.items() if n == "raylet")
    environ = Path(f"/proc/{raylet}/environ").read_bytes().split(b"\0")

    os.kill(driver.proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
    killed = time.time()
    driver.proc.wait()
    # until the reaper has done its work (without one: until Ray's processes end by themselves)
    watched = reapers or list(ray_procs)
    deadline = time.time() + 150
    while time.time() < deadline and any(_alive(p) for p in watched):
        time.sleep(0.1)
    ended = time.time() - killed
    left = {p: n for p, n in ray_procs.items() if _alive(p)}
    _figure(
        "local-ray",
        sockets=sorted(sockets),
        beyond_loopback=len(public),
        ray_processes=len(ray_procs),
        token_auth=b"RAY_AUTH_MODE=token" in environ,
        reaper=len(reapers),
        watched_processes_ended_after_kill_s=f"{ended:.1f}",
        left_then=len(left),
    )
    assert sockets, procs
    assert not public, f"listening beyond loopback: {public}"
    assert b"RAY_AUTH_MODE=token" in environ
    assert not (home / ".ray" / "auth_token").exists(), "no token written to disk"
    assert len(reapers) == 1, procs
    assert not _alive(reapers[0]), "the reaper should end once it has cleaned up"
    assert not left, f"processes of the killed run alive when the reaper ended: {left}"


# ------------------------------------------------------------------------------ secrets
def test_expanded_variables_stay_out_of_the_results_folder(tmp_path):
    """Issue 10 item 4 (on disk): ``${VAR}`` references are written as written; only the
    dataset root is recorded resolved."""
    secret = "tok-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:24]
    spec = _toy_spec(
        "secret",
        description="run with token ${H1_SPEC_TOKEN}",
        dataset={"preset": "synthetic", "root": "${H1_DATA_DIR}/synth", "image_size": 16},
    )
    spec["hyperparameters"]["epochs"] = 2
    path = _write_spec(tmp_path, spec)
    results = tmp_path / "results"
    exp = results / "secret"
    data_dir = tmp_path / "data"
    env = _env(tmp_path, H1_SPEC_TOKEN=secret, H1_DATA_DIR=str(data_dir), TUNER_TOY_EPOCH_S="0.05")
    driver = Driver([path, "--results", str(results)], env)
    assert driver.wait() == 0, driver.output
    report = subprocess.run(
        [sys.executable, "-m", "tuner.report", str(exp)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    saved = (exp / "spec.yaml").read_text()
    assert "${H1_SPEC_TOKEN}" in saved
    assert yaml.safe_load(saved)["dataset"]["root"] == f"{data_dir}/synth"
    written = [p for p in exp.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"tuner.pkl", "spec.yaml", "report.html", "report.md"} <= names, names
    leaks = [str(p.relative_to(exp)) for p in written if secret.encode() in p.read_bytes()]
    assert not leaks, f"the expanded value was written to {leaks}"
    for name in ("report.html", "report.md"):
        assert "${H1_SPEC_TOKEN}" in (exp / "report" / name).read_text()
    # --resume expands the references again: without the variable it stops, naming it
    env.pop("H1_SPEC_TOKEN")
    resumed = Driver([path, "--results", str(results), "--resume"], env)
    assert resumed.wait() == 2
    assert "H1_SPEC_TOKEN is not set" in resumed.output, resumed.output
    _figure("secrets", files_checked=len(written), files_with_the_value=len(leaks))


# ---------------------------------------------------------------- lr under a schedule
def test_trial_rows_hold_the_configured_lr_under_a_schedule(tmp_path):
    """Issue 10 item 8, with the real trainable: the trials table's ``lr`` is the one
    configured; the epochs table holds the scheduled rates."""
    spec = {
        "experiment": "cosine",
        "dataset": {
            "preset": "synthetic",
            "root": str(tmp_path / "data"),
            "classes": ["farmland", "water", "forest"],
            "synthetic": {"per_class": 10, "size": 16, "seed": 0},
            "image_size": 16,
        },
        "factors": {"model": "tiny_cnn", "transfer": "scratch", "augmentation": "none"},
        "hyperparameters": {
            "lr": [0.01, 0.003],
            "lr_schedule": "cosine",
            "batch_size": 8,
            "epochs": 3,
        },
        "search": {"algorithm": "grid"},
        "scheduler": {"type": "none"},
    }
    results = tmp_path / "results"
    driver = Driver([_write_spec(tmp_path, spec), "--results", str(results)], _env(tmp_path))
    assert driver.wait() == 0, driver.output
    trials, epochs = _check_tables(results / "cosine", 2)
    assert sorted(trials["lr"]) == [0.003, 0.01]
    for _, trial in trials.iterrows():
        rates = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")["lr"]
        assert rates.iloc[0] == pytest.approx(trial["lr"])
        assert rates.iloc[-1] < trial["lr"], "cosine lowers the rate epoch by epoch"


def test_the_reaper_starts_from_a_checkout_that_is_not_installed(tmp_path):
    """The driver starts ``python -m tuner.reaper`` in :func:`~tuner.tune.session.project_root`:
    with no site-packages at all (``-S``: no installed copy of the project), it imports there
    and, its stdin at EOF, removes the run's folder and exits 0."""
    from tuner.tune.session import project_root

    folder = tmp_path / "ray-temp"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-S", "-m", "tuner.reaper", "run-id", str(folder)],
        cwd=project_root(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not folder.exists()
