"""The peer: the same search written the way Ray Tune's documentation shows, no tuner code.

What a user would write instead of tuner: a function trainable over torchvision's image
loading, transforms and ``DataLoader``; ``tune.Tuner`` with ``OptunaSearch`` (TPE) behind a
``ConcurrencyLimiter`` and an ``ASHAScheduler``; a checkpoint reported every epoch, Tune's
default loggers; after the search, the best checkpoint of the best trial is evaluated on the
test split. Only torch, torchvision, ray, optuna and pandas are imported: nothing of this
project, so it measures the plain way. ``benchmarks/peer.py`` runs it next to tuner on the
same split (tuner's ``manifest.csv``), the same initial weights, search space and budget.

    python benchmarks/plain_tune.py --manifest results/peer/manifest.csv --root DATA \\
        --weights source.pt --out peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision
from ray import tune
from ray.tune import Checkpoint
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets.folder import default_loader

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ManifestImages(Dataset):
    """The images of one split of a manifest (file, label, split), read with PIL per access."""

    def __init__(self, root: str, manifest: str, split: str, transform) -> None:
        rows = pd.read_csv(manifest)
        rows = rows[rows["split"] == split]
        self.files = [os.path.join(root, f) for f in rows["file"]]
        self.labels = rows["label"].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(default_loader(self.files[i])), self.labels[i]


class RandomRot90:
    """A rotation by 0, 90, 180 or 270 degrees."""

    def __call__(self, img):
        return img.rotate(90 * int(torch.randint(4, ())))


def make_transforms(augmentation: str, size: int):
    """(train, eval) transforms; evaluation resizes the whole image."""
    to_tensor = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    resize = transforms.Resize((size, size))
    if augmentation == "aerial":
        train = [
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            RandomRot90(),
        ]
    else:
        train = [resize]
    return transforms.Compose(train + to_tensor), transforms.Compose([resize, *to_tensor])


def build_model(num_classes: int, weights: str, transfer: str) -> torch.nn.Module:
    """resnet18 with the source weights (head skipped); frozen: only the new head trains."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    if transfer == "frozen":
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    return model


def evaluate(model, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def train_fn(config, data=None):
    """The function trainable: train, validate, checkpoint every epoch."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_tf, eval_tf = make_transforms(config["augmentation"], data["size"])
    train_set = ManifestImages(data["root"], data["manifest"], "train", train_tf)
    val_set = ManifestImages(data["root"], data["manifest"], "val", eval_tf)
    train_loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True)
    val_loader = DataLoader(val_set, batch_size=128)
    model = build_model(data["num_classes"], data["weights"], config["transfer"])
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=config["lr"]
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(data["epochs"]):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        val_acc = evaluate(model, val_loader)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(model.state_dict(), os.path.join(tmp, "model.pt"))
            tune.report(
                {"val_acc": val_acc, "epoch": epoch + 1},
                checkpoint=Checkpoint.from_directory(tmp),
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--storage", default=None, help="Tune's storage_path (default ~/ray_results)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--grace", type=int, default=3)
    p.add_argument("--eta", type=int, default=2)
    p.add_argument("--concurrent", type=int, default=2, help="trials at once (= local CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, nargs=2, default=(1e-4, 1e-2))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=(32, 64))
    args = p.parse_args(argv)
    t0 = time.time()
    manifest = pd.read_csv(args.manifest)
    data = {
        "root": args.root,
        "manifest": str(Path(args.manifest).resolve()),
        "weights": str(Path(args.weights).resolve()),
        "size": args.image_size,
        "epochs": args.max_epochs,
        "num_classes": int(manifest["label"].max()) + 1,
    }
    space = {
        "transfer": tune.choice(["frozen", "finetune"]),
        "augmentation": tune.choice(["none", "aerial"]),
        "lr": tune.loguniform(*args.lr),
        "batch_size": tune.choice(list(args.batch_sizes)),
    }
    import optuna
    import ray

    ray.init(address="local", num_cpus=args.concurrent)  # a fresh local Ray, as tuner starts
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=args.seed))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_fn, data=data), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=args.concurrent),
            scheduler=ASHAScheduler(
                time_attr="epoch",
                max_t=args.max_epochs,
                grace_period=args.grace,
                reduction_factor=args.eta,
            ),
            num_samples=args.trials,
        ),
        run_config=tune.RunConfig(
            storage_path=args.storage,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_acc", checkpoint_score_order="max"
            ),
        ),
    )
    results = tuner.fit()
    # The best trial among those that ran the whole budget (ASHA's survivors), as tuner ranks.
    full = [r for r in results if r.metrics.get("epoch") == args.max_epochs]
    best = max(full or list(results), key=lambda r: r.metrics_dataframe["val_acc"].max())
    checkpoint = best.get_best_checkpoint("val_acc", "max")
    model = build_model(data["num_classes"], data["weights"], best.config["transfer"])
    with checkpoint.as_directory() as folder:
        model.load_state_dict(torch.load(os.path.join(folder, "model.pt"), weights_only=True))
    _, eval_tf = make_transforms("none", args.image_size)
    test_set = ManifestImages(data["root"], data["manifest"], "test", eval_tf)
    test_acc = evaluate(model, DataLoader(test_set, batch_size=128))
    out = {
        "config": best.config,
        "val_acc": float(best.metrics_dataframe["val_acc"].max()),
        "test_acc": test_acc,
        "n_test": len(test_set),
        "trials": len(results),
        "completed": len(full),
        "epochs": int(sum(r.metrics.get("epoch", 0) for r in results)),
        "search_s": time.time() - t0,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
