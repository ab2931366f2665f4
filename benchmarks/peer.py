"""tuner against the plain Ray Tune script, back to back on the same split, space and budget.

The peer (``benchmarks/plain_tune.py``) is the search as Ray's documentation writes it: a
function trainable over torchvision image loading and a ``DataLoader``, ``OptunaSearch`` +
``ASHAScheduler``, Tune's default loggers and a checkpoint every epoch. Both searches get:

* the same images and split: tuner runs first and writes ``manifest.csv``; the peer reads it;
* the same initial weights: a resnet18 pretrained here, with plain torch, on a source domain
  of procedural aerial scenes (the project's generator, other classes than the target), since
  ImageNet weights cannot be downloaded on this machine;
* the same space (transfer frozen / finetune x augmentation none / aerial x lr log-uniform x
  batch size), Optuna TPE with the same seed, ASHA (grace, eta, max epochs), the same number
  of trials, the same trials at once on the same CPUs.

Each search's wall time is that of its whole process (Ray start, data preparation, search,
final test). Each reports its best trial (the best validation accuracy among the trials that
ran the whole budget) and that trial's test accuracy at its best-validation checkpoint. The
script prints ``wall ratio: N.NNx`` (peer / tuner), both accuracies and the binomial standard
error of the test accuracy, sqrt(p (1 - p) / n_test).

    python benchmarks/peer.py [--root ../shared/datasets/NWPU-RESISC12] [--preset nwpu_resisc45]
    python benchmarks/peer.py --quick          # a tiny form (2 trials, 1 epoch): it runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision
import yaml

from trainables.classify import uses_bf16

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "NWPU-RESISC12"
#: Source-domain classes of the procedural generator for the pretrained weights.
SOURCE_CLASSES = [
    "meadow",
    "forest",
    "water",
    "desert",
    "industrial",
    "intersection",
    "parking",
    "runway",
]


def source_weights(work: Path, size: int, epochs: int, per_class: int) -> Path:
    """A resnet18 trained with plain torch on generated source scenes; its state_dict file."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from trainables.data.synthetic import generate

    out = work / "source-resnet18.pt"
    if out.is_file():
        return out
    root = generate(work / "source", classes=SOURCE_CLASSES, per_class=per_class, size=size)
    tf = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(ImageFolder(root, tf), batch_size=32, shuffle=True)
    model = torchvision.models.resnet18(num_classes=len(SOURCE_CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.save(model.state_dict(), out)
    return out


def tuner_spec(args: argparse.Namespace, weights: Path) -> dict:
    """The search as a tuner spec."""
    return {
        "experiment": "peer",
        "description": "benchmarks/peer.py: the same search as benchmarks/plain_tune.py",
        "dataset": {"preset": args.preset, "root": str(args.root), "image_size": args.image_size},
        "factors": {
            "model": "resnet18",
            "weights": str(weights),
            "transfer": ["frozen", "finetune"],
            "augmentation": ["none", "aerial"],
        },
        "hyperparameters": {
            "lr": {"loguniform": list(args.lr)},
            "batch_size": list(args.batch_sizes),
            "epochs": args.max_epochs,
        },
        "search": {
            "algorithm": "optuna",
            "num_samples": args.trials,
            "max_concurrent": args.concurrent,
            "seeds": 1,
            "sampler_seed": args.seed,
            "metric": "val_acc",
        },
        "scheduler": {"type": "asha", "grace_period": args.grace, "reduction_factor": args.eta},
        "resources": {"cpu": 1, "gpu": 0},
    }


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.time()
    with log.open("w") as out:
        code = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        raise SystemExit(f"{cmd[1:4]} exited {code}; see {log}:\n{log.read_text()[-3000:]}")
    return time.time() - t0


def tuner_best(exp: Path, max_epochs: int) -> dict:
    """tuner's best trial: best validation among the trials that ran the whole budget."""
    trials = pd.read_parquet(exp / "trials")
    full = trials[trials["epochs_run"] == max_epochs]
    best = (full if len(full) else trials).sort_values("best_val_acc", ascending=False).iloc[0]
    return {
        "config": {k: best[k] for k in ("transfer", "augmentation", "lr", "batch_size")},
        "val_acc": float(best["best_val_acc"]),
        "test_acc": float(best["test_acc"]),
        "trials": len(trials),
        "completed": len(full),
        "epochs": int(trials["epochs_run"].sum()),
    }


def _describe(config: dict) -> str:
    return (
        f"{config['transfer']} {config['augmentation']} lr {config['lr']:.2e} "
        f"batch {config['batch_size']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", default="nwpu_resisc45")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--grace", type=int, default=3)
    p.add_argument("--eta", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=2, help="trials at once = local CPUs")
    p.add_argument("--seed", type=int, default=0, help="Optuna TPE sampler seed")
    p.add_argument("--lr", type=float, nargs=2, default=(1e-4, 1e-2))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=(32, 64))
    p.add_argument("--source-epochs", type=int, default=6)
    p.add_argument("--source-per-class", type=int, default=150)
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="2 trials x 1 epoch: checks it runs")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.max_epochs, args.grace, args.eta = 2, 1, 1, 2
        args.source_epochs, args.source_per_class = 1, 8
    if not args.root.is_dir():
        raise SystemExit(f"--root {args.root}: no such folder")
    args.root = args.root.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="tuner-peer-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUNER_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}

    weights = source_weights(work, args.image_size, args.source_epochs, args.source_per_class)
    spec = work / "peer.yaml"
    spec.write_text(yaml.safe_dump(tuner_spec(args, weights), sort_keys=False))
    results = work / "results"
    cpus = ["--num-cpus", str(args.concurrent)]
    tuner_s = _timed(
        [
            sys.executable,
            "-m",
            "tuner.run",
            str(spec),
            "--results",
            str(results),
            "--laptop",
            *cpus,
        ],
        env,
        work / "tuner.log",
    )
    ours = tuner_best(results / "peer", args.max_epochs)
    peer_json = work / "peer.json"
    peer_s = _timed(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "plain_tune.py"),
            "--manifest",
            str(results / "peer" / "manifest.csv"),
            "--root",
            str(args.root),
            "--weights",
            str(weights),
            "--out",
            str(peer_json),
            "--storage",
            str(work / "ray_results"),
            "--image-size",
            str(args.image_size),
            "--trials",
            str(args.trials),
            "--max-epochs",
            str(args.max_epochs),
            "--grace",
            str(args.grace),
            "--eta",
            str(args.eta),
            "--concurrent",
            str(args.concurrent),
            "--seed",
            str(args.seed),
            "--lr",
            *map(str, args.lr),
            "--batch-sizes",
            *map(str, args.batch_sizes),
        ],  # fmt: skip
        # Ray Tune's defaults: none of the TUNE_* settings tuner makes for itself
        {k: v for k, v in env.items() if not k.startswith("TUNE_")},
        work / "peer.log",
    )
    peer = json.loads(peer_json.read_text())
    manifest = pd.read_csv(results / "peer" / "manifest.csv")
    counts = manifest["split"].value_counts()
    n_test = int(counts.get("test", 0))
    se = math.sqrt(peer["test_acc"] * (1 - peer["test_acc"]) / n_test)
    print(f"data: {args.root} ({args.preset}) at {args.image_size} px; work folder {work}")
    print(
        f"split (tuner's manifest, read by both): train {counts.get('train', 0)} / "
        f"val {counts.get('val', 0)} / test {n_test}"
    )
    print(
        f"search: {args.trials} TPE trials (seed {args.seed}), ASHA grace {args.grace} eta "
        f"{args.eta} max {args.max_epochs} epochs, {args.concurrent} at once"
    )
    bf16 = uses_bf16("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(
        f"tuner's defaults here: precision auto = {'bf16 autocast' if bf16 else 'float32'}, "
        "idle cores shared; the peer: float32, one thread per trial"
    )
    for name, wall, r in (("tuner", tuner_s, ours), ("peer ", peer_s, peer)):
        print(
            f"{name}: wall {wall:6.1f} s, {r['epochs']} epochs over {r['trials']} trials "
            f"({r['completed']} ran the whole budget); best {_describe(r['config'])}: "
            f"val {r['val_acc']:.4f} test {r['test_acc']:.4f}"
        )
    gap = ours["test_acc"] - peer["test_acc"]
    print(f"wall ratio: {peer_s / tuner_s:.2f}x")
    print(
        f"test accuracy, tuner - peer: {100 * gap:+.2f} points; binomial standard error "
        f"{100 * se:.2f} points ({'within' if gap >= -se else 'below by more than'} one SE)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
