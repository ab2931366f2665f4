"""Augmentation presets as data: the one table of the presets and their names.

No torch here, so validation (:mod:`trainables.config`, :mod:`tuner.spec`), the CLIs and the
reports read the names without importing it; :mod:`trainables.augment` applies a preset to a
batch. Adding a preset is a row of :data:`PRESETS` (and its tests) when it combines the
operations :class:`Preset` has.

* ``none``: the image at the input size, as stored.
* ``paper``: paper 1's protocol (section 3.2; the PyTorch transfer-learning recipe): the
  image resized to 254 px (for a 224 input; ``254 / 224`` of the input side in general),
  ``RandomResizedCrop`` to the input size with torchvision's default area range (8-100 %)
  and a horizontal flip; evaluation centre-crops the resized image. (The papers are cited
  in :mod:`trainables.papers`.)
* ``color``: ``paper`` plus colour jitter (paper 1, Fig. 4).
* ``aerial``: for overhead scenes, which have no "up" and whose content is the whole image:
  crops of 60-100 % of the area cut from a copy stored at twice the input side (so a crop
  is resampled down, not blown up from a few pixels), horizontal and vertical flips and
  90-degree rotations; evaluation resizes the whole image. README, "Augmentation and
  evaluation", gives the measurements behind these choices.
* ``rotate90``: the stored image turned by a random multiple of 90 degrees and nothing
  else (no crop, no flip): the rotations alone, to weigh against ``aerial``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PAPER_RESIZE, PAPER_INPUT = 254, 224


@dataclass(frozen=True)
class Preset:
    """One augmentation preset: which random operations a training image goes through.

    Attributes:
        crop_scale: ``RandomResizedCrop``'s range of the crop's share of the image area;
            ``None``: no crop (the stored image is the input).
        store: Side of the cached copy over the input side (crops are cut from it).
        hflip: Random horizontal flips.
        vflip: Random vertical flips.
        rot90: Random rotations by a multiple of 90 degrees.
        dihedral: Shorthand for ``vflip`` and ``rot90`` (with ``hflip``: all eight
            symmetries of the square).
        jitter: Colour jitter (brightness, contrast, saturation 0.3; hue 0.05).
        evaluate: How validation and test images reach the input size: ``resize`` the whole
            stored image, or ``center_crop`` it.
    """

    crop_scale: tuple[float, float] | None = None
    store: float = 1.0
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    dihedral: bool = False
    jitter: bool = False
    evaluate: Literal["resize", "center_crop"] = "resize"

    def __post_init__(self) -> None:
        if self.dihedral:
            object.__setattr__(self, "vflip", True)
            object.__setattr__(self, "rot90", True)


_PAPER = Preset(
    crop_scale=(0.08, 1.0), store=PAPER_RESIZE / PAPER_INPUT, hflip=True, evaluate="center_crop"
)
#: Every augmentation preset, by name.
PRESETS: dict[str, Preset] = {
    "none": Preset(),
    "paper": _PAPER,
    "color": Preset(**{**_PAPER.__dict__, "jitter": True}),
    "aerial": Preset(crop_scale=(0.6, 1.0), store=2.0, hflip=True, dihedral=True),
    "rotate90": Preset(rot90=True),
}
#: The preset names, in table order.
AUGMENTATIONS = tuple(PRESETS)
#: A preset name, as the trial config and the spec validate it.
Augmentation = Literal[AUGMENTATIONS]


def check_augmentation(name: str) -> None:
    """Raise a ValueError naming the allowed presets for an unknown ``name``."""
    if name not in PRESETS:
        from trainables.data.presets import close_matches

        known = tuple(PRESETS)
        raise ValueError(
            f"unknown augmentation {name!r}{close_matches(name, known)} Known: {', '.join(known)}."
        )
