"""timm backbones for the one model factory: ``model: timm/<name>``.

:func:`trainables.models.create_model` builds ``timm/convnext_atto``,
``timm/efficientnet_b0`` or any other of timm's ~1,300 architectures here, as a backbone
whose classifier timm itself removes (``num_classes=0``: the network returns pooled
features ``[N, D]``); the factory then adds the project's heads and transfer modes exactly
as for torchvision models (``frozen`` keeps BatchNorm statistics fixed too). A pretrained
tag may be part of the name (``timm/convnext_atto.d2_in1k``) or the weights
(``weights: imagenet:d2_in1k``); ``weights: imagenet`` means timm's default tag.

Weights never come from the network during a trial unless they are missing: timm's
``pretrained_cfg_overlay=dict(file=...)`` loads them from a file, either

* the ImageNet cache (:func:`weights_file`): ``$TORCH_HOME/hub/checkpoints/timm/<name>.<tag>
  .safetensors`` (a copy already in the Hugging Face cache is used where it is); a missing
  file is downloaded there once (the search's preflight does it in the driver) or the error
  names the URL and the path to put it at; or
* ``weights: path/to/file`` (``.safetensors``, ``.pth``, ``.bin``: a timm or original
  checkpoint, filtered by timm's own ``checkpoint_filter_fn``). A checkpoint written by
  this project (``best.pt``, the pretraining stage) loads through
  :func:`trainables.models.load_weights_file` instead.

timm is an optional extra (``pip install -e ".[timm]"``); without it, a ``timm/`` name is
an error that says so. This module imports neither timm nor torch until a function needs
them, so that the spec can recognise ``timm/`` names cheaply.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError
from urllib.parse import urlparse

from trainables.extras import require

if TYPE_CHECKING:
    from torch import nn

PREFIX = "timm/"
"""Model names that start with this are timm models (``timm/<architecture>[.<tag>]``)."""

MIN_SIZE = 32
"""Smallest input side assumed for a timm model whose config states none."""

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
"""timm's default input normalisation (a config without ``mean`` / ``std``)."""


def is_timm(name: object) -> bool:
    """Whether a model name asks for a timm model."""
    return isinstance(name, str) and name.startswith(PREFIX)


def _timm():
    require("timm", "a timm model (model: timm/<name>)")
    import timm

    return timm


def architecture(name: str) -> tuple[str, str]:
    """``("convnext_atto", "d2_in1k")`` for ``timm/convnext_atto.d2_in1k`` (tag may be ``""``)."""
    body = name.removeprefix(PREFIX)
    arch, _, tag = body.partition(".")
    return arch, tag


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(_timm().list_models())


def check_name(name: str) -> None:
    """Raise ``ValueError`` for an unknown timm architecture or tag (``MissingExtraError``
    when timm is not installed); the message offers close matches."""
    timm = _timm()
    arch, tag = architecture(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, _names(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown timm model {name!r}{hint} (timm {timm.__version__} has "
            f'{len(_names())} architectures: python -c "import timm; print(timm.list_models())")'
        )
    if tag:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise ValueError(
                f"timm model {arch!r} has no pretrained tag {tag!r}; its tags: "
                f"{', '.join(tags) or 'none'}"
            )


def _pretrained_cfg(arch: str, tag: str) -> Any:
    """timm's pretrained config of ``arch.tag`` (default tag when ``tag`` is empty)."""
    timm = _timm()
    full = f"{arch}.{tag}" if tag else arch
    try:
        cfg = timm.models.get_pretrained_cfg(full, allow_unregistered=True)
    except RuntimeError as err:
        raise ValueError(f"timm model {PREFIX}{full}: {err}") from None
    return cfg


def _weights_tag(name: str, member: str | None) -> tuple[str, str]:
    """Architecture and pretrained tag that ``weights: imagenet[:<tag>]`` selects."""
    arch, tag = architecture(name)
    if member is not None:
        if tag and member != tag:
            raise ValueError(
                f"model {name!r} names the pretrained tag {tag!r} but weights name "
                f"'imagenet:{member}'; give the tag once"
            )
        tag = member
    cfg = _pretrained_cfg(arch, tag)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm model {name!r} has no pretrained weights to download")
    return arch, cfg.tag or tag


@dataclass(frozen=True)
class WeightsSource:
    """Where the pretrained file of one timm model and tag comes from and is kept.

    Attributes:
        url: Its download URL (the Hugging Face Hub file timm itself would fetch).
        path: Where it is looked for and downloaded to (see :func:`weights_file`).
    """

    url: str
    path: Path


def _hf_cached(repo: str, revision: str | None, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def weights_file(name: str, member: str | None = None) -> WeightsSource:
    """The pretrained file that ``weights: imagenet`` (or ``imagenet:<tag>``) reads.

    ``path`` is ``<torch hub dir>/checkpoints/timm/<arch>.<tag><suffix>`` (torch hub's
    folder, ``$TORCH_HOME/hub/checkpoints`` by default, as for torchvision's weights), or
    the copy in the Hugging Face cache when timm has downloaded it there before.
    """
    arch, tag = _weights_tag(name, member)
    cfg = _pretrained_cfg(arch, tag)
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        filename = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{filename}"
        cached = _hf_cached(repo, revision or None, filename)
        if cached is not None:
            return WeightsSource(url=url, path=cached)
    else:
        url = cfg.url
    import torch

    suffix = "".join(Path(urlparse(url).path).suffixes[-1:]) or ".pth"
    folder = Path(torch.hub.get_dir()) / "checkpoints" / "timm"
    return WeightsSource(url=url, path=folder / f"{arch}.{tag}{suffix}")


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the default pretrained config of a timm model."""
    arch, tag = architecture(name)
    cfg = _pretrained_cfg(arch, tag)
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def min_image_size(name: str) -> int:
    """Smallest input side: the config's ``min_input_size``, else :data:`MIN_SIZE`."""
    arch, tag = architecture(name)
    cfg = _pretrained_cfg(arch, tag)
    if cfg is not None and cfg.min_input_size:
        return int(cfg.min_input_size[-1])
    return MIN_SIZE


def is_project_checkpoint(path: Path) -> bool:
    """Whether a file is a checkpoint this project wrote (loaded by ``load_weights_file``).

    Project checkpoints hold a :class:`~trainables.models.Classifier` state dict
    (``backbone.*`` keys), bare or under ``"model"`` next to ``"model_name"``.
    """
    import torch

    if path.suffix == ".safetensors":
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file: timm's loader reports it
        return False
    if not isinstance(obj, Mapping):
        return False
    state = obj.get("model") if isinstance(obj.get("model"), Mapping) else obj
    return "model_name" in obj or any(str(k).startswith("backbone.") for k in state)


@dataclass
class Built:
    """A timm backbone ready for :class:`~trainables.models.Classifier`.

    Attributes:
        backbone: The network with ``num_classes=0`` (pooled features ``[N, D]``).
        feature_dim: ``D`` (timm's ``head_hidden_size`` or ``num_features``).
        head_path: Where timm keeps the removed classifier (``head.fc``); weight files
            skip keys under it.
        normalization: Input ``(mean, std)`` for the weights loaded (scratch: ``None``).
        loaded: Whether pretrained weights are already in ``backbone``.
    """

    backbone: nn.Module
    feature_dim: int
    head_path: str | None
    normalization: tuple | None
    loaded: bool


def build(name: str, kind: str, value: Any, *, image_size: int, download: bool = True) -> Built:
    """Build the backbone of ``timm/<name>`` with the weights ``(kind, value)``.

    Args:
        name: ``timm/<architecture>[.<tag>]``.
        kind: ``none``, ``imagenet`` (``value``: a tag or ``None``) or ``file``
            (``value``: the path), as :func:`trainables.models._parse_weights` classifies
            the ``weights`` argument.
        image_size: Input side; passed to architectures with a fixed input size (ViTs),
            whose pretrained position embeddings timm resamples to it.
        download: Fetch a missing ImageNet file into the cache.

    Raises:
        WeightsNotFoundError: ImageNet weights neither cached nor downloadable.
        ValueError: Unknown name or tag, or a file timm cannot load into the model.
    """
    from trainables.models import ImagenetFile, WeightsNotFoundError, download_imagenet_file

    timm = _timm()
    check_name(name)
    arch, tag = architecture(name)
    kwargs: dict[str, Any] = {"num_classes": 0}
    cfg = _pretrained_cfg(arch, tag)
    if cfg is not None and cfg.fixed_input_size:
        kwargs["img_size"] = image_size
    file: Path | None = None
    if kind == "imagenet":
        source = weights_file(name, value)
        if not source.path.is_file():
            if not download:
                raise WeightsNotFoundError(_missing(name, source, None), **_where(source))
            try:
                download_imagenet_file(ImagenetFile(url=source.url, path=source.path))
            except (URLError, OSError, RuntimeError) as exc:
                raise WeightsNotFoundError(_missing(name, source, exc), **_where(source)) from exc
        file = source.path
        arch, tag = _weights_tag(name, value)
    elif kind == "file":
        file = Path(value)
        if not file.is_file():
            raise FileNotFoundError(f"weights file not found: {str(file)!r}")
        if is_project_checkpoint(file):
            file = None  # create_model loads it with load_weights_file
    full = f"{arch}.{tag}" if tag else arch
    if file is None:
        net = timm.create_model(full, pretrained=False, **kwargs)
    else:
        try:
            net = timm.create_model(
                full, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs
            )
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(
                f"{file} does not load into timm model {full!r} "
                f"({type(exc).__name__}: {first[:500]})"
            ) from exc
    head = (net.pretrained_cfg or {}).get("classifier")
    if isinstance(head, list | tuple):
        head = head[0] if head else None
    mean_std = None
    if file is not None:
        pc = net.pretrained_cfg or {}
        mean_std = (pc.get("mean", IMAGENET_MEAN), pc.get("std", IMAGENET_STD))
    # With num_classes=0 the network returns its pre-logits features: head_hidden_size wide
    # where the head has a hidden layer (MobileNetV3's conv_head), num_features otherwise.
    width = getattr(net, "head_hidden_size", None) or net.num_features
    return Built(net, int(width), head, mean_std, loaded=file is not None)


def _where(source: WeightsSource) -> dict:
    return {"url": source.url, "path": source.path}


def _missing(name: str, source: WeightsSource, exc: BaseException | None) -> str:
    why = f" and could not be downloaded ({type(exc).__name__}: {exc})" if exc else ""
    return (
        f"pretrained weights for {name} are not at {source.path}{why}. Download {source.url} "
        f"on a machine with internet and put it at {source.path} (or set TORCH_HOME to a "
        f"folder whose hub/checkpoints/timm/ holds {source.path.name}), or give the file as "
        "weights: path/to/file"
    )
