"""Framework overhead: the same toy trainable through ``tuner.run`` vs a bare ``tune.Tuner``.

Both run the analytic toy trainable (``trainables.toy``, ``TUNER_TOY_EPOCH_S`` seconds per
epoch, a checkpoint every epoch) over the same grid of 16+ trials with the same resources,
each as a fresh process (Ray start-up included in both). The bare script is what a user
would write by hand: a function trainable reporting with checkpoints, no Parquet, no live
view. It runs twice: with Ray's defaults, and with ``reuse_actors=True`` as tuner uses.

    python benchmarks/overhead.py [--trials 16] [--epochs 5] [--epoch-s 0.2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

BARE = textwrap.dedent(
    """
    import sys, tempfile
    from pathlib import Path
    import ray
    from ray import tune
    from trainables import toy

    def trainable(config):
        ckpt = tune.get_checkpoint()
        with tempfile.TemporaryDirectory() as work:
            if ckpt is not None:
                with ckpt.as_directory() as src:
                    import shutil
                    shutil.copytree(src, work, dirs_exist_ok=True)
            toy.run_trial(
                config,
                report=lambda m, d: tune.report(
                    m, checkpoint=tune.Checkpoint.from_directory(str(d))
                ),
                checkpoint_dir=Path(work),
                resume=ckpt is not None,
            )

    ray.init(address="local", num_cpus=int(sys.argv[1]), include_dashboard=False,
             object_store_memory=256 * 1024**2, log_to_driver=False)
    lrs = [float(x) for x in sys.argv[3].split(",")]
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"lr": tune.grid_search(lrs), "epochs": int(sys.argv[4]), "seed": 0},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max",
                                    reuse_actors=sys.argv[5] == "reuse"),
        run_config=tune.RunConfig(storage_path=sys.argv[2], name="bare", verbose=0),
    )
    tuner.fit()
    """
)


def _run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--epoch-s", type=float, default=0.2)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    lrs = [10 ** (-5 + 4 * i / (args.trials - 1)) for i in range(args.trials)]
    env = {**os.environ, "TUNER_TOY_EPOCH_S": str(args.epoch_s)}
    ideal = args.trials * args.epochs * args.epoch_s / args.cpus
    print(
        f"{args.trials} toy trials x {args.epochs} epochs x {args.epoch_s} s, "
        f"{args.cpus} CPUs (1 per trial); ideal {ideal:.1f} s of work"
    )
    times: dict[str, list[float]] = {"tuner.run": [], "bare": [], "bare+reuse": []}
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "experiment": "overhead",
            "trainable": "toy",
            "hyperparameters": {"lr": lrs, "epochs": args.epochs},
            "search": {"algorithm": "grid", "seeds": 1},
            "scheduler": {"type": "none"},
            "resources": {"cpu": 1},
        }
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        script = Path(tmp) / "bare.py"
        script.write_text(BARE)
        for r in range(args.repeats):
            times["tuner.run"].append(
                _run(
                    [
                        sys.executable,
                        "-m",
                        "tuner.run",
                        str(spec_path),
                        "--results",
                        f"{tmp}/results{r}",
                        "--num-cpus",
                        str(args.cpus),
                    ],
                    env,
                )
            )
            lr_arg = ",".join(map(str, lrs))
            for label, reuse in (("bare", "no"), ("bare+reuse", "reuse")):
                times[label].append(
                    _run(
                        [
                            sys.executable,
                            str(script),
                            str(args.cpus),
                            f"{tmp}/{label}{r}",
                            lr_arg,
                            str(args.epochs),
                            reuse,
                        ],
                        env,
                    )
                )
    best = {k: min(v) for k, v in times.items()}
    for k, v in times.items():
        print(
            f"{k:<11} wall {best[k]:6.1f} s (best of {len(v)}: {', '.join(f'{x:.1f}' for x in v)})"
        )
    for label, note in (("bare", "Ray defaults"), ("bare+reuse", "reuse_actors")):
        ratio = best["tuner.run"] / best[label]
        print(f"ratio tuner.run / bare tune.Tuner ({note}): {ratio:.2f}x (target <= 1.10x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
