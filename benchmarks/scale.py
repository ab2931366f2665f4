"""Scale: a search's cost per trial as the number of trials grows, tuner and a plain Tune script.

The same toy search (``trainables.toy``, ``TUNER_TOY_EPOCH_S`` seconds per epoch, Optuna TPE
over lr and batch size, ASHA grace 1 eta 3, ``--epochs`` epochs, ``--concurrent`` trials at
once, a local Ray declaring ``--num-cpus`` CPUs) runs at each of ``--sizes`` trials, each
time as a fresh ``python -m tuner.run`` process, then as the peer: the plain ``tune.Tuner``
script written as Ray's documentation shows (``OptunaSearch`` behind a
``ConcurrencyLimiter``, ``ASHAScheduler``, a checkpoint reported every epoch, Tune's default
loggers and snapshot period). Per size and per side it prints:

* ``wall/trial``: the wall time of the whole process (Ray start included) over the trials;
* ``bytes/trial``: bytes the process tree wrote to storage over the trials: the
  ``write_bytes`` of ``/proc/<pid>/io`` of the driver and every descendant (Ray's GCS,
  raylet, workers), sampled every ``--poll-s`` seconds; a process's writes after its last
  sample before it exits are missed (Ray's processes live for the whole run);
* ``results``: the size of the results folder at the end (what stays, not what was written);
* ``RSS``: the driver's peak resident memory (``VmHWM``);
* ``rank``: for tuner, ``tuner.rank``'s run time on the folder, in this process.

Then ``time per trial growth: N.NNx`` and ``bytes per trial growth: N.NNx`` (the last size's
figure over the first's; the targets are <= 1.3x from 250 to 4,000 trials) for both sides;
the TPE sampler's time per suggestion in studies of ``--tpe-sizes`` finished trials, with
Optuna's defaults and with the options tuner uses (:func:`tuner.tune.scale.tpe_sampler`); and
``tuner.rank`` on a synthetic folder of ``--rank-trials`` trials (default 10,000; target
<= 5 s), per-trial files and compacted (:mod:`tuner.compact`).

    python benchmarks/scale.py                       # 250, 1,000, 4,000 trials (long)
    python benchmarks/scale.py --sizes 250 1000      # what fits
    python benchmarks/scale.py --peer-sizes 250 1000 # the peer at the smaller sizes only
    python benchmarks/scale.py --quick               # a tiny form: it runs
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

PEER = textwrap.dedent(
    """
    import shutil, sys, tempfile
    from pathlib import Path

    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainables import toy

    def trainable(config):
        ckpt = tune.get_checkpoint()
        with tempfile.TemporaryDirectory() as work:
            if ckpt is not None:
                with ckpt.as_directory() as src:
                    shutil.copytree(src, work, dirs_exist_ok=True)
            toy.run_trial(
                config,
                report=lambda m, d: tune.report(
                    m, checkpoint=tune.Checkpoint.from_directory(str(d))
                ),
                checkpoint_dir=Path(work),
                resume=ckpt is not None,
            )

    storage, trials, epochs, concurrent, cpus = sys.argv[1], *map(int, sys.argv[2:6])
    ray.init(address="local", num_cpus=cpus, include_dashboard=False,
             object_store_memory=256 * 1024**2, log_to_driver=False)
    space = {"lr": tune.loguniform(1e-5, 1e-1), "batch_size": tune.choice([16, 32, 64, 128]),
             "epochs": epochs, "seed": 0}
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=1,
                                    reduction_factor=3),
            num_samples=trials,
        ),
        run_config=tune.RunConfig(storage_path=storage, name="peer", verbose=0),
    )
    tuner.fit()
    """
)


@dataclass
class Run:
    """What one search process cost."""

    trials: int
    wall_s: float
    written: int
    kept: int
    rss: int
    rank_s: float | None = None
    #: Bytes written per kind of process (the driver, Ray's processes by name).
    writers: dict[str, int] | None = None

    @property
    def wall_per_trial(self) -> float:
        return self.wall_s / self.trials

    @property
    def bytes_per_trial(self) -> float:
        return self.written / self.trials


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it, from ``/proc/*/stat``."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def _io(pid: int) -> tuple[str, str, int] | None:
    """(start time, name, write_bytes) of a process, or ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return start, name, int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def measure(cmd: list[str], env: dict, folder: Path, trials: int, poll_s: float) -> Run:
    """Run ``cmd`` to its end, sampling its process tree's writes and the driver's RSS."""
    written: dict[tuple[int, str], tuple[str, int]] = {}
    rss = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out: list[bytes] = []
    import threading

    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            got = _io(pid)
            if got is not None:
                name = "driver" if pid == proc.pid else got[1]
                written[(pid, got[0])] = (name, got[2])
        rss = max(rss, _peak_rss(proc.pid))
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        tail = b"".join(out).decode(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    writers: dict[str, int] = {}
    for name, n in written.values():
        writers[name] = writers.get(name, 0) + n
    total = sum(writers.values())
    return Run(trials, wall, total, _folder_bytes(folder), rss, writers=writers)


def toy_spec(trials: int, epochs: int, concurrent: int) -> dict:
    """The toy search of the benchmark as a tuner spec."""
    return {
        "experiment": "scale",
        "trainable": "toy",
        "hyperparameters": {
            "lr": {"loguniform": [1e-5, 1e-1]},
            "batch_size": [16, 32, 64, 128],
            "epochs": epochs,
            "seed": 0,
        },
        "search": {"algorithm": "optuna", "num_samples": trials, "max_concurrent": concurrent},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
        "resources": {"cpu": 1},
    }


def rank_time(exp_dir: Path) -> float:
    """Seconds ``tuner.rank`` takes on a folder (load, rank, print), in this process."""
    from tuner import rank

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = rank.main([str(exp_dir)])
    if status != 0:
        raise RuntimeError(f"tuner.rank {exp_dir} exited {status}")
    return time.perf_counter() - t0


def run_ours(work: Path, args, trials: int, env: dict) -> Run:
    spec = work / f"ours-{trials}.yaml"
    spec.write_text(yaml.safe_dump(toy_spec(trials, args.epochs, args.concurrent)))
    results = work / f"ours-{trials}"
    cmd = [sys.executable, "-m", "tuner.run", str(spec), "--results", str(results)]
    cmd += ["--num-cpus", str(args.num_cpus), "--status-every", "60", "--top", "3"]
    run = measure(cmd, env, results, trials, args.poll_s)
    run.rank_s = rank_time(results / "scale")
    return run


def run_peer(work: Path, args, trials: int, env: dict) -> Run:
    script = work / "peer.py"
    script.write_text(PEER)
    storage = work / f"peer-{trials}"
    cmd = [sys.executable, str(script), str(storage), str(trials), str(args.epochs)]
    cmd += [str(args.concurrent), str(args.num_cpus)]
    return measure(cmd, env, storage, trials, args.poll_s)


def tpe_times(sizes: list[int], samples: int) -> dict[int, tuple[float, float]]:
    """Seconds per TPE suggestion in a study of n finished toy trials: (Optuna's defaults,
    tuner's options), each the mean over ``samples`` suggestions."""
    import optuna

    from trainables.toy import score
    from tuner.tune.scale import tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for n in sizes:
        row = []
        for sampler in (optuna.samplers.TPESampler(seed=0), tpe_sampler(0)):
            study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.RandomSampler(0)
            )
            study.optimize(lambda t: _toy_objective(t, score), n_trials=n)
            study.sampler = sampler
            t0 = time.perf_counter()
            for _ in range(samples):
                trial = study.ask()
                study.tell(trial, _toy_objective(trial, score))
            row.append((time.perf_counter() - t0) / samples)
        out[n] = (row[0], row[1])
    return out


def _toy_objective(trial, score) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    batch = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
    return score(lr, batch, 20, 0)


def synthetic_results(
    root: Path, trials: int, *, seed: int = 0, segment_every: int | None = None
) -> Path:
    """A results folder of ``trials`` toy-like trials as a search writes it (one trials file
    and one epochs file per trial); returns the experiment folder.

    ASHA-like epochs run (1, 3, 9 or 20: grace 1, eta 3), every fifth trial stopped at its
    first epoch, one in fifty failed; the figures come from :func:`trainables.toy.score`.
    With ``segment_every``, a segment is compacted after every that many trials, as a
    search's driver does (:class:`tuner.tune.callbacks.Segments`), timed so that the folder
    ends with the most per-trial files a search leaves (``segment_every - 1``).
    """
    import random
    from datetime import datetime, timezone

    from trainables.toy import score
    from tuner.compact import compact
    from tuner.results import ResultsStore

    rng = random.Random(seed)
    store = ResultsStore(root, "scale")
    every = segment_every or trials + 1
    segments = set(range(trials - every + 1, 0, -every))
    now = datetime.now(timezone.utc)
    for i in range(trials):
        trial_id = f"{seed:05x}_{i:05d}"
        lr, batch = 10 ** rng.uniform(-5, -1), rng.choice([16, 32, 64, 128])
        run = rng.choice([1, 1, 1, 1, 3, 3, 9, 20])
        curve = [score(lr, batch, e, 0) for e in range(1, run + 1)]
        best = max(range(run), key=curve.__getitem__)
        status = "completed" if run == 20 else "early-stopped"
        if i % 50 == 49:
            status, run, curve = "error", 0, []
        store.write_epochs(
            trial_id,
            [
                {"epoch": e + 1, "val_acc": a, "train_acc": a, "lr": lr, "time": now}
                for e, a in enumerate(curve)
            ],
        )
        store.write_trial(
            {
                "trial_id": trial_id,
                "status": status,
                "error": "ValueError: toy: lr diverges" if status == "error" else None,
                "dataset": "toy",
                "lr": lr,
                "batch_size": batch,
                "epochs": 20,
                "seed": 0,
                "epochs_run": run,
                "best_epoch": best + 1 if curve else None,
                "best_val_acc": curve[best] if curve else None,
                "test_acc": curve[-1] if status == "completed" else None,
                "start_time": now,
                "end_time": now,
            }
        )
        if i + 1 in segments:
            compact(store.dir, merge=False)
    return Path(store.dir)


def synthetic_rank(work: Path, trials: int, segment_every: int) -> dict[str, float]:
    """``tuner.rank`` on ``trials`` synthetic trials, in seconds: from per-trial files
    (``per_file``), from the folder a running search leaves (a segment every
    ``segment_every`` trials, ``segmented``), the final compaction (``compaction``), and
    compacted (``compacted``)."""
    from tuner.compact import compact

    exp = synthetic_results(work / "synthetic", trials)
    out = {"per_file": rank_time(exp)}
    t0 = time.perf_counter()
    compact(str(exp))
    out["compaction"] = time.perf_counter() - t0
    out["compacted"] = rank_time(exp)
    live = synthetic_results(work / "segmented", trials, segment_every=segment_every)
    out["segmented"] = rank_time(live)
    return out


def _size(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n:.0f} B"


def _line(label: str, run: Run) -> str:
    text = (
        f"{label:<6} {run.trials:>6} trials  wall {run.wall_s:7.1f} s  "
        f"wall/trial {run.wall_per_trial:.3f} s  written {_size(run.written):>8}  "
        f"bytes/trial {_size(run.bytes_per_trial):>8}  results {_size(run.kept):>8}  "
        f"driver RSS {_size(run.rss)}"
    )
    text += f"  rank {run.rank_s:.2f} s" if run.rank_s is not None else ""
    top = sorted((run.writers or {}).items(), key=lambda kv: -kv[1])[:4]
    return text + "\n       writers: " + ", ".join(f"{k} {_size(v)}" for k, v in top)


def growth(runs: list[Run]) -> tuple[float, float]:
    """(time per trial, bytes per trial) of the last run over the first."""
    first, last = runs[0], runs[-1]
    return last.wall_per_trial / first.wall_per_trial, last.bytes_per_trial / first.bytes_per_trial


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--epoch-s", type=float, default=0.02)
    p.add_argument("--concurrent", type=int, default=16)
    p.add_argument("--num-cpus", type=int, default=16, help="CPUs the local Ray declares")
    p.add_argument("--rank-trials", type=int, default=10_000)
    p.add_argument("--tpe-samples", type=int, default=20)
    p.add_argument(
        "--tpe-sizes",
        type=int,
        nargs="+",
        default=[250, 1000, 4000],
        help="study sizes of the TPE timing (no search is run for them)",
    )
    p.add_argument("--poll-s", type=float, default=0.5)
    p.add_argument("--no-peer", action="store_true", help="skip the plain Tune script")
    p.add_argument(
        "--peer-sizes",
        type=int,
        nargs="+",
        help="run the plain Tune script at these sizes only (default: every size)",
    )
    p.add_argument("--work", help="folder for the runs (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="a tiny form: 6 and 12 trials")
    p.add_argument(
        "--rank-only", action="store_true", help="only the tuner.rank timing (no search, no TPE)"
    )
    p.add_argument(
        "--peer-only", action="store_true", help="only the plain Tune script (no TPE, no rank)"
    )
    args = p.parse_args(argv)
    if args.rank_only:
        args.sizes, args.no_peer, args.tpe_sizes = [], True, []
    if args.peer_only:
        args.peer_sizes, args.sizes = args.peer_sizes or args.sizes, []
        args.tpe_sizes, args.rank_trials = [], 0
    if args.quick:
        args.sizes, args.epochs, args.concurrent, args.num_cpus = [6, 12], 4, 2, 2
        args.rank_trials, args.tpe_samples, args.tpe_sizes = 200, 2, [6, 12]
    env = {
        **os.environ,
        "TUNER_TOY_EPOCH_S": str(args.epoch_s),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    sys.path.insert(0, str(ROOT))
    print(
        f"toy search: TPE, ASHA grace 1 eta 3, {args.epochs} epochs x {args.epoch_s} s, "
        f"{args.concurrent} at once, local Ray of {args.num_cpus} CPUs; bytes: write_bytes "
        "of /proc/<pid>/io of the driver and its descendants",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        work = Path(args.work or stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        ours, peer = [], []
        peer_sizes = [] if args.no_peer else (args.peer_sizes or args.sizes)
        for n in sorted({*args.sizes, *peer_sizes}):
            if n in args.sizes:
                ours.append(run_ours(work, args, n, env))
                print(_line("tuner", ours[-1]), flush=True)
            if n in peer_sizes:
                peer.append(run_peer(work, args, n, env))
                print(_line("peer", peer[-1]), flush=True)
        for label, runs in (("tuner", ours), ("peer", peer)):
            if len(runs) > 1:
                t, b = growth(runs)
                span = f"{runs[0].trials} -> {runs[-1].trials} trials"
                print(f"{label}: time per trial growth: {t:.2f}x ({span})")
                print(f"{label}: bytes per trial growth: {b:.2f}x ({span})")
        for n, (default, ours_s) in tpe_times(args.tpe_sizes, args.tpe_samples).items():
            print(
                f"TPE suggestion in a study of {n} trials: Optuna's defaults "
                f"{default * 1e3:.1f} ms, tuner's options {ours_s * 1e3:.1f} ms"
            )
        from tuner.compact import SEGMENT_TRIALS

        every = SEGMENT_TRIALS if not args.quick else 50
        if not args.rank_trials:
            return 0
        r = synthetic_rank(work, args.rank_trials, every)
        print(
            f"tuner.rank on {args.rank_trials} synthetic trials: per-trial files "
            f"{r['per_file']:.2f} s; during a search (a segment every {every} trials) "
            f"{r['segmented']:.2f} s; compacted (compaction {r['compaction']:.1f} s) "
            f"{r['compacted']:.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
