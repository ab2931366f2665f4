"""The one model factory: a backbone by name, a new head, a transfer mode, and weights.

Every model a trial trains is a :class:`Classifier`: a ``backbone`` that maps images to
features ``[N, D]`` and a ``head`` that maps features to class outputs. The backbone is any
torchvision classification model (its ImageNet head, wherever it lives, replaced by
``nn.Identity``), a timm model named ``timm/<name>`` (:mod:`trainables.timm_models`: timm
removes its own classifier) or one of the small project models in :data:`PROJECT_MODELS`.

Three transfer modes (paper 1 trains ResNet50 both ways, paper 2 compares pre-training on
and off):

* ``scratch``: random initialisation, no weights.
* ``frozen``: pretrained backbone used as a fixed feature extractor; only the head trains
  and BatchNorm statistics never change.
* ``finetune``: pretrained backbone, everything trains.

Pretrained weights come from torchvision's ImageNet weights (through the torch hub cache,
which works offline once the file is there) or from a local checkpoint file. Run
``python -m trainables.models --classes 21 --image-size 256 resnet18`` for parameter and
MAC counts in the style of paper 2's Table 2.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import WeightsEnum, get_model, get_model_weights

from trainables import config, timm_models
from trainables.numbers import si
from trainables.timm_models import is_timm

_T = TypeVar("_T")

Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]
"""Per-channel ``(mean, std)`` the input images must be normalised with."""

HEADS, TRANSFERS = config.HEADS, config.TRANSFERS
"""The heads (:data:`trainables.config.Head`) and transfer modes
(:data:`trainables.config.Transfer`) the factory builds."""

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt")
"""A ``weights`` string with one of these endings is always read as a local file."""

DOWNLOAD_TIMEOUT_S = 60.0
"""Seconds a weights download may wait for the server before it fails."""

IMAGENET_CLASSES = 1000
IMAGENET_NORMALIZATION: Normalization = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SCRATCH_NORMALIZATION: Normalization = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# torchvision's googlenet/inception_v3 ImageNet weights were ported from TensorFlow and
# expect inputs scaled by mean=std=0.5; torchvision hides this behind transform_input=True,
# which maps ImageNet-normalised input onto that scale. We always build them with
# transform_input=False and ask for the 0.5 normalisation instead: the network sees exactly
# the same numbers, and one model definition serves scratch, ImageNet and checkpoints.
_TRANSFORM_INPUT_MODELS = frozenset({"googlenet", "inception_v3"})
_AUX_CLASSIFIERS = ("aux1", "aux2", "AuxLogits")
# ViT and MaxViT bake the input size into the architecture (positional embeddings, window
# grid); torchvision's keyword for it differs.
_SIZE_KWARGS = {"vit_": "image_size", "maxvit_": "input_size"}
# Old torchvision DenseNet files name layers "norm.1" where the modules are now "norm1".
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights are neither in the torch hub cache nor downloadable.

    Attributes:
        url: Where torchvision downloads the file from.
        path: Where the file must be put so that it loads offline.
    """

    def __init__(self, message: str, *, url: str, path: Path) -> None:
        super().__init__(message)
        self.url = url
        self.path = path

    def __reduce__(self):
        """Rebuild from message, URL and path: Ray copies a trial's exception by pickling it."""
        return _weights_not_found, (type(self), str(self), self.url, self.path)


def _weights_not_found(cls: type, message: str, url: str, path: Path) -> WeightsNotFoundError:
    """Unpickle a :class:`WeightsNotFoundError` (its init takes keyword-only arguments)."""
    return cls(message, url=url, path=path)


def _pixels_backbone(image_size: int) -> tuple[nn.Module, int]:
    """Raw pixels as features: with the ``svm`` head, paper 1's "SVM" baseline."""
    return nn.Flatten(), 3 * image_size * image_size


def _tiny_cnn_backbone(image_size: int) -> tuple[nn.Module, int]:
    """Four stride-2 conv-BN-ReLU blocks and global average pooling (~98k parameters)."""
    del image_size  # global pooling makes it size-agnostic
    channels = (3, 16, 32, 64, 128)
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), channels[-1]


PROJECT_MODELS: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "pixels": _pixels_backbone,
    "tiny_cnn": _tiny_cnn_backbone,
}
"""Models defined here: name -> ``builder(image_size) -> (backbone, feature_dim)``."""

_NO_PRETRAINED = frozenset({"pixels"})


def available_models() -> list[str]:
    """Names :func:`create_model` accepts: torchvision classifiers, then project models."""
    return list(torchvision.models.list_models(module=torchvision.models)) + list(PROJECT_MODELS)


def check_model(name: str) -> None:
    """Raise for a model name :func:`create_model` cannot build, with close matches.

    Raises:
        ValueError: An unknown torchvision / project name, or an unknown timm architecture
            or tag.
        trainables.extras.MissingExtraError: A ``timm/`` name without timm installed (the
            message names the extra).
    """
    if is_timm(name):
        timm_models.check_name(name)
    else:
        _check_choice("model", name, available_models())


def min_image_size(name: str) -> int:
    """The smallest input side ``name`` accepts (torchvision's ``min_size`` of its weights)."""
    if name in PROJECT_MODELS:
        return 16
    if is_timm(name):
        return timm_models.min_image_size(name)
    try:
        return int(get_model_weights(name).DEFAULT.meta["min_size"][0])
    except (KeyError, ValueError, AttributeError):
        return 224


def _unknown(what: str, value: object, known: Sequence[str]) -> str:
    """Error text for a name not in ``known``, with close matches."""
    close = difflib.get_close_matches(str(value), known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
    return f"unknown {what} {value!r}{hint} Known: {', '.join(known)}"


def _check_choice(what: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ValueError(_unknown(what, value, known))


class Classifier(nn.Module):
    """Backbone (images -> features ``[N, D]``) followed by a head (features -> outputs).

    Attributes:
        backbone: Feature extractor; for torchvision models the original network with its
            ImageNet head replaced by ``nn.Identity``.
        head: New head for ``num_classes`` outputs (see :data:`HEADS`).
        name: Model name as given to :func:`create_model`.
        head_type: One of :data:`HEADS`.
        transfer: One of :data:`TRANSFERS`. In ``frozen`` mode the backbone has
            ``requires_grad=False`` and stays in eval mode whatever ``train()`` is called
            with, so BatchNorm running statistics never change and dropout is off.
        feature_dim: ``D``, the backbone's output width.
        head_path: Dotted path of the replaced ImageNet head inside the torchvision network
            (``"fc"``, ``"classifier.6"``, ...), ``None`` for project models. Weight files
            skip keys under it.
        normalization: ``(mean, std)`` the input images must be normalised with.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        name: str,
        head_type: str,
        transfer: str,
        feature_dim: int,
        normalization: Normalization = SCRATCH_NORMALIZATION,
        head_path: str | None = None,
    ) -> None:
        super().__init__()
        _check_choice("head", head_type, HEADS)
        _check_choice("transfer", transfer, TRANSFERS)
        self.backbone = backbone
        self.head = head
        self.name = name
        self.head_type = head_type
        self.transfer = transfer
        self.feature_dim = feature_dim
        self.head_path = head_path
        self.normalization = normalization
        if transfer == "frozen":
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``[N, 3, H, W]`` to head outputs ``[N, num_classes]``."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> Classifier:
        """Set train/eval mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.transfer == "frozen":
            self.backbone.eval()
        return self

    def param_groups(self, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups over the trainable parameters.

        Args:
            lr: Learning rate of the head.
            backbone_lr_mult: The backbone learns at ``lr * backbone_lr_mult`` (discriminative
                fine-tuning: pretrained layers usually want a smaller step than a new head).

        Returns:
            Groups ``{"name", "params", "lr"}`` for ``backbone`` and ``head``; a group with no
            trainable parameter (a frozen backbone, ``pixels``) is left out.
        """
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got lr={lr}")
        if not backbone_lr_mult >= 0:
            raise ValueError(
                f"backbone_lr_mult must be >= 0, got backbone_lr_mult={backbone_lr_mult}"
            )
        groups = []
        for part, part_lr in (("backbone", lr * backbone_lr_mult), ("head", lr)):
            params = [p for p in getattr(self, part).parameters() if p.requires_grad]
            if params:
                groups.append({"name": part, "params": params, "lr": part_lr})
        return groups

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, head_type={self.head_type!r}, transfer={self.transfer!r}, "
            f"feature_dim={self.feature_dim}"
        )


def _build_head(
    head: str, feature_dim: int, num_classes: int, hidden: int, dropout: float
) -> nn.Sequential:
    """The new head: log-probabilities for ``linear``/``mlp``, raw scores for ``svm``."""
    if head == "linear":
        return nn.Sequential(nn.Linear(feature_dim, num_classes), nn.LogSoftmax(dim=1))
    if head == "mlp":
        return nn.Sequential(
            nn.Linear(feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
            nn.LogSoftmax(dim=1),
        )
    return nn.Sequential(nn.Linear(feature_dim, num_classes))


def _parse_weights(weights: str | Path | None) -> tuple[str, Any]:
    """Classify a ``weights`` argument as ``("none", None)``, ``("imagenet", member or None)``
    or ``("file", Path)``."""
    if weights is None:
        return "none", None
    if isinstance(weights, Path):
        return "file", weights.expanduser()
    if not isinstance(weights, str):
        raise TypeError(f"weights must be None, a str or a Path, got {type(weights).__name__}")
    text = weights.strip()
    if text.lower() == "none":
        return "none", None
    if text.lower() == "imagenet":
        return "imagenet", None
    if text.lower().startswith("imagenet:"):
        return "imagenet", text.split(":", 1)[1]
    path = Path(text).expanduser()
    if path.exists() or text.lower().endswith(WEIGHT_SUFFIXES):
        return "file", path
    raise ValueError(
        "weights must be None/'none', 'imagenet', 'imagenet:<MEMBER>' or the path of an "
        f"existing file (or one ending {', '.join(WEIGHT_SUFFIXES)}), got {weights!r}"
    )


def _imagenet_member(name: str, member: str | None) -> WeightsEnum:
    """The torchvision weights enum member: ``DEFAULT`` or the one named."""
    enum = get_model_weights(name)
    if member is None:
        return enum.DEFAULT
    members = list(enum.__members__)
    if member not in members:
        raise ValueError(_unknown(f"ImageNet weights for {name}:", member, members))
    return enum[member]


def _pretrained_normalization(name: str, member: WeightsEnum | None = None) -> Normalization:
    """Input normalisation that goes with torchvision's pretrained weights of ``name``."""
    if name in _TRANSFORM_INPUT_MODELS:
        return SCRATCH_NORMALIZATION  # see _TRANSFORM_INPUT_MODELS
    if name in PROJECT_MODELS:
        return SCRATCH_NORMALIZATION  # their checkpoints come from scratch training here
    if is_timm(name):
        return timm_models.normalization(name)
    preset = (member or get_model_weights(name).DEFAULT).transforms()
    mean, std = getattr(preset, "mean", None), getattr(preset, "std", None)
    if mean is None or std is None:
        return IMAGENET_NORMALIZATION
    return _as_normalization([mean, std], f"{name} weights' transforms()")


def _as_normalization(value: Any, where: str) -> Normalization:
    """Validate ``[mean, std]`` with three numbers each."""
    try:
        mean, std = value
        mean = tuple(float(v) for v in mean)
        std = tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: normalization must be [mean, std], got {value!r}") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"{where}: normalization must hold 3 means and 3 positive stds, got {value!r}"
        )
    return mean, std  # type: ignore[return-value]


def _download_hint_path(member: WeightsEnum) -> Path:
    """Where torch hub looks for ``member``'s file: ``<hub dir>/checkpoints/<url file name>``."""
    file_name = Path(urlparse(member.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


@dataclass(frozen=True)
class ImagenetFile:
    """One file of torchvision's ImageNet weights.

    Attributes:
        url: Where torchvision downloads it from.
        path: Where torch hub's cache keeps it (``$TORCH_HOME/hub/checkpoints/<name>``); a
            file there loads without a network.
    """

    url: str
    path: Path


def imagenet_file(name: str, weights: str | Path | None) -> ImagenetFile | None:
    """The ImageNet weights file that ``create_model(name, weights=weights)`` reads.

    Returns:
        The file, or ``None`` when ``weights`` is not ImageNet weights (none, a local file).

    Raises:
        ValueError: A project model with ImageNet weights, or an unknown weights member.
    """
    kind, value = _parse_weights(weights)
    if kind != "imagenet":
        return None
    if name in PROJECT_MODELS:
        raise ValueError(
            f"model {name!r} is a project model without ImageNet weights, got "
            f"weights={weights!r}; pass the path of a checkpoint of it instead"
        )
    if is_timm(name):
        source = timm_models.weights_file(name, value)
        return ImagenetFile(url=source.url, path=source.path)
    member = _imagenet_member(name, value)
    return ImagenetFile(url=member.url, path=_download_hint_path(member))


def download_imagenet_file(file: ImagenetFile, *, progress: bool = True) -> None:
    """Download a weights file into torch hub's cache, as torchvision would on first use.

    The SHA-256 prefix in the file name is checked (torchvision's ``check_hash=True``), and
    the file appears under its final name only when complete. A connection that stays
    silent for :data:`DOWNLOAD_TIMEOUT_S` seconds fails.

    Raises:
        OSError: The download failed (``urllib.error.URLError`` offline).
        RuntimeError: The file's hash does not match its name.
    """
    found = torch.hub.HASH_REGEX.search(file.path.name)
    file.path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(
            file.url, str(file.path), found.group(1) if found else None, progress=progress
        )
    finally:
        socket.setdefaulttimeout(previous)


def _build_torchvision(name: str, image_size: int, member: WeightsEnum | None) -> nn.Module:
    """A torchvision network with 1000 outputs, random or with ImageNet weights."""
    kwargs: dict[str, Any] = {}
    if name in _TRANSFORM_INPUT_MODELS:
        kwargs["transform_input"] = False
        if member is None:
            kwargs.update(aux_logits=False, init_weights=True)
    for prefix, key in _SIZE_KWARGS.items():
        if not name.startswith(prefix):
            continue
        if member is None:
            kwargs[key] = image_size if key == "image_size" else (image_size, image_size)
        elif tuple(member.meta["min_size"]) != (image_size, image_size):
            size = member.meta["min_size"][0]
            raise ValueError(
                f"{name}'s ImageNet weights {member} fix the input size to {size} px, got "
                f"image_size={image_size}; use image_size={size}"
            )
    if member is None:
        net = get_model(name, weights=None, **kwargs)
    else:
        cached = _download_hint_path(member)
        try:
            net = get_model(name, weights=member, **kwargs)
        except (URLError, OSError, RuntimeError) as exc:
            if cached.is_file():
                raise  # the download worked or the file was there: the error is elsewhere
            raise WeightsNotFoundError(
                f"ImageNet weights for {name} ({member}) are not in the torch hub cache and "
                f"could not be downloaded ({type(exc).__name__}: {exc}). Download {member.url} "
                f"on a machine with internet and put it at {cached}, or set TORCH_HOME to a "
                f"folder whose hub/checkpoints/ holds {cached.name}",
                url=member.url,
                path=cached,
            ) from exc
    # Auxiliary classifiers would make forward() return a tuple in train mode.
    if getattr(net, "aux_logits", False):
        net.aux_logits = False
    for attr in _AUX_CLASSIFIERS:
        if isinstance(getattr(net, attr, None), nn.Module):
            setattr(net, attr, None)
    return net


def _replace_imagenet_head(net: nn.Module, name: str) -> tuple[str, int]:
    """Swap the network's ImageNet head for ``nn.Identity``.

    The head is the last module, in registration order, that is a ``Linear`` with 1000
    outputs or a ``Conv2d`` with 1000 output channels (SqueezeNet), wherever it lives:
    ``fc``, ``classifier.6``, ``heads.head``, ...

    Returns:
        The head's dotted path and its input width ``D``.
    """
    found: tuple[str, int] | None = None
    for path, module in net.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == IMAGENET_CLASSES:
            found = (path, module.in_features)
        elif isinstance(module, nn.Conv2d) and module.out_channels == IMAGENET_CLASSES:
            found = (path, module.in_channels)
    if found is None:
        raise ValueError(
            f"cannot find the ImageNet head of {name!r}: no Linear or Conv2d module has "
            f"{IMAGENET_CLASSES} outputs"
        )
    net.set_submodule(found[0], nn.Identity())
    return found


def create_model(
    name: str,
    num_classes: int,
    *,
    head: str = "linear",
    transfer: str = "finetune",
    weights: str | Path | None = None,
    image_size: int = 224,
    mlp_hidden: int = 512,
    dropout: float = 0.5,
) -> Classifier:
    """Build a classifier by name: backbone, new head, transfer mode and weights.

    Args:
        name: A torchvision classification model (``resnet50``, ``mobilenet_v2``, ...) or a
            project model (``pixels``, ``tiny_cnn``); see :func:`available_models`.
        num_classes: ``K``, the number of scene classes.
        head: ``linear`` (Linear + LogSoftmax, as paper 1), ``mlp`` (Linear-ReLU-Dropout-
            Linear-LogSoftmax) or ``svm`` (Linear, raw scores for a hinge loss).
        transfer: ``scratch`` (random init, no weights), ``frozen`` (pretrained backbone
            fixed, BatchNorm statistics included; only the head trains) or ``finetune``
            (pretrained, everything trains).
        weights: ``None``/``"none"`` for random init; ``"imagenet"`` for the model's DEFAULT
            torchvision weights or ``"imagenet:<MEMBER>"`` (e.g. ``"imagenet:IMAGENET1K_V1"``)
            for one member, read from the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
            or downloaded; or a local file, see :func:`load_weights_file`.
        image_size: Input side in pixels. Sets ``D`` for ``pixels`` and the architecture of
            ViT/MaxViT built without ImageNet weights; other models are size-agnostic.
        mlp_hidden: Hidden width of the ``mlp`` head.
        dropout: Dropout probability of the ``mlp`` head.

    Returns:
        The :class:`Classifier`, with ``normalization`` set for its weights.

    Raises:
        ValueError: An unknown name or a combination that does not fit (e.g. ``scratch`` with
            weights, ``frozen`` without), or a weight file that does not fit the backbone.
        WeightsNotFoundError: ImageNet weights neither cached nor downloadable.
        FileNotFoundError: A weights path that does not exist.
    """
    _check_arguments(name, num_classes, head, transfer, image_size, mlp_hidden, dropout)
    kind, value = _parse_weights(weights)
    problem = config.transfer_problem(transfer, weights)
    if problem:
        raise ValueError(problem)
    if kind == "file" and name not in PROJECT_MODELS and not is_timm(name):
        part = _backbone_without_init(name, kind, value, weights, image_size)
    else:
        part = _build_backbone(name, kind, value, weights, image_size)
    model = Classifier(
        part.backbone,
        _build_head(head, part.feature_dim, num_classes, mlp_hidden, dropout),
        name=name,
        head_type=head,
        transfer=transfer,
        feature_dim=part.feature_dim,
        normalization=part.normalization,
        head_path=part.head_path,
    )
    if kind == "file" and not part.loaded:
        load_weights_file(model, value)
    return model


def _check_arguments(
    name: str,
    num_classes: int,
    head: str,
    transfer: str,
    image_size: int,
    mlp_hidden: int,
    dropout: float,
) -> None:
    """Raise ``ValueError`` for :func:`create_model` arguments that do not fit, weights
    aside: the name, head and transfer choices, the sizes, and the ``mlp`` head's width
    and dropout (checked only for that head)."""
    check_model(name)
    _check_choice("head", head, HEADS)
    _check_choice("transfer", transfer, TRANSFERS)
    for label, value, low in (("num_classes", num_classes, 2), ("image_size", image_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {label}={value!r}")
    if head == "mlp" and (not isinstance(mlp_hidden, int) or mlp_hidden < 1):
        raise ValueError(f"mlp_hidden must be an integer >= 1, got mlp_hidden={mlp_hidden!r}")
    if head == "mlp" and not 0 <= dropout < 1:
        raise ValueError(f"dropout must satisfy 0 <= dropout < 1, got dropout={dropout!r}")
    if name in _NO_PRETRAINED and transfer != "scratch":
        raise ValueError(
            f"model {name!r} has no pretrained weights, so transfer must be 'scratch', "
            f"got transfer={transfer!r}"
        )


@dataclass(frozen=True)
class _Backbone:
    """A backbone without its ImageNet head, as :func:`_build_backbone` returns it.

    Attributes:
        backbone: The feature extractor; its output is ``feature_dim`` wide.
        feature_dim: Width of the features the new head takes.
        head_path: Where the replaced ImageNet head lived (``fc``, ``classifier.1``, ...);
            ``None`` for project models, which never had one.
        normalization: Input ``(mean, std)`` for the weights in ``backbone``.
        loaded: Whether the requested weights are already in ``backbone`` (timm loads its
            own files); when not, :func:`create_model` loads a weights file afterwards.
    """

    backbone: nn.Module
    feature_dim: int
    head_path: str | None
    normalization: Normalization
    loaded: bool = False


def _build_backbone(
    name: str, kind: str, value: Any, weights: str | Path | None, image_size: int
) -> _Backbone:
    """The backbone of a project, timm or torchvision model, with ImageNet weights when
    ``kind`` is ``imagenet`` (``kind``/``value`` as :func:`_parse_weights` returns them;
    ``weights`` is the argument as given, for the error message)."""
    if name in PROJECT_MODELS:
        if kind == "imagenet":
            raise ValueError(
                f"model {name!r} is a project model without ImageNet weights, got "
                f"weights={weights!r}; pass the path of a checkpoint of it instead"
            )
        backbone, feature_dim = PROJECT_MODELS[name](image_size)
        return _Backbone(backbone, feature_dim, None, SCRATCH_NORMALIZATION)
    if is_timm(name):
        built = timm_models.build(name, kind, value, image_size=image_size)
        normalization = SCRATCH_NORMALIZATION
        if built.normalization is not None:
            normalization = _as_normalization(built.normalization, f"{name} pretrained_cfg")
        return _Backbone(
            built.backbone, built.feature_dim, built.head_path, normalization, built.loaded
        )
    member = _imagenet_member(name, value) if kind == "imagenet" else None
    backbone = _build_torchvision(name, image_size, member)
    head_path, feature_dim = _replace_imagenet_head(backbone, name)
    normalization = (
        SCRATCH_NORMALIZATION if member is None else _pretrained_normalization(name, member)
    )
    return _Backbone(backbone, feature_dim, head_path, normalization)


def _backbone_without_init(
    name: str, kind: str, value: Any, weights: str | Path | None, image_size: int
) -> _Backbone:
    """A torchvision backbone whose tensors a weights file is about to replace, built without
    the random initialisation (resnet18 from a file: 0.08-0.16 s instead of 0.25-0.30 s at
    every trial's start on this machine's CPUs; and the head's init no longer depends on the
    backbone's draws from the random stream).

    It is built on the ``meta`` device and given uninitialised CPU memory; the file fills
    every tensor (:func:`load_weights_file` refuses one that misses any but BatchNorm's
    ``num_batches_tracked``, set to zero here). Builders that compute with tensors (RegNet)
    and backbones with buffers outside the state dict, which no file holds, are built as
    usual.
    """

    def build() -> _Backbone:
        return _build_backbone(name, kind, value, weights, image_size)

    part = on_meta(build)
    if part is None:
        return build()
    stored = part.backbone.state_dict().keys()
    if any(key not in stored for key, _ in part.backbone.named_buffers()):
        return build()
    part.backbone.to_empty(device="cpu")
    for key, buffer in part.backbone.named_buffers():
        if key.endswith("num_batches_tracked"):
            buffer.zero_()
    return part


def loss_function(head: str) -> nn.Module:
    """The loss that matches a head's outputs.

    ``linear``/``mlp`` end in LogSoftmax, so :class:`~torch.nn.NLLLoss` (paper 1's loss; the
    pair equals cross-entropy on the logits). ``svm`` outputs raw scores, so
    :class:`~torch.nn.MultiMarginLoss`, the multi-class hinge loss.
    """
    _check_choice("head", head, HEADS)
    return nn.MultiMarginLoss() if head == "svm" else nn.NLLLoss()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts; shared parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one ``3 x image_size x image_size`` image.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions;
    FLOPs / 2) in eval mode without gradients; each module's train/eval mode is restored
    afterwards. Works on a model on the ``meta`` device, which needs no memory.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    ref = next((t for t in tensors if t.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype))
    finally:
        for module, training in modes.items():
            module.training = training
    return counter.get_total_flops() // 2


def _unpack_checkpoint(obj: Any, path: Path) -> tuple[Mapping[str, Any], Any, Any]:
    """``(state_dict, model_name or None, normalization or None)`` from a loaded file."""
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path}: expected a state_dict or a checkpoint dict, got {type(obj).__name__}"
        )
    if isinstance(obj.get("model"), Mapping):
        state, model_name, normalization = obj["model"], obj.get("model_name"), None
        if obj.get("normalization") is not None:
            normalization = _as_normalization(obj["normalization"], str(path))
    else:
        state, model_name, normalization = obj, None, None
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(
            f"{path}: not a state_dict (or a checkpoint with one under 'model'): the values of "
            f"{_first(not_tensors)} are not tensors"
        )
    return state, model_name, normalization


def _first(items: Sequence[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_weights_file(model: Classifier, path: str | Path) -> None:
    """Load a local weights file into ``model``'s backbone; the head keeps its init.

    Accepted contents (read with ``torch.load(..., weights_only=True)``):

    a. a plain torchvision state_dict (``conv1.weight``, ``fc.weight``, ...), e.g. an
       ImageNet file downloaded by hand; keys under the ImageNet head path are skipped;
    b. a :class:`Classifier` state_dict (``backbone.*``, ``head.*``); ``head.*`` is skipped;
    c. a project checkpoint ``{"model": <a or b>, "normalization": [mean, std],
       "model_name": str}`` (the last two optional).

    Head keys are always skipped, so a checkpoint for another number of classes loads. The
    auxiliary classifiers of googlenet/inception_v3 files are ignored. ``model.normalization``
    becomes the recorded one, else the one of torchvision's ImageNet weights (project
    models: the scratch one).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: A file that ``torch.load(weights_only=True)`` cannot read; missing,
            mis-shaped or unexpected backbone keys (listed with shapes); or a checkpoint
            recorded for another model.
    """
    loaded, normalization = _fitting_state(model, path)
    model.backbone.load_state_dict(loaded, strict=False)
    model.normalization = normalization or _pretrained_normalization(model.name)


def check_weights_file(name: str, path: str | Path, *, image_size: int = 224) -> None:
    """Check that a weights file loads into ``name``'s backbone, without building its weights.

    The file is read as :func:`load_weights_file` reads it (``weights_only=True``) and its
    keys and shapes are matched against the backbone built on the ``meta`` device, so a
    search can check every checkpoint it names before any trial starts.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: The file does not load, or does not fit (see :func:`load_weights_file`).
    """

    if is_timm(name) and not timm_models.is_project_checkpoint(Path(path).expanduser()):
        # a timm / original checkpoint: timm's own loader (and filter) decides whether it fits
        create_model(name, 2, transfer="finetune", weights=Path(path), image_size=image_size)
        return

    def build() -> Classifier:
        return create_model(name, 2, transfer="scratch", image_size=image_size)

    model = on_meta(build)
    _fitting_state(model if model is not None else build(), path)


def on_meta(build: Callable[[], _T]) -> _T | None:
    """``build()`` on the ``meta`` device (shapes only: no memory, no initialisation), or
    ``None`` for builders that compute with tensor values (RegNet's widths)."""
    try:
        with torch.device("meta"):
            return build()
    except (NotImplementedError, RuntimeError):
        return None


def _fitting_state(model: Classifier, path: str | Path) -> tuple[dict[str, Tensor], Any]:
    """The backbone tensors of a weights file and its recorded normalization (or ``None``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on a file that is not its format
        raise ValueError(
            f"{path} is not a weights file: torch.load(weights_only=True) fails with "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}; "
            "expected a state_dict or a checkpoint saved with torch.save (.pt/.pth)"
        ) from exc
    state, model_name, normalization = _unpack_checkpoint(obj, path)
    if model_name is not None and model_name != model.name:
        raise ValueError(
            f"{path} is a checkpoint of model {model_name!r} and cannot be loaded into "
            f"model {model.name!r}"
        )

    unexpected: list[str] = []
    loaded: dict[str, Tensor] = {}
    if any(str(k).startswith("backbone.") for k in state):
        skipped = "head."
        for key, tensor in state.items():
            if key.startswith("backbone."):
                loaded[key.removeprefix("backbone.")] = tensor
            elif not key.startswith(skipped):
                unexpected.append(key)
    else:
        skipped = f"{model.head_path}." if model.head_path else "head."
        for key, tensor in state.items():
            if not key.startswith(skipped):
                match = _DENSENET_KEY.match(key) if model.name.startswith("densenet") else None
                loaded[match.group(1) + match.group(2) if match else key] = tensor

    expected = model.backbone.state_dict()
    for key in [k for k in loaded if k not in expected]:
        if key.split(".")[0] not in _AUX_CLASSIFIERS:
            unexpected.append(key)
        del loaded[key]
    missing = [
        f"{k} {tuple(t.shape)}"
        for k, t in expected.items()
        if k not in loaded and not k.endswith("num_batches_tracked")
    ]
    misshaped = [
        f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(t.shape)}"
        for k, t in expected.items()
        if k in loaded and loaded[k].shape != t.shape
    ]
    problems = [
        f"{len(found)} {label} key(s): {_first(found)}"
        for label, found in (
            ("mis-shaped", misshaped),
            ("missing", missing),
            ("unexpected", unexpected),
        )
        if found
    ]
    if problems:
        raise ValueError(
            f"{path} does not fit the backbone of {model.name!r} (keys under {skipped!r} are "
            f"skipped as head keys): " + "; ".join(problems)
        )
    return loaded, normalization


@dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model, in the style of paper 2's Table 2.

    Attributes:
        trainable: Trainable parameters per transfer mode; ``None`` where the mode does not
            apply (``pixels`` has no pretrained weights).
        macs: Multiply-accumulates for one image of ``image_size`` x ``image_size``.
    """

    name: str
    num_classes: int
    image_size: int
    head: str
    total: int
    trainable: dict[str, int | None]
    macs: int


def model_stats(
    name: str, num_classes: int, *, image_size: int, head: str = "linear"
) -> ModelStats:
    """Count parameters and MACs without weights or memory (built on the ``meta`` device).

    ``frozen`` trains the head only, ``scratch`` and ``finetune`` everything.
    """

    def build() -> tuple[Classifier, int]:
        model = create_model(
            name, num_classes, head=head, transfer="scratch", image_size=image_size
        )
        return model, count_macs(model, image_size)

    built = on_meta(build)
    model, macs = built if built is not None else build()
    total, _ = count_parameters(model)
    head_params, _ = count_parameters(model.head)
    pretrainable = name not in _NO_PRETRAINED
    return ModelStats(
        name=name,
        num_classes=num_classes,
        image_size=image_size,
        head=head,
        total=total,
        trainable={
            "scratch": total,
            "frozen": head_params if pretrainable else None,
            "finetune": total if pretrainable else None,
        },
        macs=macs,
    )


def format_stats(stats: ModelStats) -> str:
    """A small table for one model: rounded figures as paper 2 prints them, exact integers."""
    rows = [("params total", si(stats.total, units="M", fixed=True), f"{stats.total:,}")]
    for transfer, count in stats.trainable.items():
        note = " (head only)" if transfer == "frozen" else ""
        if count is None:
            rows.append((f"trainable {transfer}", "n/a", "no pretrained weights"))
        else:
            rows.append(
                (f"trainable {transfer}", si(count, units="M", fixed=True), f"{count:,}{note}")
            )
    rows.append(("MACs", si(stats.macs, units="GM", fixed=True), f"{stats.macs:,}"))
    title = (
        f"{stats.name}: {stats.num_classes} classes, {stats.head} head, "
        f"{stats.image_size}x{stats.image_size} input"
    )
    return "\n".join([title] + [f"  {a:<20}{b:>12}  {c}" for a, b, c in rows])


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``trainables.models`` (``tuner models``)."""
    from trainables.clihelp import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m trainables.models",
        description="Parameters (total; trainable per transfer mode) and MACs of models built "
        "with a new head; no weights are needed.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="e.g. resnet18 mobilenet_v2 timm/convnext_atto",
    )
    parser.add_argument("--classes", type=int, default=21, help="number of classes")
    parser.add_argument("--image-size", type=int, default=224, help="input side in px")
    parser.add_argument("--head", choices=HEADS, default="linear", help="head type")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: parameter counts per transfer mode and MACs for the named models."""
    args = build_parser().parse_args(argv)

    unknown = []
    for name in args.models:
        try:
            check_model(name)
        except (ValueError, ImportError) as exc:
            unknown.append(name)
            print(f"error: {exc}", file=sys.stderr)
    if unknown:
        return 2
    try:
        tables = [
            format_stats(model_stats(m, args.classes, image_size=args.image_size, head=args.head))
            for m in args.models
        ]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
