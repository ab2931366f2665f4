"""``tuner init DIR``: a starter spec for a folder of images, sized for this machine.

From a folder of class folders (``DIR/<class>/<image>``, a pre-split
``DIR/train|val|test/<class>/...``, or one of the presets' layouts, recognised by its class
names) to a running search in two commands::

    tuner init data/my-scenes            # writes my-scenes.yaml and says what it found
    tuner run my-scenes.yaml --laptop

The spec states what was found (classes, images, the images' native size) and a search
that fits the machine it finds (:func:`plan`): with a GPU, four ImageNet backbones at up to
224 px and 24 Optuna trials of 20 epochs; on CPUs only, two small backbones at up to
128 px and 8 trials of 10 epochs. Both compare frozen and fine-tuned ImageNet weights and
two augmentation presets, with ASHA stopping weak trials early. ``--no-pretrained`` trains
from scratch instead (no weights to download). Every choice is a plain spec key, commented,
to edit before running. An existing file is never overwritten (``--force`` does).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trainables.clihelp import HelpFormatter
from trainables.data.presets import PRESETS

#: Presets recognised by their class folders (``folder`` otherwise).
KNOWN_LAYOUTS = ("nwpu_resisc45", "ucmerced", "rsscn7")
#: Images opened to find the native size (headers only).
SIZE_SAMPLE = 60


@dataclass
class Found:
    """What a dataset folder holds."""

    root: Path
    preset: str
    classes: list[str]
    images: int
    presplit: bool
    native: int
    sizes: Counter


@dataclass
class Plan:
    """The search that fits a machine."""

    gpus: int
    cpus: int
    models: list[str]
    image_size: int
    epochs: int
    num_samples: int
    batch_sizes: list[int]
    grace_period: int


def inspect_folder(root: Path) -> Found:
    """Classes, image count, layout and native size of a dataset folder.

    Raises:
        FileNotFoundError: No folder, or no class folders with images.
        ValueError: Fewer than two classes.
    """
    from PIL import Image

    from trainables.data.folder import scan

    found = None
    for name in KNOWN_LAYOUTS:
        preset = PRESETS[name]
        try:
            s = scan(root, preset)
        except (FileNotFoundError, ValueError):
            continue
        if s.files and set(s.class_names) <= set(preset.classes or ()):
            found = (name, s)
            break
    if found is None:
        found = ("folder", scan(root, PRESETS["folder"]))
    preset, s = found
    if len(s.class_names) < 2:
        raise ValueError(
            f"{root} holds {len(s.class_names)} class folder(s) with images; a classification "
            "search needs at least 2 (one folder per class: DIR/<class>/<image>)"
        )
    step = max(1, len(s.files) // SIZE_SAMPLE)
    sizes: Counter = Counter()
    for rel in s.files[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(s.root / rel) as im:
                sizes[im.size] += 1
        except OSError:
            continue
    width, height = sizes.most_common(1)[0][0] if sizes else (224, 224)
    return Found(
        root=root.resolve(),
        preset=preset,
        classes=list(s.class_names),
        images=len(s.files),
        presplit=s.presplit,
        native=min(width, height),
        sizes=sizes,
    )


def machine() -> tuple[int, int]:
    """``(gpus, cpus)`` of this machine (CUDA devices, usable cores)."""
    import torch

    return torch.cuda.device_count(), len(os.sched_getaffinity(0))


def plan(native: int, gpus: int, cpus: int) -> Plan:
    """A default search for a machine and the images' native size."""
    if gpus:
        return Plan(
            gpus=gpus,
            cpus=cpus,
            models=["resnet18", "resnet50", "efficientnet_b0", "convnext_tiny"],
            image_size=max(32, min(native, 224)),
            epochs=20,
            num_samples=24,
            batch_sizes=[32, 64],
            grace_period=2,
        )
    return Plan(
        gpus=0,
        cpus=cpus,
        models=["resnet18", "mobilenet_v3_small"],
        image_size=max(32, min(native, 128)),
        epochs=10,
        num_samples=8,
        batch_sizes=[32],
        grace_period=1,
    )


def experiment_name(root: Path) -> str:
    """A valid experiment name from a folder name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", root.resolve().name).strip("._-") or "scenes"
    return name[:100].replace("..", "_")


def _yaml_list(values: list) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def spec_text(found: Found, p: Plan, name: str, *, pretrained: bool = True) -> str:
    """The starter spec (YAML with comments)."""
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in found.sizes.most_common(3))
    machine_text = f"{p.gpus} GPU(s), {p.cpus} CPUs" if p.gpus else f"no GPU, {p.cpus} CPUs"
    if pretrained:
        transfer = "  transfer: [frozen, finetune]     # ImageNet backbone fixed, or trained too\n"
        transfer += "  weights: imagenet                # downloaded once (torch hub cache)\n"
    else:
        transfer = "  transfer: scratch                # random init (tuner init --no-pretrained)\n"
    split = (
        "  # the folder is pre-split: its test split is kept, train/val split 70/10 of the rest\n"
        if found.presplit
        else ""
    )
    batch = _yaml_list(p.batch_sizes) if len(p.batch_sizes) > 1 else str(p.batch_sizes[0])
    return (
        f"# Written by `tuner init {found.root}` for {found.images} images in "
        f"{len(found.classes)} classes\n"
        f"# (native size {found.native} px; most common sizes: {sizes}), on a machine with "
        f"{machine_text}.\n"
        "# Edit anything below, then: tuner run THIS_FILE --laptop\n"
        f"experiment: {name}\n"
        f"description: starter search for {found.root.name}\n"
        "dataset:\n"
        f"  preset: {found.preset}\n"
        f"  root: {found.root}\n"
        f"  image_size: {p.image_size}               # network input (native {found.native})\n"
        f"{split}"
        "  split: {train: 0.7, val: 0.1, test: 0.2, seed: 0}\n"
        "factors:\n"
        f"  model: {_yaml_list(p.models)}\n"
        f"{transfer}"
        "  augmentation: [none, aerial]     # aerial: crops, flips, 90-degree turns\n"
        "hyperparameters:\n"
        "  optimizer: adam\n"
        "  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
        f"  batch_size: {batch}\n"
        f"  epochs: {p.epochs}\n"
        "search:\n"
        "  algorithm: optuna               # or grid (every combination of listed values)\n"
        f"  num_samples: {p.num_samples}\n"
        "  metric: val_acc\n"
        "  # time_budget: 2h               # stop launching trials after this long\n"
        "scheduler: {type: asha, grace_period: " + f"{p.grace_period}" + ", reduction_factor: 2}\n"
        '# tracking: [tensorboard]         # also mlflow, wandb (pip install -e ".[tracking]")\n'
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner init``."""
    p = argparse.ArgumentParser(
        prog="tuner init",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("folder", help="dataset folder: <folder>/<class>/<image>")
    p.add_argument("--out", help="spec file to write (default: <experiment>.yaml here)")
    p.add_argument("--name", help="experiment name (default: from the folder's name)")
    p.add_argument(
        "--no-pretrained",
        action="store_true",
        help="train from scratch (no ImageNet weights to download)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing spec file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Write the starter spec; exit status 2 on a bad folder or an existing file."""
    args = build_parser().parse_args(argv)
    from tuner.spec import SpecError, check_name, expand, parse, validate

    root = Path(args.folder).expanduser()
    try:
        found = inspect_folder(root)
        name = args.name or experiment_name(root)
        check_name(name)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(f"{name}.yaml")
    if out.exists() and not args.force:
        print(
            f"error: {out} exists; pass --force to overwrite it or --out NEW.yaml", file=sys.stderr
        )
        return 2
    gpus, cpus = machine()
    p = plan(found.native, gpus, cpus)
    text = spec_text(found, p, name, pretrained=not args.no_pretrained)
    try:
        validate(expand(parse(text, str(out))))
    except SpecError as err:  # the folder passed the scan, so this is a bug here
        print(f"error: the starter spec does not validate: {err}", file=sys.stderr)
        return 2
    out.write_text(text)
    layout = "" if found.preset == "folder" else f" (the {found.preset} layout)"
    print(
        f"{found.root}: {len(found.classes)} classes{layout}, {found.images} images, native "
        f"size {found.native} px"
    )
    machine_text = f"{gpus} GPU(s), {cpus} CPUs" if gpus else f"no GPU, {cpus} CPUs"
    print(
        f"machine: {machine_text} -> {len(p.models)} models ({', '.join(p.models)}) at "
        f"{p.image_size} px, {p.num_samples} Optuna trials of up to {p.epochs} epochs, ASHA"
    )
    print(f"wrote {out}; next:\n  tuner run {out} --laptop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
