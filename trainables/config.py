"""Validated configuration of one trial: the dataset and the training settings.

These pydantic models forbid unknown keys; the tuner's spec embeds :class:`DataConfig`
as its ``dataset`` section and builds one :class:`TrialConfig` per trial.

The choices a trial takes are declared here once, as ``Literal`` aliases that validation,
the CLIs, the model factory and the reports all import: :data:`Transfer`, :data:`Head`,
:data:`Optimizer`, :data:`LrSchedule` (and :data:`~trainables.augment_presets.Augmentation`
next to its table). So is the rule that ties ``weights`` to ``transfer``
(:func:`transfer_problem`). The protocols behind the defaults are the two papers cited in
:mod:`trainables.papers`.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.augment_presets import Augmentation
from trainables.data.presets import PRESETS, close_matches

#: How a model starts and what trains: ``scratch`` (random init, no weights), ``frozen``
#: (pretrained backbone fixed, BatchNorm statistics too; only the head trains) or
#: ``finetune`` (pretrained, everything trains).
Transfer = Literal["scratch", "frozen", "finetune"]
TRANSFERS: tuple[Transfer, ...] = typing.get_args(Transfer)
SCRATCH: Transfer = "scratch"
#: The classifier on the backbone's features: ``linear`` (FC + log-softmax, NLLLoss, as in
#: paper 1), ``mlp`` (hidden layer with dropout) or ``svm`` (multi-class hinge loss).
Head = Literal["linear", "mlp", "svm"]
HEADS: tuple[Head, ...] = typing.get_args(Head)
#: The optimiser (``sgd`` with momentum).
Optimizer = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[Optimizer, ...] = typing.get_args(Optimizer)
#: The learning-rate schedule over the epochs.
LrSchedule = Literal["constant", "cosine", "step"]
#: Arithmetic of forward passes: bf16 autocast or float32; ``auto`` picks bf16 where the
#: hardware runs it faster (see :func:`trainables.classify.uses_bf16`).
Precision = Literal["auto", "fp32", "bf16"]
#: ``weights`` written for "no weights" (random initialisation).
NO_WEIGHTS = "none"


def has_weights(weights: str | Path | None) -> bool:
    """Whether ``weights`` names pretrained weights (``None``, ``""`` and ``none`` do not)."""
    return weights is not None and str(weights).strip().lower() not in ("", NO_WEIGHTS)


def transfer_problem(transfer: str, weights: str | Path | None) -> str | None:
    """What breaks the weights <-> transfer rule, or ``None`` when the pair fits.

    The rule: ``scratch`` trains from random initialisation and takes no weights;
    ``frozen`` and ``finetune`` start from pretrained weights and need them. So
    ``weights: none`` means ``transfer: scratch``, and a grid folds the cells that differ
    only in the weights of a scratch model (:func:`tuner.spec.normalize_cell`).
    """
    if transfer == SCRATCH and has_weights(weights):
        return (
            f"transfer 'scratch' trains from random initialisation and takes no weights, but "
            f"weights={weights!r}; use transfer 'finetune' or 'frozen' to start from them"
        )
    if transfer != SCRATCH and not has_weights(weights):
        return (
            f"transfer {transfer!r} needs pretrained weights (it starts from pretrained "
            f"weights, not random initialisation), but weights={weights!r}; set weights to "
            "'imagenet' or a checkpoint path, or use transfer 'scratch'"
        )
    return None


class Strict(BaseModel):
    """Base model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(Strict):
    """Train / validation / test fractions and the split seed (default: paper 1's 70/10/20)."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        from trainables.data.split import validate_ratios

        validate_ratios(self.train, self.val, self.test)
        return self


class SyntheticConfig(Strict):
    """Parameters of the procedural dataset (preset ``synthetic``)."""

    per_class: int = Field(60, gt=0)
    size: int = Field(64, ge=16)
    seed: int = 0


class DataConfig(Strict):
    """Which images to train on (each field's meaning is its ``description``)."""

    preset: str = Field("folder", description="folder layout (trainables.data.presets)")
    root: str = Field(description="dataset folder (for synthetic: where the images are generated)")
    classes: list[str] | None = Field(None, description="optional subset of class names")
    split: SplitConfig = Field(
        default_factory=SplitConfig, description="train / val / test fractions and split seed"
    )
    image_size: int = Field(224, ge=16, le=1024, description="network input side in pixels")
    cache_dir: str | None = Field(
        None, description="decoded-cache folder (default $TUNER_CACHE or ~/.cache/tuner)"
    )
    synthetic: SyntheticConfig | None = Field(
        None, description="generator settings; only for the synthetic preset"
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(
                f"unknown dataset preset {v!r}{close_matches(v, list(PRESETS))} "
                f"Known: {', '.join(PRESETS)}."
            )
        return v

    @model_validator(mode="after")
    def _synthetic_only(self) -> DataConfig:
        if self.synthetic is not None and self.preset != "synthetic":
            raise ValueError(f"'synthetic' settings need preset 'synthetic', not {self.preset!r}")
        if self.classes is not None and len(self.classes) < 2:
            raise ValueError(f"classes needs at least 2 names, but got {self.classes}")
        return self


class TrialConfig(Strict):
    """One configuration to train and evaluate.

    Each field's meaning is its ``description`` (also the help text of
    ``python -m trainables.classify``'s flag of the same name).
    """

    data: DataConfig = Field(description="the dataset")
    model: str = Field(
        "resnet18",
        description="model name: any torchvision classification model, timm/<name> (a timm "
        "model), tiny_cnn or pixels",
    )
    transfer: Transfer = Field(
        "finetune",
        description="scratch (random init), frozen (pretrained backbone fixed, BatchNorm "
        "statistics too; only the head trains) or finetune (everything trains)",
    )
    weights: str | None = Field(
        None, description="imagenet, imagenet:<member or timm tag>, a checkpoint path, or none"
    )
    head: Head = Field(
        "linear", description="linear (FC + log-softmax, NLLLoss), mlp or svm (multi-class hinge)"
    )
    augmentation: Augmentation = Field(
        "none", description="augmentation preset (trainables.augment_presets)"
    )
    optimizer: Optimizer = Field("adam", description="optimiser (sgd with momentum)")
    lr: float = Field(
        1e-3, gt=0, description="learning rate of the head (the backbone's: x backbone_lr_mult)"
    )
    weight_decay: float = Field(0.0, ge=0, description="weight decay (L2 penalty)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd")
    backbone_lr_mult: float = Field(
        1.0, gt=0, description="backbone learning-rate multiplier when fine-tuning"
    )
    lr_schedule: LrSchedule = Field(
        "constant",
        description="constant, cosine (to 0 over the epochs) or step (x lr_gamma every "
        "lr_step epochs)",
    )
    lr_step: int = Field(10, gt=0, description="epochs between steps of the step schedule")
    lr_gamma: float = Field(0.1, gt=0, description="factor of each step of the step schedule")
    batch_size: int = Field(32, gt=0, description="images per batch")
    epochs: int = Field(10, gt=0, description="passes over the training split")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout probability of the mlp head")
    mlp_hidden: int = Field(512, gt=0, description="hidden width of the mlp head")
    seed: int = Field(0, description="seed of initialisation, data order and augmentation")
    num_threads: int | None = Field(
        None, gt=0, description="CPU threads (default: the CPUs allocated to the trial)"
    )
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader workers for the training split (default: 0 without "
        "augmentation, else the allocated CPUs - 1, at most 8)",
    )
    max_batches: int | None = Field(
        None, gt=0, description="smoke-size switch: at most this many batches per split per epoch"
    )
    precision: Precision = Field(
        "auto",
        description="arithmetic of forward passes: bf16 autocast (weights and optimiser stay "
        "fp32) or fp32; auto: bf16 on a GPU and on a CPU with AMX-BF16 units, else fp32",
    )
    # --- shared frozen features (trainables.features) ---
    feature_store: bool = Field(
        True,
        description="frozen trials read backbone features from the store under the cache dir, "
        "computed once per search (false: every trial computes its own)",
    )
    feature_views: int | None = Field(
        None,
        ge=0,
        description="frozen + augmentation: augmented views of the training split encoded "
        "once and replayed, epoch e on view e mod V (default: epochs; 0: augment and run the "
        "backbone every epoch)",
    )

    @model_validator(mode="after")
    def _weights_match_transfer(self) -> TrialConfig:
        problem = transfer_problem(self.transfer, self.weights)
        if problem:
            raise ValueError(problem)
        return self
