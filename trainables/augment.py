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

from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

AUGMENTATIONS = ("none", "paper", "color", "aerial")
PAPER_RESIZE, PAPER_INPUT = 254, 224


class RandomRot90(v2.Transform):
    """Rotate by a random multiple of 90 degrees (exact: no interpolation)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return torch.rot90(inpt, params["k"], dims=(-2, -1))


class RandomResizedCrop(v2.RandomResizedCrop):
    """``v2.RandomResizedCrop`` that antialiases only when it shrinks the crop.

    Antialiasing changes nothing when a crop is enlarged (most random crops are smaller
    than the output), but its kernel is slower; skipping it there speeds up the loader.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        shrink = params["height"] > self.size[0] or params["width"] > self.size[1]
        return v2.functional.resized_crop(
            inpt, **params, size=self.size, interpolation=self.interpolation, antialias=shrink
        )


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


def train_transform(name: str, image_size: int) -> v2.Transform | None:
    """Per-image random transform for training, or ``None`` for ``none``."""
    check_augmentation(name)
    if name == "none":
        return None
    steps: list[v2.Transform] = [
        RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if name == "color":
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05))
    if name == "aerial":
        steps += [v2.RandomVerticalFlip(), RandomRot90()]
    return v2.Compose(steps)


def eval_transform(name: str, image_size: int) -> v2.Transform | None:
    """Deterministic transform for validation / test, or ``None`` when none is needed."""
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
