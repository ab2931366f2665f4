"""Augmentation presets, built on ``torchvision.transforms.v2``.

Transforms run on uint8 CHW tensors read from the decoded cache; conversion to float and
normalisation happen afterwards on whole batches (on the GPU when there is one), see
:class:`Normalize`.

Presets:

* ``none``: resize only (the cache already holds images at the input size).
* ``paper``: resize to 254 (for a 224 input; ``round(254 / 224 * size)`` in general), then
  ``RandomResizedCrop`` to the input size and a horizontal flip — paper 1, section 3.2.
* ``color``: ``paper`` plus colour jitter (paper 1, Fig. 4).
* ``aerial``: ``paper`` plus vertical flip and 90-degree rotations: aerial scenes have no "up".

Evaluation images of the cropping presets are centre-cropped from the resized image (the
usual resize-then-centre-crop protocol), so train and test see objects at the same scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

AUGMENTATIONS = ("none", "paper", "color", "aerial")
PAPER_RESIZE, PAPER_INPUT = 254, 224


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
        self.name = name
        self.crop = v2.RandomResizedCrop(image_size, antialias=True)
        self.jitter = (
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)
            if name == "color"
            else None
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images[None] if images.dim() == 3 else images
        n, c, (h, w) = len(batch), batch.shape[1], self.crop.size
        hflip = (torch.rand(n) < 0.5).tolist()
        aerial = self.name == "aerial"
        if aerial:
            vflip, turns = (torch.rand(n) < 0.5).tolist(), torch.randint(4, (n,)).tolist()
        out = torch.empty((n, h, w, c), dtype=batch.dtype).permute(0, 3, 1, 2)
        for i, image in enumerate(batch):
            image = self._crop(image)
            if hflip[i]:
                image = image.flip(-1)
            if self.jitter is not None:
                image = self.jitter(image)
            if aerial:
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
    if name == "none":
        return image_size
    return max(image_size, round(PAPER_RESIZE / PAPER_INPUT * image_size))


def train_transform(name: str, image_size: int) -> BatchAugment | None:
    """Random training transform of a batch (or one image), or ``None`` for ``none``."""
    check_augmentation(name)
    if name == "none":
        return None
    return BatchAugment(name, image_size)


def eval_transform(name: str, image_size: int) -> v2.Transform | None:
    """Deterministic transform of a batch for validation / test, or ``None`` if none is needed."""
    if stored_size(name, image_size) == image_size:
        return None
    return v2.CenterCrop(image_size)


class Normalize(nn.Module):
    """uint8 batch (N, 3, H, W) -> float, scaled to [0, 1] and normalised per channel."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        scale = 1 / (torch.tensor(std).view(1, -1, 1, 1) * 255)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", -torch.tensor(mean).view(1, -1, 1, 1) * 255 * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mul_(self.scale).add_(self.shift)
