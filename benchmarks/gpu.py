"""The GPU path in one script: fine-tune throughput (P5) and trials packed on one GPU (P6).

* **P5**: resnet50 at 224 px fine-tuned through the real trainable and data path
  (:class:`~trainables.classify.Trial`: decoded cache, ``CachedImages`` batches, bf16
  autocast, channels-last), in images per second of its training steps, against the same
  model's training steps on synthetic input already on the GPU (the ceiling of the data
  path). Targets: ratio >= 0.9, >= 2,500 img/s on an H100/H200.
* **P6**: 1, 2 and 4 small trials (mobilenet_v2, resnet18 at 224 px) packed on one GPU
  through Ray fractional GPUs (``num_gpus = 1/k``); the aggregate images per second of the
  packed trials against one trial alone (target >= 2x for 4) and the peak GPU memory of a
  trial (``torch.cuda.max_memory_allocated``). The trials wait for each other after their
  set-up, so their training overlaps; a trial that runs out of memory is run again with
  twice the share (fewer neighbours, :mod:`tuner.gpu_memory`) and the line says so.

The images are written here (JPEG noise with a colour per class, 256 px): throughput does
not depend on their content, and the device needs no dataset. Weights are random
checkpoints of the torchvision architectures (no download). One line per figure; the
whole run stays under ``--budget-s`` (default 420 s: what is left is skipped, saying so).
On a machine without CUDA it prints one line and exits 0. ``--smoke`` runs every step on
the CPU at toy sizes (no Ray unless ``--ray``), for the test suite.

    python benchmarks/gpu.py
    python benchmarks/gpu.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from trainables.classify import Trial  # noqa: E402
from trainables.config import DataConfig, SplitConfig, TrialConfig  # noqa: E402
from trainables.data.dataset import prepare  # noqa: E402
from trainables.models import create_model, loss_function  # noqa: E402
from tuner.gpu_memory import gpu_share, is_out_of_memory, next_share  # noqa: E402


@dataclass
class Sizes:
    """What one run measures (full GPU run or ``--smoke``)."""

    classes: int = 12
    per_class: int = 300
    image_size: int = 224
    p5_model: str = "resnet50"
    p5_batch: int = 256
    p5_epochs: int = 4
    synthetic_steps: int = 30
    p6_models: tuple[str, ...] = ("mobilenet_v2", "resnet18")
    p6_batch: int = 64
    p6_epochs: int = 3
    packs: tuple[int, ...] = (1, 2, 4)
    threads: int = 4


SMOKE = Sizes(
    classes=3,
    per_class=12,
    image_size=32,
    p5_model="tiny_cnn",
    p5_batch=8,
    p5_epochs=2,
    synthetic_steps=2,
    p6_models=("tiny_cnn",),
    p6_batch=8,
    p6_epochs=2,
    packs=(1, 2),
    threads=1,
)


def write_images(root: Path, classes: int, per_class: int, size: int = 256) -> Path:
    """``root/c<k>/<i>.jpg``: noise around one colour per class (seeded)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"c{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(40, 216, size=3)
        for i in range(per_class):
            noise = rng.normal(0, 40, size=(size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def random_weights(model: str, folder: Path) -> str:
    """A random checkpoint of an architecture (stands in for pretrained weights)."""
    import torchvision

    from trainables.models import PROJECT_MODELS

    path = folder / f"{model}-random.pth"
    if not path.is_file():
        torch.manual_seed(0)
        if model in PROJECT_MODELS:
            net = create_model(model, 2, transfer="scratch")
        else:
            net = torchvision.models.get_model(model)
        torch.save(net.state_dict(), path)
    return str(path)


def trial_images_per_s(history: list[dict]) -> float:
    """Mean training img/s of the epochs after the first (which pays warm-up)."""
    rates = [m["images_per_s"] for m in history]
    return statistics.mean(rates[1:] or rates)


def real_images_per_s(cfg: TrialConfig) -> float:
    """Fine-tune ``cfg`` through the trainable; its training img/s."""
    trial = Trial(cfg, log=lambda _: None)
    trial.fit()
    return trial_images_per_s(trial.history)


def synthetic_images_per_s(
    model_name: str, num_classes: int, batch: int, size: int, steps: int
) -> float:
    """Training img/s of the same step as :class:`Trial` on random input already on the device."""
    from trainables.augment import Normalize

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model(model_name, num_classes, transfer="scratch", image_size=size)
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last) if cuda else model
    normalize = Normalize(*model.normalization).to(device)
    loss_fn = loss_function("linear")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    model.train()

    def step() -> None:
        inputs = normalize(x)
        inputs = inputs.contiguous(memory_format=torch.channels_last) if cuda else inputs
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(inputs).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(2, steps // 5)):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def packed_trial(cfg_json: dict, barrier_dir: str | None, neighbours: int) -> dict:
    """One packed trial (a Ray task): set up, wait for its neighbours, train; img/s, peak."""
    trial = Trial(TrialConfig.model_validate(cfg_json), log=lambda _: None)
    if barrier_dir is not None:
        wait_for_neighbours(Path(barrier_dir), neighbours)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trial.fit()
    peak = int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0
    return {"images_per_s": trial_images_per_s(trial.history), "peak_bytes": peak}


def wait_for_neighbours(folder: Path, count: int, timeout: float = 120.0) -> None:
    """A start line on one node: touch a file, wait until ``count`` files are there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}-{time.time_ns()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)


Runner = Callable[[list[float]], list[dict | BaseException]]
"""Runs trials at the given GPU shares at once; a result dict or the error per trial."""


@dataclass
class Packed:
    """The outcome of :func:`run_packed`."""

    results: list[dict]
    retried: dict[float, int] = field(default_factory=dict)


def run_packed(k: int, runner: Runner) -> Packed:
    """Run ``k`` trials packed on one GPU; those out of memory again with fewer neighbours.

    Raises:
        RuntimeError: A trial failed for another reason, or ran out of memory with a whole
            GPU to itself.
    """
    done: list[dict] = []
    retried: dict[float, int] = {}
    pending, share = k, gpu_share(k)
    while pending:
        outcome = runner([share] * pending)
        failed = [r for r in outcome if isinstance(r, BaseException)]
        done += [r for r in outcome if not isinstance(r, BaseException)]
        other = [e for e in failed if not is_out_of_memory(e)]
        if other:
            raise RuntimeError(f"a packed trial failed: {other[0]!r}") from other[0]
        if failed:
            new = next_share(share)
            if new is None:
                raise RuntimeError(f"a trial runs out of memory on a whole GPU: {failed[0]!r}")
            retried[new] = len(failed)
            share = new
        pending = len(failed)
    return Packed(done, retried)


def inline_runner(cfg: TrialConfig) -> Runner:
    """Trials one after another in this process (``--smoke`` without Ray)."""

    def run(shares: list[float]) -> list[dict | BaseException]:
        out: list[dict | BaseException] = []
        for _ in shares:
            try:
                out.append(packed_trial(cfg.model_dump(mode="json"), None, 1))
            except Exception as err:  # noqa: BLE001 - reported per trial, like Ray's
                out.append(err)
        return out

    return run


def ray_runner(cfg: TrialConfig, work: Path, cpus: int) -> Runner:
    """Trials at once as Ray tasks with fractional GPUs (``num_gpus = share``)."""
    import ray

    def run(shares: list[float]) -> list[dict | BaseException]:
        barrier = tempfile.mkdtemp(dir=work, prefix="start-")
        refs = [
            ray.remote(num_gpus=share if torch.cuda.is_available() else 0, num_cpus=cpus)(
                packed_trial
            ).remote(cfg.model_dump(mode="json"), barrier, len(shares))
            for share in shares
        ]
        out: list[dict | BaseException] = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except Exception as err:  # noqa: BLE001 - a RayTaskError carries the cause's text
                out.append(err)
        return out

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU")
    p.add_argument("--ray", action="store_true", help="with --smoke: pack through Ray too")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip what would run past it")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu benchmark: no CUDA device on this machine; nothing measured (run it on a GPU)")
        return 0
    start = time.monotonic()
    sizes = SMOKE if args.smoke else Sizes()
    use_ray = args.ray or not args.smoke
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke)"
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        work = Path(tmp)
        root = write_images(work / "images", sizes.classes, sizes.per_class)
        data = DataConfig(
            preset="folder",
            root=str(root),
            image_size=sizes.image_size,
            split=SplitConfig(train=0.9, val=0.05, test=0.05),
            cache_dir=str(work / "cache"),
        )
        prepare(data, "none")  # the decoded cache, before any clock
        print(
            f"device {device}; {sizes.classes * sizes.per_class} images decoded at "
            f"{sizes.image_size} px in {time.monotonic() - start:.0f} s",
            flush=True,
        )

        def trial_cfg(model: str, batch: int, epochs: int) -> TrialConfig:
            return TrialConfig(
                data=data,
                model=model,
                transfer="finetune",
                weights=random_weights(model, work),
                augmentation="none",
                batch_size=batch,
                epochs=epochs,
                lr=1e-4,
                num_threads=sizes.threads,
            )

        real = real_images_per_s(trial_cfg(sizes.p5_model, sizes.p5_batch, sizes.p5_epochs))
        synthetic = synthetic_images_per_s(
            sizes.p5_model,
            sizes.classes,
            sizes.p5_batch,
            sizes.image_size,
            sizes.synthetic_steps,
        )
        how = "bf16 autocast, channels-last" if torch.cuda.is_available() else "fp32 on the CPU"
        print(
            f"P5 fine-tune {sizes.p5_model} {sizes.image_size} px, batch {sizes.p5_batch}, "
            f"{how}: real data path {real:,.0f} img/s vs synthetic input "
            f"{synthetic:,.0f} img/s, ratio {real / synthetic:.2f} (targets >= 0.9 and "
            ">= 2,500 img/s on an H100/H200)",
            flush=True,
        )
        if use_ray:
            import ray

            ray.init(
                address="local",
                num_cpus=max(sizes.packs) * sizes.threads,
                num_gpus=1 if torch.cuda.is_available() else 0,
                include_dashboard=False,
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
            )
        try:
            for model in sizes.p6_models:
                cfg = trial_cfg(model, sizes.p6_batch, sizes.p6_epochs)
                runner = ray_runner(cfg, work, sizes.threads) if use_ray else inline_runner(cfg)
                alone = None
                for k in sizes.packs:
                    elapsed = time.monotonic() - start
                    if elapsed > args.budget_s:
                        print(f"P6 {model} x{k}: skipped, {elapsed:.0f} s past the budget")
                        continue
                    packed = run_packed(k, runner)
                    total = sum(r["images_per_s"] for r in packed.results)
                    alone = alone or total
                    peak = max(r["peak_bytes"] for r in packed.results) / 2**30
                    retried = (
                        f"; out of memory, retried: {json.dumps(packed.retried)}"
                        if packed.retried
                        else ""
                    )
                    print(
                        f"P6 {model} {sizes.image_size} px batch {sizes.p6_batch}, {k} packed "
                        f"({gpu_share(k):g} GPU each): aggregate {total:,.0f} img/s, "
                        f"{total / alone:.2f}x one alone (target >= 2x for 4); peak GPU "
                        f"memory per trial {peak:.2f} GiB{retried}",
                        flush=True,
                    )
        finally:
            if use_ray:
                ray.shutdown()
    print(f"gpu benchmark: {time.monotonic() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
