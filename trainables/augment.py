"""Augmentation presets applied to batches, built on ``torchvision.transforms.v2``.

Transforms run on uint8 CHW tensors read from the decoded cache; conversion to float and
normalisation happen afterwards on whole batches (on the GPU when there is one), see
:class:`Normalize`.

The presets are data, declared once in :mod:`trainables.augment_presets` (no torch there:
validation, the CLIs and the reports read the names from it); this module applies them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from trainables.augment_presets import (  # noqa: F401 (re-exported)
    AUGMENTATIONS,
    PAPER_INPUT,
    PAPER_RESIZE,
    PRESETS,
    Augmentation,
    Preset,
    check_augmentation,
)


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
        vflip = (torch.rand(n) < 0.5).tolist() if preset.vflip else [False] * n
        turns = torch.randint(4, (n,)).tolist() if preset.rot90 else [0] * n
        out = torch.empty((n, h, w, c), dtype=batch.dtype).permute(0, 3, 1, 2)
        for i, image in enumerate(batch):
            image = self._crop(image) if preset.crop_scale else image
            if hflip[i]:
                image = image.flip(-1)
            if self.jitter is not None:
                image = self.jitter(image)
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
