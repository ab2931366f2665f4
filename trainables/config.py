"""Validated configuration of one trial: the dataset and the training settings.

These pydantic models forbid unknown keys; the tuner's spec embeds :class:`DataConfig`
as its ``dataset`` section and builds one :class:`TrialConfig` per trial.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.data.presets import PRESETS, close_matches


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
    """Which images to train on.

    Attributes:
        preset: Folder layout (see :mod:`trainables.data.presets`).
        root: Dataset folder (for ``synthetic``: where the images are generated).
        classes: Optional subset of class names.
        split: Split fractions and seed.
        image_size: Network input side length in pixels.
        cache_dir: Decoded-cache folder (default ``$TUNER_CACHE`` or ``~/.cache/tuner``).
        synthetic: Generator settings; only for the ``synthetic`` preset.
    """

    preset: str = "folder"
    root: str
    classes: list[str] | None = None
    split: SplitConfig = Field(default_factory=SplitConfig)
    image_size: int = Field(224, ge=16, le=1024)
    cache_dir: str | None = None
    synthetic: SyntheticConfig | None = None

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

    Attributes:
        model: Model name (any torchvision classification model, ``tiny_cnn``, ``pixels``).
        transfer: ``scratch`` (random init), ``frozen`` (pretrained backbone fixed, only the
            head trains) or ``finetune`` (everything trains).
        weights: ``imagenet``, a checkpoint path, or ``none``.
        head: ``linear`` (FC + log-softmax, NLLLoss), ``mlp`` or ``svm`` (multi-class hinge).
        augmentation: Augmentation preset.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (with momentum).
        lr: Learning rate of the head (and of the backbone times ``backbone_lr_mult``).
        backbone_lr_mult: Backbone learning-rate multiplier when fine-tuning.
        lr_schedule: ``constant``, ``cosine`` (to 0 over the epochs) or ``step``
            (x ``lr_gamma`` every ``lr_step`` epochs).
        epochs: Number of passes over the training split.
        seed: Seed of initialisation, data order and augmentation.
        num_threads: CPU threads (default: the CPUs allocated to the trial).
        max_batches: Smoke-size switch: at most this many batches per split per epoch.
    """

    data: DataConfig
    model: str = "resnet18"
    transfer: Literal["scratch", "frozen", "finetune"] = "finetune"
    weights: str | None = None
    head: Literal["linear", "mlp", "svm"] = "linear"
    augmentation: Literal["none", "paper", "color", "aerial"] = "none"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    backbone_lr_mult: float = Field(1.0, gt=0)
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_step: int = Field(10, gt=0)
    lr_gamma: float = Field(0.1, gt=0)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(10, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    mlp_hidden: int = Field(512, gt=0)
    seed: int = 0
    num_threads: int | None = Field(None, gt=0)
    num_workers: int | None = Field(None, ge=0)
    max_batches: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _weights_match_transfer(self) -> TrialConfig:
        w = None if self.weights in (None, "", "none") else self.weights
        if self.transfer == "scratch" and w is not None:
            raise ValueError(f"transfer 'scratch' trains from random init, but weights={w!r}")
        if self.transfer != "scratch" and w is None:
            raise ValueError(
                f"transfer {self.transfer!r} needs pretrained weights, but weights is none; "
                "set weights to 'imagenet' or a checkpoint path, or use transfer 'scratch'"
            )
        return self
