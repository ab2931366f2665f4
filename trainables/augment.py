"""Augmentation presets, built on ``torchvision.transforms.v2``.

Transforms run on uint8 CHW tensors read from the decoded cache; conversion to float and
normalisation happen afterwards on whole batches (on the GPU when there is one), see
:class:`Normalize`.

A preset is data (:class:`Preset`, declared once in :data:`PRESETS`): adding one is a
change to this table (and its tests); validation, the CLIs and the reports read the names
from :data:`AUGMENTATIONS`.

* ``none``: the image at the input size, as stored.
* ``paper``: paper 1's protocol (section 3.2; the PyTorch transfer-learning recipe): the
  image resized to 254 px (for a 224 input; ``254 / 224`` of the input side in general),
  ``RandomResizedCrop`` to the input size with torchvision's default area range (8-100 %)
  and a horizontal flip; evaluation centre-crops the resized image.
* ``color``: ``paper`` plus colour jitter (paper 1, Fig. 4).
* ``aerial``: for overhead scenes, which have no "up" and whose content is the whole image:
  crops of 60-100 % of the area cut from a copy stored at twice the input side (so a crop
  is resampled down, not blown up from a few pixels), horizontal and vertical flips and
  90-degree rotations; evaluation resizes the whole image. README, "Augmentation and
  evaluation", gives the measurements behind these choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

PAPER_RESIZE, PAPER_INPUT = 254, 224


@dataclass(frozen=True)
class Preset:
    """One augmentation preset.

    Attributes:
        crop_scale: ``RandomResizedCrop``'s range of the crop's share of the image area;
            ``None``: no crop (the stored image is the input).
        store: Side of the cached copy over the input side (crops are cut from it).
        hflip: Random horizontal flips.
        dihedral: Random vertical flips and 90-degree rotations (with ``hflip``: all eight
            symmetries of the square).
        jitter: Colour jitter (brightness, contrast, saturation 0.3; hue 0.05).
        evaluate: How validation and test images reach the input size: ``resize`` the whole
            stored image, or ``center_crop`` it.
    """

    crop_scale: tuple[float, float] | None = None
    store: float = 1.0
    hflip: bool = False
    dihedral: bool = False
    jitter: bool = False
    evaluate: Literal["resize", "center_crop"] = "resize"


_PAPER = Preset(
    crop_scale=(0.08, 1.0), store=PAPER_RESIZE / PAPER_INPUT, hflip=True, evaluate="center_crop"
)
#: Every augmentation preset, by name.
PRESETS: dict[str, Preset] = {
    "none": Preset(),
    "paper": _PAPER,
    "color": Preset(**{**_PAPER.__dict__, "jitter": True}),
    "aerial": Preset(crop_scale=(0.6, 1.0), store=2.0, hflip=True, dihedral=True),
}
AUGMENTATIONS = tuple(PRESETS)


class BatchAugment:
    """A training preset applied to a uint8 batch ``(N, C, H, W)``, independently per image.

    Every image gets its own draw from torchvision's samplers (the crop box from
    ``v2.RandomResizedCrop.make_params``, a coin per flip, ``k`` per 90-degree rotation), so
    the distribution is that of the preset's transforms applied image by image with
    ``v2.Compose``. Two things make it about 2x faster than that at 224 px: each crop is
    made channels-last contiguous, the layout PyTorch's vectorised uint8 bilinear
    (antialiased) kernel works in, and the views are written into one channels-last batch
    (the layout the GPU step uses) instead of going through ``v2``'s per-call dispatch and
    an NCHW stack. A single ``(C, H, W)`` image works too.
    """

    def __init__(self, name: str, image_size: int) -> None:
        check_augmentation(name)
        self.name, self.preset = name, PRESETS[name]
        scale = self.preset.crop_scale or (1.0, 1.0)
        self.crop = v2.RandomResizedCrop(image_size, scale=scale, antialias=True)
        self.jitter = (
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)
            if self.preset.jitter
            else None
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images[None] if images.dim() == 3 else images
        n, c, (h, w) = len(batch), batch.shape[1], self.crop.size
        preset = self.preset
        hflip = (torch.rand(n) < 0.5).tolist() if preset.hflip else [False] * n
        if preset.dihedral:
            vflip, turns = (torch.rand(n) < 0.5).tolist(), torch.randint(4, (n,)).tolist()
        out = torch.empty((n, h, w, c), dtype=batch.dtype).permute(0, 3, 1, 2)
        for i, image in enumerate(batch):
            image = self._crop(image) if preset.crop_scale else image
            if hflip[i]:
                image = image.flip(-1)
            if self.jitter is not None:
                image = self.jitter(image)
            if preset.dihedral:
                image = image.flip(-2) if vflip[i] else image
                image = torch.rot90(image, turns[i], dims=(-2, -1)) if turns[i] else image
            out[i] = image
        return out[0] if images.dim() == 3 else out

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        """``RandomResizedCrop`` of one ``(C, H, W)`` image: bilinear, antialiased."""
        box = self.crop.make_params([image])
        top, left = box["top"], box["left"]
        crop = image[:, top : top + box["height"], left : left + box["width"]]
        crop = crop[None].contiguous(memory_format=torch.channels_last)
        return F.interpolate(crop, size=self.crop.size, mode="bilinear", antialias=True)[0]

    def __repr__(self) -> str:
        return f"BatchAugment({self.name!r}, {self.crop!r}, jitter={self.jitter!r})"


def check_augmentation(name: str) -> None:
    """Raise a ValueError naming the allowed presets for an unknown ``name``."""
    if name not in AUGMENTATIONS:
        from trainables.data.presets import close_matches

        raise ValueError(
            f"unknown augmentation {name!r}{close_matches(name, AUGMENTATIONS)} "
            f"Known: {', '.join(AUGMENTATIONS)}."
        )


def stored_size(name: str, image_size: int) -> int:
    """Side length the decoded cache must hold for preset ``name`` at ``image_size``."""
    check_augmentation(name)
    return max(image_size, round(PRESETS[name].store * image_size))


def train_transform(name: str, image_size: int) -> BatchAugment | None:
    """Random training transform of a batch (or one image), or ``None`` for ``none``."""
    check_augmentation(name)
    if PRESETS[name] == Preset():
        return None
    return BatchAugment(name, image_size)


def eval_transform(name: str, image_size: int) -> v2.Transform | None:
    """Deterministic transform of a batch for validation / test, or ``None`` if none is needed."""
    if stored_size(name, image_size) == image_size:
        return None
    if PRESETS[name].evaluate == "center_crop":
        return v2.CenterCrop(image_size)
    return v2.Resize(image_size, antialias=True)


class Normalize(nn.Module):
    """uint8 batch (N, 3, H, W) -> float, scaled to [0, 1] and normalised per channel."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        scale = 1 / (torch.tensor(std).view(1, -1, 1, 1) * 255)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", -torch.tensor(mean).view(1, -1, 1, 1) * 255 * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self.scale).add_(self.shift)
