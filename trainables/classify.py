"""Train and evaluate one configuration, without Ray.

:func:`train` is the whole trial: data, model, optimiser, one checkpoint per epoch, selection
of the best epoch on the validation split, and a single evaluation of that epoch's weights
on the test split. The tuner's Ray trainable calls the same function, passing ``on_epoch``
to report each epoch. ``python -m trainables.classify --root DIR --model resnet18 ...``
runs it from the shell.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import ValidationError

from trainables import checkpoint, optim
from trainables.arithmetic import Arithmetic, cpu_has_bf16_units, uses_bf16
from trainables.batches import SPLITS, Batches, allocated_cpus, epoch_seed, image_batches
from trainables.checkpoint import BEST, CHECKPOINT
from trainables.clihelp import HelpFormatter
from trainables.config import DataConfig, SplitConfig, TrialConfig
from trainables.cpushare import CpuShare
from trainables.data.dataset import PreparedData, prepare
from trainables.data.presets import PRESETS
from trainables.features import FeatureStore, FrozenFeatures, head_threads, weights_identity
from trainables.metrics import detailed, summarize
from trainables.models import Classifier, count_macs, count_parameters, create_model, loss_function

__all__ = [
    "BEST",
    "CHECKPOINT",
    "Trial",
    "allocated_cpus",
    "cpu_has_bf16_units",
    "main",
    "run_trial",
    "train",
    "uses_bf16",
]

EpochCallback = Callable[[dict, Path | None], None]


class Trial:
    """The state of one training run (see :func:`train`): the epoch loop, best-epoch
    selection and the single test look.

    Its parts live where their names say: how it computes in :mod:`trainables.arithmetic`,
    its batches in :mod:`trainables.batches` (stored features: :mod:`trainables.features`),
    its optimiser and schedule in :mod:`trainables.optim`, its checkpoint files in
    :mod:`trainables.checkpoint`.
    """

    def __init__(
        self,
        cfg: TrialConfig,
        data: PreparedData | None = None,
        log=print,
        backbone_once: bool | None = None,
        cpu_share: CpuShare | None = None,
    ):
        """Build data, model, optimiser and schedule.

        Args:
            cfg: The configuration.
            data: Prepared data (default: prepared from ``cfg.data``).
            log: Where per-epoch lines go.
            backbone_once: Train a frozen trial's head on backbone features computed once
                (:mod:`trainables.features`: per split, and per view of the training split
                with augmentation; default: every ``frozen`` trial unless augmentation
                meets ``feature_views: 0``; ``False`` forces a forward pass every epoch,
                for benchmarks and tests).
            cpu_share: Widen this trial's threads to the node's idle CPUs before every
                batch (see :mod:`trainables.cpushare`; CPU trials of a search).
        """
        self.cfg, self.log = cfg, log
        self.cpu_share = cpu_share
        torch.set_num_threads(cfg.num_threads or allocated_cpus())
        self.data = data or prepare(cfg.data, cfg.augmentation, cfg.num_threads)
        self.num_classes = len(self.data.class_names)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        model = create_model(
            cfg.model,
            self.num_classes,
            head=cfg.head,
            transfer=cfg.transfer,
            weights=cfg.weights,
            image_size=cfg.data.image_size,
            mlp_hidden=cfg.mlp_hidden,
            dropout=cfg.dropout,
        )
        self.params, self.trainable_params = count_parameters(model)
        self.macs = count_macs(model, cfg.data.image_size)
        self.arithmetic = Arithmetic(
            cfg.precision, model.normalization, trains_convolutions=cfg.transfer != "frozen"
        )
        self.device = self.arithmetic.device
        self.model: Classifier = self.arithmetic.place(model)
        self.loss_fn = loss_function(cfg.head)
        self.optimizer = optim.optimizer(cfg, self.model)
        self.scheduler = optim.lr_schedule(cfg, self.optimizer)
        self.epoch = 0
        self.history: list[dict] = []
        self.best: dict = {"epoch": 0, "val_acc": -1.0, "val_loss": float("inf")}
        self.best_state: dict | None = None
        self._frozen_copy: dict[str, torch.Tensor] | None = None
        auto = cfg.transfer == "frozen" and (cfg.augmentation == "none" or cfg.feature_views != 0)
        self.backbone_once = auto if backbone_once is None else backbone_once and auto
        self.features: FrozenFeatures | None = None
        self.splits = self._splits()

    # ----------------------------------------------------------------------------- set-up
    def _splits(self) -> dict[str, Batches]:
        """Each split's batches: images, or the frozen backbone's features once computed."""
        update = self.cpu_share.update if self.cpu_share else None
        out = image_batches(self.cfg, self.data, self.device.type == "cuda", update)
        if self.backbone_once:
            self.features = self._frozen_features()
            for split in ("val", "test"):
                out[split].features = self.features.split(split)
            if not self.features.augmented:  # augmented views are fetched epoch by epoch
                out["train"].features = self.features.split("train")
        return out

    def _frozen_features(self) -> FrozenFeatures:
        """The trial's frozen features, shared through the store unless ``feature_store`` is off.

        With ``max_batches`` (a smoke run) only the first ``max_batches`` batches of each
        split are encoded.
        """
        cfg = self.cfg
        mean, std = self.model.normalization
        limit = cfg.max_batches * cfg.batch_size if cfg.max_batches else None
        return FrozenFeatures(
            self._encode,
            self.data,
            {
                "model": cfg.model,
                "weights": weights_identity(cfg.weights),
                "image_size": cfg.data.image_size,
                "preprocessing": f"mean={list(mean)} std={list(std)} {self.device.type} "
                f"{self.arithmetic.dtype_name} {self.arithmetic.layout_name} "
                f"torch {torch.__version__}",
            },
            augmentation=cfg.augmentation,
            seed=cfg.seed,
            views=cfg.epochs if cfg.feature_views is None else cfg.feature_views,
            epochs=cfg.epochs,
            limits=dict.fromkeys(SPLITS, limit),
            store=FeatureStore.under(cfg.data.cache_dir) if cfg.feature_store else None,
            device=self.device,
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone on a uint8 batch (for :class:`FrozenFeatures`)."""
        if self.cpu_share is not None:
            self.cpu_share.update()
        self.model.eval()
        with self.arithmetic.autocast():
            return self.model.backbone(self.arithmetic.input(x)).float()

    # ------------------------------------------------------------------------- the loop
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone_once:
            return self.model.head(x)
        return self.model(self.arithmetic.input(x))

    def _run_epoch(self) -> dict:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, self.epoch))
        torch.manual_seed(epoch_seed(cfg.seed + 1, self.epoch))
        start = time.perf_counter()
        if self.features is not None:
            self.splits["train"].features = self.features.train_view(self.epoch)
        self.model.train()
        # summed on the device: no host sync per step
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        train_start = time.perf_counter()
        with head_threads(self.features is not None, self.device):
            for x, y in self.splits["train"].iterate(gen, cfg.max_batches):
                y = y.to(self.device)
                with self.arithmetic.autocast():
                    out = self._forward(x)
                    loss = self.loss_fn(out.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total_loss += loss.detach() * len(y)
                correct += (out.argmax(1) == y).sum()
                seen += len(y)
            total_loss, correct = total_loss.item(), correct.item()
        train_time = time.perf_counter() - train_start
        lr = self.optimizer.param_groups[-1]["lr"]
        self.scheduler.step()
        self.epoch += 1
        val = self.evaluate("val")
        return {
            "epoch": self.epoch,
            "train_loss": total_loss / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "val_f1": val["f1"],
            "val_kappa": val["kappa"],
            "lr": lr,
            "epoch_time_s": time.perf_counter() - start,
            "images_per_s": seen / max(train_time, 1e-9),
            "threads": torch.get_num_threads(),
            "feature_time_s": self.features.take_pass_s() if self.features else None,
        }

    @torch.no_grad()
    def evaluate(self, split: str, full: bool = False) -> dict:
        """Loss and metrics of the current weights on ``split``."""
        self.model.eval()
        preds, targets, total_loss = [], [], 0.0
        with head_threads(self.features is not None, self.device):
            for x, y in self.splits[split].iterate(None, self.cfg.max_batches):
                y = y.to(self.device)
                with self.arithmetic.autocast():
                    out = self._forward(x).float()
                total_loss += self.loss_fn(out, y).item() * len(y)
                preds.append(out.argmax(1).cpu())
                targets.append(y.cpu())
        p = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
        t = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
        metrics = (detailed if full else summarize)(p, t, self.num_classes)
        metrics["loss"] = total_loss / max(len(t), 1)
        return metrics

    # ---------------------------------------------------------------------- checkpoints
    def _weights_copy(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's weights (the best epoch's, for ``best.pt`` and the test).

        A frozen backbone never changes (no gradient, BatchNorm in eval mode), so its tensors
        are copied once per trial and shared by every later copy: a new best epoch of a
        frozen resnet18 then copies its head, not the 45 MB backbone again.
        """
        frozen = self.cfg.transfer == "frozen"
        if frozen and self._frozen_copy is None:
            self._frozen_copy = {
                k: v.detach().to("cpu", copy=True)
                for k, v in self.model.state_dict().items()
                if k.startswith("backbone.")
            }
        shared = self._frozen_copy if frozen else {}
        return {
            k: shared[k] if k in shared else v.detach().to("cpu", copy=True)
            for k, v in self.model.state_dict().items()
        }

    def save(self, directory: Path) -> None:
        """Write ``checkpoint.pt`` (resumable state) and ``best.pt`` (best weights)."""
        checkpoint.save(self, directory)

    def restore(self, directory: Path) -> None:
        """Continue from a directory written by :meth:`save`."""
        checkpoint.restore(self, directory)

    # ------------------------------------------------------------------------------ run
    def fit(
        self, checkpoint_dir: Path | None = None, on_epoch: EpochCallback | None = None
    ) -> dict:
        """Train the remaining epochs, then test the best-validation weights once."""
        cfg = self.cfg
        train_start = time.perf_counter()
        while self.epoch < cfg.epochs:
            metrics = self._run_epoch()
            if metrics["val_acc"] > self.best["val_acc"] or (
                metrics["val_acc"] == self.best["val_acc"]
                and metrics["val_loss"] < self.best["val_loss"]
            ):
                self.best = {k: metrics[k] for k in ("epoch", "val_acc", "val_loss")}
                self.best.update(val_f1=metrics["val_f1"], val_kappa=metrics["val_kappa"])
                self.best_state = self._weights_copy()
            metrics["best_epoch"], metrics["best_val_acc"] = (
                self.best["epoch"],
                self.best["val_acc"],
            )
            self.history.append(metrics)
            self.log(_format_epoch(metrics, cfg.epochs))
            final = self.epoch >= cfg.epochs
            if final:
                metrics.update(self.test())
                metrics["train_time_s"] = sum(m["epoch_time_s"] for m in self.history)
            if checkpoint_dir is not None:
                self.save(checkpoint_dir)
            if on_epoch is not None:
                on_epoch(metrics, checkpoint_dir)
        summary = self.summary()
        summary["wall_time_s"] = time.perf_counter() - train_start
        return summary

    def test(self) -> dict:
        """Evaluate the best-validation weights on the test split (the only test look)."""
        if self.best_state is not None:
            current = self._weights_copy()
            self.model.load_state_dict(self.best_state)
        result = self.evaluate("test", full=True)
        if self.best_state is not None:
            self.model.load_state_dict(current)
        return {f"test_{k}": v for k, v in result.items()}

    def summary(self) -> dict:
        """Final figures of the trial (best epoch, test metrics, cost)."""
        last = self.history[-1] if self.history else {}
        out = {
            "epochs_run": self.epoch,
            "best_epoch": self.best["epoch"],
            "best_val_acc": self.best["val_acc"],
            "best_val_f1": self.best.get("val_f1"),
            "best_val_kappa": self.best.get("val_kappa"),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "split_hash": self.data.split_hash,
            "class_names": list(self.data.class_names),
            "train_time_s": sum(m["epoch_time_s"] for m in self.history),
            "images_per_s": (
                sum(m["images_per_s"] for m in self.history) / len(self.history)
                if self.history
                else None
            ),
        }
        out.update({k: v for k, v in last.items() if k.startswith("test_")})
        return out


def _format_epoch(m: dict, epochs: int) -> str:
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}"
        f" | val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} f1 {m['val_f1']:.3f}"
        f" kappa {m['val_kappa']:.3f} | {m['epoch_time_s']:.1f}s {m['images_per_s']:.0f} img/s"
    )


def train(
    cfg: TrialConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    data: PreparedData | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train one configuration and return its summary.

    Args:
        cfg: The configuration.
        checkpoint_dir: Where to write ``checkpoint.pt`` / ``best.pt`` after every epoch.
        resume: A directory written earlier; training continues from its last epoch and
            reproduces the uninterrupted run.
        on_epoch: Called after every epoch with the metrics (the last epoch's include the
            ``test_*`` figures) and the checkpoint directory.
        data: Already prepared data (default: prepared from ``cfg.data``).
        log: Where the per-epoch lines go.
    """
    trial = Trial(cfg, data, log)
    if resume is not None and (Path(resume) / CHECKPOINT).is_file():
        trial.restore(Path(resume))
        log(f"resumed from {resume} after epoch {trial.epoch}")
    return trial.fit(Path(checkpoint_dir) if checkpoint_dir else None, on_epoch)


ReportFn = Callable[[dict, Path], None]


def run_trial(
    params: dict,
    *,
    data: DataConfig,
    report: ReportFn,
    checkpoint_dir: Path,
    resume: bool,
    num_threads: int | None = None,
    pretrained: dict[str, str] | None = None,
    max_batches: int | None = None,
    cpu_pool: float | None = None,
) -> dict:
    """The search's entry point: one trial from a flat parameter dict.

    Every epoch is passed to ``report`` with the trial's fixed figures (parameter counts,
    MACs, split hash, class names) so that early-stopped trials carry them too.

    Args:
        params: TrialConfig fields (``weights: pretrain`` resolves through ``pretrained``).
        data: The dataset.
        report: Called with (metrics, checkpoint directory) after every epoch.
        checkpoint_dir: Where checkpoints are written; with ``resume`` also read.
        resume: Continue from ``checkpoint_dir``.
        num_threads: CPU threads for this trial.
        pretrained: Model name -> checkpoint of the spec's pretraining stage.
        max_batches: Smoke-size switch (batches per split per epoch).
        cpu_pool: CPUs of this node the search may use: a CPU trial then also uses those
            no other trial does (:mod:`trainables.cpushare`); ``None`` keeps its request.
    """
    params = {k: v for k, v in params.items() if v is not None}
    if params.get("weights") == "pretrain":
        params["weights"] = (pretrained or {})[params["model"]]
    cfg = TrialConfig(data=data, num_threads=num_threads, max_batches=max_batches, **params)
    share = None
    if cpu_pool and not torch.cuda.is_available():
        share = CpuShare(own=num_threads or allocated_cpus(), pool=int(cpu_pool))
    try:
        trial = Trial(cfg, log=lambda _: None, cpu_share=share)
        fixed = {
            "params": trial.params,
            "trainable_params": trial.trainable_params,
            "macs": trial.macs,
            "split_hash": trial.data.split_hash,
            "class_names": list(trial.data.class_names),
        }
        if resume and (checkpoint_dir / CHECKPOINT).is_file():
            trial.restore(checkpoint_dir)
        return trial.fit(checkpoint_dir, lambda m, d: report({**fixed, **m}, d))
    finally:
        if share is not None:
            share.close()


def _flag(annotation) -> tuple[type, list | None]:
    """``(type, choices)`` of a command-line flag for a config field's annotation."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = args[0] if args else annotation
    return (kind if kind in (int, float, str) else str), None


def build_parser() -> argparse.ArgumentParser:
    """The command line: the dataset's flags, then one flag per :class:`TrialConfig` field.

    Each field's flag takes its help text from the field's ``description`` and its type,
    default and choices from the field itself, so the config and the CLI cannot disagree.
    """
    parser = argparse.ArgumentParser(
        prog="python -m trainables.classify", description=__doc__, formatter_class=HelpFormatter
    )
    data = DataConfig.model_fields
    parser.add_argument("--root", required=True, help=data["root"].description)
    parser.add_argument(
        "--preset", default=data["preset"].default, choices=list(PRESETS), help="folder layout"
    )
    parser.add_argument("--classes", nargs="+", help=data["classes"].description)
    parser.add_argument(
        "--image-size", type=int, default=data["image_size"].default, help="input side in pixels"
    )
    split = SplitConfig()
    parser.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=(split.train, split.val, split.test),
        metavar=("TRAIN", "VAL", "TEST"),
        help="train / val / test fractions",
    )
    parser.add_argument("--split-seed", type=int, default=split.seed, help="seed of the split")
    parser.add_argument("--cache-dir", help=data["cache_dir"].description)
    parser.add_argument(
        "--checkpoint-dir",
        help="where checkpoint.pt and best.pt are written after every epoch (default: none)",
    )
    parser.add_argument("--resume", help="checkpoint directory to continue from")
    for name, field in TrialConfig.model_fields.items():
        if name == "data":
            continue
        kind, choices = _flag(field.annotation)
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            choices=choices,
            default=field.default,
            help=field.description,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m trainables.classify``: train one configuration and print its epochs."""
    args = vars(build_parser().parse_args(argv))
    try:
        data_cfg = DataConfig(
            preset=args.pop("preset"),
            root=args.pop("root"),
            classes=args.pop("classes"),
            image_size=args.pop("image_size"),
            split=SplitConfig(
                **dict(zip(("train", "val", "test"), args.pop("split"), strict=True)),
                seed=args.pop("split_seed"),
            ),
            cache_dir=args.pop("cache_dir"),
        )
        ckpt, resume = args.pop("checkpoint_dir"), args.pop("resume")
        cfg = TrialConfig(data=data_cfg, **{k: v for k, v in args.items() if v is not None})
    except ValidationError as err:
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["loc"]:
                flag = "--" + str(e["loc"][-1]).replace("_", "-")
                flag = "--split" if flag in ("--train", "--val", "--test") else flag
                msg = f"{flag}: {msg} (got {e['input']!r})"
            print(f"error: {msg}", file=sys.stderr)
        return 2
    summary = train(cfg, checkpoint_dir=ckpt, resume=resume)
    print("\nsummary:")
    for key in (
        "best_epoch",
        "best_val_acc",
        "test_acc",
        "test_f1",
        "test_kappa",
        "params",
        "trainable_params",
        "macs",
        "train_time_s",
        "split_hash",
    ):
        value = summary.get(key)
        print(f"  {key:<17} {value:.4f}" if isinstance(value, float) else f"  {key:<17} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
