"""Wall time of ``--smoke --laptop`` for each shipped paper spec, on generated data.

For each spec the script writes a dataset in the preset's real layout and file format
(``tests/fixtures.py``: NWPU-RESISC45 jpg folders, UC-Merced ``Images/`` tifs with odd sizes,
RSSCN7's letter-prefixed folders), then times ``python -m tuner.run SPEC --smoke --laptop``
as a fresh process (Ray start-up, data cache, every trial, the ranking and the report) and
checks that it exited 0 and wrote both tables and the report.

ImageNet weights cannot be downloaded on a machine without internet, so by default every
ImageNet file the spec needs is stood in for by a randomly initialised state_dict saved
under torchvision's file name in a temporary ``TORCH_HOME`` (the cost does not depend on the
values): the smoke run then has every cell of the spec, frozen and fine-tuned ones included.
``--weights none`` runs the specs with ``factors.weights=none`` and
``factors.transfer=scratch`` instead (fewer cells, no weights).

    python benchmarks/smoke.py [--specs resnet_nwpu mobilenet_ucmerced rsscn7] [--weights none]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures writes the datasets in their real layouts

from tests.fixtures import make_nwpu, make_rsscn7, make_ucmerced  # noqa: E402

#: Spec -> (dataset writer, images per class, image side): enough images for every split.
DATASETS = {
    "resnet_nwpu": (
        lambda root, n, size: make_nwpu(
            root,
            classes=("airplane", "bridge", "palace", "commercial_area", "stadium"),
            per_class=n,
            size=size,
        ),
        10,
        256,
    ),
    "mobilenet_ucmerced": (
        lambda root, n, size: make_ucmerced(
            root,
            classes=("agricultural", "airplane", "beach", "forest", "river"),
            per_class=n,
            size=size,
        ),
        10,
        256,
    ),
    "rsscn7": (lambda root, n, size: make_rsscn7(root, per_class=n, size=size), 10, 400),
}


def stand_in_weights(spec_path: Path, torch_home: Path, overrides: list[str]) -> list[Path]:
    """Write a randomly initialised state_dict for every ImageNet file the spec reads."""
    os.environ["TORCH_HOME"] = str(torch_home)
    import torch
    from torchvision.models import get_model

    from trainables.models import imagenet_file
    from tuner.preflight import weight_pairs
    from tuner.spec import load

    written = []
    for model, weights in weight_pairs(load(spec_path, overrides, check_data=False)):
        file = imagenet_file(model, weights)
        if file is None or file.path.is_file():
            continue
        file.path.parent.mkdir(parents=True, exist_ok=True)
        # As torchvision's own files: googlenet / inception_v3 with their aux classifiers.
        kwargs = {"init_weights": True} if model in ("googlenet", "inception_v3") else {}
        torch.save(get_model(model, weights=None, **kwargs).state_dict(), file.path)
        written.append(file.path)
    return written


def run_smoke(name: str, tmp: Path, weights: str, cpus: int) -> tuple[float, str]:
    """Generate the data, time the smoke run; returns (seconds, its output)."""
    writer, per_class, size = DATASETS[name]
    data = writer(tmp / "data" / name, per_class, size)
    spec = ROOT / "search_spaces" / f"{name}.yaml"
    overrides = [f"dataset.root={data}"]
    if weights == "none":
        overrides += ["factors.weights=none", "factors.transfer=scratch"]
    else:
        stand_in_weights(spec, tmp / "torch", overrides)
    env = {
        **os.environ,
        "TORCH_HOME": str(tmp / "torch"),
        "TUNER_CACHE": str(tmp / "cache"),
    }
    cmd = [sys.executable, "-m", "tuner.run", str(spec), "--smoke", "--laptop"]
    cmd += ["--num-cpus", str(cpus), "--results", str(tmp / "results")]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    exp = tmp / "results" / f"{name}_smoke"
    wrote = (
        all(any((exp / sub).glob("*.parquet")) for sub in ("trials", "epochs"))
        and (exp / "report" / "report.html").is_file()
    )
    if proc.returncode != 0 or not wrote:
        raise SystemExit(f"{name}: smoke run failed (exit {proc.returncode}):\n{out[-4000:]}")
    return seconds, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--specs", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--weights", choices=("stand-in", "none"), default="stand-in")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"--smoke --laptop on {args.cpus} CPUs, weights {args.weights}; load average {load}")
    with tempfile.TemporaryDirectory(prefix="tuner-smoke-") as tmp:
        for name in args.specs:
            seconds, out = run_smoke(name, Path(tmp), args.weights, args.cpus)
            grid = next((line for line in out.splitlines() if "search: " in line), "").strip()
            done = next((line for line in out.splitlines() if line.startswith("trials: ")), "")
            print(f"{name:<20} {seconds:6.1f} s  {grid.split(' -> ')[-1]}  ({done})")
    print(f"load average at the end {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
