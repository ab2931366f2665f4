"""Paper 1's pictures from an experiment's data and best checkpoint.

* Figs. 4–5: a few dataset images and random views of them under each augmentation
  preset (:func:`augmentation_png`).
* Figs. 6–7: feature maps of an early and a late convolution of the best model for one
  test image (:func:`feature_maps_png`).

Both need files that may be gone or elsewhere (the dataset root, the trial's checkpoint);
they raise :class:`FigureUnavailable` with the reason, which the report prints instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from trainables.augment import AUGMENTATIONS, Normalize, stored_size, train_transform
from trainables.config import DataConfig
from trainables.data.folder import read_rgb, resolve_root
from trainables.data.presets import get_preset
from tuner.report.plots import to_png

#: Presets always shown (paper 1's Fig. 4 is colour, Fig. 5 flip and crop), after the
#: spec's own, even if the search only used ``none``.
SHOWN_PRESETS = ("paper", "color", "aerial")
#: Smallest side (pixels) of the late feature map shown.
MIN_MAP = 4


class FigureUnavailable(RuntimeError):
    """A figure cannot be drawn; the message says why (missing dataset, checkpoint, ...)."""


# ------------------------------------------------------------------------------- the data
def dataset_root(data: DataConfig, exp_dir: Path) -> Path:
    """The folder the manifest's file paths are relative to.

    A relative ``root`` (the demo's ``data/synthetic-target``) is relative to where the
    search ran, which the results do not record: the current directory, the results
    root's parent and the results root are tried in that order.

    Raises:
        FigureUnavailable: No candidate folder exists.
    """
    root = Path(os.path.expandvars(data.root)).expanduser()
    exp_dir = Path(exp_dir).resolve()
    candidates = (
        [root]
        if root.is_absolute()
        else [Path.cwd() / root, exp_dir.parent.parent / root, exp_dir.parent / root]
    )
    preset = get_preset(data.preset)
    for candidate in candidates:
        if candidate.is_dir():
            return resolve_root(candidate, preset)
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise FigureUnavailable(
        f"the dataset root {data.root!r} was not found (tried {tried}); run the report "
        "from the folder the search ran in, or where the dataset is"
    )


def sample_files(manifest: pd.DataFrame, n: int = 3, split: str = "test") -> pd.DataFrame:
    """``n`` images of distinct classes spread over the class list (first file of each).

    Deterministic: classes at evenly spaced positions of the label order, the
    alphabetically first file of each in ``split`` (any split if ``split`` has none).
    """
    pool = manifest[manifest["split"] == split]
    pool = pool if len(pool) else manifest
    labels = sorted(pool["label"].unique())
    if not labels:
        raise FigureUnavailable("the manifest lists no images")
    picks = [labels[round(i)] for i in np.linspace(0, len(labels) - 1, min(n, len(labels)))]
    rows = [pool[pool["label"] == lab].sort_values("file").iloc[0] for lab in picks]
    return pd.DataFrame(rows).reset_index(drop=True)


def _read(root: Path, file: str, size: int) -> torch.Tensor:
    path = root / file
    if not path.is_file():
        raise FigureUnavailable(f"image {str(path)!r} of the manifest does not exist")
    try:
        image = read_rgb(path, size)
    except OSError as err:
        raise FigureUnavailable(f"cannot read {str(path)!r}: {err}") from None
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


def _show(ax, chw: torch.Tensor) -> None:
    ax.imshow(chw.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def presets_to_show(spec_presets: Sequence[str]) -> list[str]:
    """The spec's augmentation presets (``none`` dropped), then :data:`SHOWN_PRESETS`."""
    wanted = [p for p in spec_presets if p in AUGMENTATIONS and p != "none"]
    return list(dict.fromkeys([*wanted, *SHOWN_PRESETS]))


def augmentation_png(
    data: DataConfig,
    root: Path,
    manifest: pd.DataFrame,
    preset: str,
    n_images: int = 3,
    n_views: int = 4,
    seed: int = 0,
) -> bytes:
    """Paper 1's Figs. 4–5: each sample image and ``n_views`` random training views.

    The original is shown as the decoded cache holds it (``stored_size``: e.g. 36 px for a
    32 px input under the cropping presets); each view is one draw of the preset's
    training transform, seeded by ``seed`` so the figure is reproducible.
    """
    size = stored_size(preset, data.image_size)
    transform = train_transform(preset, data.image_size)
    samples = sample_files(manifest, n_images)
    fig = Figure(figsize=(1.7 * (n_views + 1), 1.85 * len(samples) + 0.4))
    axes = fig.subplots(len(samples), n_views + 1, squeeze=False)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        for i, row in samples.iterrows():
            image = _read(root, row["file"], size)
            _show(axes[i][0], image)
            axes[i][0].set_ylabel(str(row["class"]), fontsize=9)
            for j in range(1, n_views + 1):
                view = transform(image) if transform is not None else image
                _show(axes[i][j], view)
    finally:
        torch.set_rng_state(generator_state)
    axes[0][0].set_title(f"original ({size} px)", fontsize=9)
    for j in range(1, n_views + 1):
        axes[0][j].set_title(f"view {j} ({data.image_size} px)", fontsize=9)
    fig.suptitle(f"augmentation preset '{preset}'", fontsize=11)
    return to_png(fig)


# --------------------------------------------------------------------------- feature maps
def _field(row: pd.Series, key: str, default: str) -> str:
    """A text cell of a trial row, ``default`` where it is missing or null."""
    value = row.get(key)
    return default if value is None or pd.isna(value) else str(value)


def checkpoint_file(checkpoint: str | None) -> Path:
    """``<checkpoint>/best.pt`` of a trial row, or :class:`FigureUnavailable` why not."""
    if checkpoint is None or pd.isna(checkpoint) or not str(checkpoint):
        raise FigureUnavailable("the trial recorded no checkpoint")
    if "://" in str(checkpoint):
        raise FigureUnavailable(f"the checkpoint {checkpoint!r} is not on a local disk")
    path = Path(str(checkpoint)) / "best.pt"
    if not path.is_file():
        raise FigureUnavailable(f"{str(path)!r} does not exist (checkpoint moved or deleted?)")
    return path


def conv_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Conv2d]]:
    """Every ``Conv2d`` of ``module`` in definition order, with its dotted name."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)]


def feature_maps(
    model: torch.nn.Module, image: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Outputs ``[C, H, W]`` of the named sub-modules for one normalised image ``[3, H, W]``."""
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach()[0])
        )
        for name in layers
    ]
    try:
        model.eval()
        with torch.no_grad():
            model(image.unsqueeze(0))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def pick_layers(names: Sequence[str], shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """The first convolution and the last one whose output is at least
    :data:`MIN_MAP` pixels square (a 1 x 1 or 2 x 2 map of a small input shows nothing);
    the last convolution if none is that large."""
    large = [n for n in names if min(shapes[n][-2:]) >= MIN_MAP]
    return names[0], (large[-1] if large else names[-1])


def strongest_channels(maps: torch.Tensor, k: int = 8) -> list[int]:
    """The ``k`` channels with the largest spatial variance (flat maps show nothing)."""
    variance = maps.flatten(1).var(dim=1, unbiased=False)
    return variance.argsort(descending=True)[:k].sort().values.tolist()


def feature_maps_png(
    trial: pd.Series, data: DataConfig, root: Path, manifest: pd.DataFrame, channels: int = 8
) -> bytes:
    """Paper 1's Figs. 6–7: an early and a late ``Conv2d`` of the trial's backbone.

    The trial's best-validation weights (``<checkpoint>/best.pt``) are loaded with
    :func:`~trainables.models.create_model`; one test image (resized to the input size,
    normalised as in training) goes through the backbone with a hook on every convolution,
    and ``channels`` maps (those with the largest spatial variance, each with its own colour
    scale) are shown of the first convolution and of the last one with a map of at least
    :data:`MIN_MAP` pixels (:func:`pick_layers`; at 224 px input that is the last one).
    """
    from trainables.models import create_model

    path = checkpoint_file(trial.get("checkpoint"))
    name = str(trial["model"])
    classes = trial.get("class_names")
    num_classes = len(classes) if classes is not None and len(classes) else None
    num_classes = num_classes or int(manifest["label"].nunique())
    try:
        model = create_model(
            name,
            num_classes,
            head=_field(trial, "head", "linear"),
            transfer="finetune",
            weights=path,
            image_size=data.image_size,
        )
    except ValueError as err:
        raise FigureUnavailable(f"cannot rebuild {name!r} from {str(path)!r}: {err}") from None
    convs = [n for n, _ in conv_layers(model.backbone)]
    if not convs:
        raise FigureUnavailable(f"model {name!r} has no convolution layer")
    sample = sample_files(manifest, 1).iloc[0]
    image = _read(root, sample["file"], data.image_size)
    x = Normalize(*model.normalization)(image.unsqueeze(0))[0]
    maps = feature_maps(model.backbone, x, convs)
    early, late = pick_layers(convs, {n: tuple(m.shape) for n, m in maps.items()})
    fig = Figure(figsize=(2.4 + 1.3 * channels, 3.4))
    grid = fig.add_gridspec(2, channels + 1, width_ratios=[2.2] + [1] * channels)
    ax = fig.add_subplot(grid[:, 0])
    _show(ax, image)
    ax.set_title(f"input: {sample['class']}", fontsize=9)
    for r, (layer, kind) in enumerate(((early, "early"), (late, "late"))):
        out = maps[layer]
        picked = strongest_channels(out, channels)
        for j in range(channels):
            ax = fig.add_subplot(grid[r, j + 1])
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(picked):
                ax.imshow(out[picked[j]].numpy(), cmap="viridis", interpolation="nearest")
                ax.set_xlabel(f"ch {picked[j]}", fontsize=7, labelpad=2)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_title(
                    f"{kind} convolution backbone.{layer}: {out.shape[0]} channels of "
                    f"{out.shape[1]}×{out.shape[2]}",
                    loc="left",
                    fontsize=8,
                )
    fig.suptitle(
        f"feature maps of trial {trial['trial_id']} ({name}, {_field(trial, 'transfer', '?')})",
        fontsize=10,
    )
    return to_png(fig)
