"""What a search shares is built once however many processes ask at once (issue 11, §2)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from trainables.config import DataConfig

DATA = {
    "preset": "synthetic",
    "classes": ["farmland", "water", "forest"],
    "synthetic": {"per_class": 6, "size": 16},
    "image_size": 16,
}


def _build_cache(root: str, barrier, log: str) -> None:
    """Child: count decodes, wait for the other, then open (or build) the decoded cache."""
    from trainables.data import cache
    from trainables.data.dataset import prepare

    original = cache.DecodedCache._write

    def counted(*args, **kwargs):
        with open(log, "a") as f:
            f.write("decoded\n")
        return original(*args, **kwargs)

    cache.DecodedCache._write = staticmethod(counted)
    data = DataConfig(root=f"{root}/images", cache_dir=f"{root}/cache", **DATA)
    barrier.wait()
    prepare(data)


def _pretrain(root: str, barrier, log: str) -> None:
    """Child: wait for the other, then run the pretraining stage of the same spec."""
    from tuner.pretrain import pretrain_all
    from tuner.spec import validate

    data = {**DATA, "root": f"{root}/images", "cache_dir": f"{root}/cache"}
    spec = validate(
        {
            "experiment": "once",
            "dataset": data,
            "pretrain": {"dataset": data, "epochs": 1, "batch_size": 8},
            "factors": {"model": "tiny_cnn", "transfer": "finetune", "weights": "pretrain"},
        },
        check_data=False,
    )
    barrier.wait()
    with open(log, "a") as f:
        pretrain_all(spec, f"{root}/results", log=lambda s: f.write(s + "\n"))


def _twice_at_once(target, root: Path, log: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=target, args=(str(root), barrier, str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(1200)
        assert p.exitcode == 0


def test_two_processes_decode_a_dataset_once(tmp_path):
    from trainables.data.dataset import scan_config

    scan_config(DataConfig(root=str(tmp_path / "images"), **DATA))  # generate the images first
    _twice_at_once(_build_cache, tmp_path, tmp_path / "log.txt")
    assert (tmp_path / "log.txt").read_text().splitlines() == ["decoded"]


def test_two_drivers_pretrain_a_model_once(tmp_path):
    from trainables.data.dataset import scan_config

    scan_config(DataConfig(root=str(tmp_path / "images"), **DATA))
    _twice_at_once(_pretrain, tmp_path, tmp_path / "log.txt")
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert sum("pretrain: training tiny_cnn" in line for line in lines) == 1
    assert sum("pretrain: reusing tiny_cnn" in line for line in lines) == 1
