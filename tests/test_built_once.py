"""What a search shares is built once however many processes ask at once (issue 11, §2)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

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


def _remote_spec(root: Path):
    from tuner.spec import validate

    data = {**DATA, "root": f"{root}/images", "cache_dir": f"{root}/cache"}
    return validate(
        {
            "experiment": "remote",
            "dataset": data,
            "pretrain": {"dataset": data, "epochs": 1, "batch_size": 8},
            "factors": {"model": "tiny_cnn", "transfer": "finetune", "weights": "pretrain"},
        },
        check_data=False,
    )


def test_pretraining_with_uri_results_uploads_once_and_writes_nothing_to_the_cwd(
    tmp_path, monkeypatch
):
    """``file://`` results stand in for s3:// / gs://: the stage trains in the local cache,
    uploads to ``<results>/_pretrained/``, and every node downloads it into its own cache."""
    from trainables.data.dataset import scan_config
    from tuner.pretrain import PRETRAIN_DIR, local_checkpoint, pretrain_all

    scan_config(DataConfig(root=str(tmp_path / "images"), **DATA))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    spec, results = _remote_spec(tmp_path), f"file://{tmp_path}/results"
    lines: list[str] = []
    first = pretrain_all(spec, results, log=lines.append)
    uri = first["tiny_cnn"]
    assert uri.startswith(f"{results}/{PRETRAIN_DIR}/tiny_cnn-") and uri.endswith("/best.pt")
    uploaded = Path(uri.removeprefix("file://"))
    assert uploaded.is_file() and (uploaded.parent / "pretrain.json").is_file()
    assert sum("pretrain: training tiny_cnn" in s for s in lines) == 1
    assert sum("pretrain: uploaded tiny_cnn" in s for s in lines) == 1
    assert list(cwd.iterdir()) == []

    # another driver (its own cache) reuses the upload without training
    other = _remote_spec(tmp_path).model_copy(deep=True)
    other.dataset.cache_dir = str(tmp_path / "cache-2")
    again: list[str] = []
    assert pretrain_all(other, results, log=again.append) == first
    assert [s for s in again if "pretrain: training" in s] == []
    assert again[0].startswith("pretrain: reusing tiny_cnn")

    # a trial node downloads it once into its cache; the driver's node has it already
    node = local_checkpoint(uri, tmp_path / "node-cache")
    assert Path(node).read_bytes() == uploaded.read_bytes()
    assert Path(node).is_relative_to(tmp_path / "node-cache")
    before = Path(node).stat().st_mtime_ns
    assert local_checkpoint(uri, tmp_path / "node-cache") == node
    assert Path(node).stat().st_mtime_ns == before  # reused, not downloaded again
    driver = local_checkpoint(uri, tmp_path / "cache")
    assert Path(driver).read_bytes() == uploaded.read_bytes()
    # a replaced upload is fetched again; a missing one is a clear error
    uploaded.write_bytes(uploaded.read_bytes() + b"\0")
    assert Path(local_checkpoint(uri, tmp_path / "node-cache")).read_bytes().endswith(b"\0")
    uploaded.unlink()
    with pytest.raises(FileNotFoundError, match=r"pretraining checkpoint .*best.pt does not"):
        local_checkpoint(uri, tmp_path / "node-cache")
    assert list(cwd.iterdir()) == []
