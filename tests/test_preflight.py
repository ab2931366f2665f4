"""Checks before Ray starts: weights files (ImageNet cache, checkpoint paths) and resources."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
import yaml

from tests.fixtures import make_nwpu
from trainables.models import imagenet_file
from tuner import tune
from tuner.preflight import check_weights, resource_shortfall, weight_pairs
from tuner.run import main
from tuner.spec import load, validate

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
NWPU_CLASSES = ("airplane", "bridge", "palace", "commercial_area", "stadium")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, no network, and a Ray that must not be started."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []

    def refuse(url: str, dst: str, *args, **kwargs) -> None:
        calls.append(url)
        raise URLError(f"no network in tests ({url})")

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start: the preflight should have stopped the run")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tune, "init_ray", no_ray)
    return calls


@pytest.fixture
def nwpu(tmp_path) -> Path:
    return make_nwpu(tmp_path / "nwpu", classes=NWPU_CLASSES, per_class=4)


def _spec(root: Path, **factors) -> dict:
    return {
        "experiment": "pre",
        "dataset": {"preset": "nwpu_resisc45", "root": str(root), "image_size": 32},
        "factors": {"transfer": ["scratch", "frozen"], **factors},
        "hyperparameters": {"epochs": 1},
        "search": {"algorithm": "grid"},
    }


def _write(tmp_path: Path, spec: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _stand_in(model: str, weights: str = "imagenet") -> Path:
    """A randomly initialised state_dict under torchvision's file name in the hub cache."""
    file = imagenet_file(model, weights)
    file.path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.get_model(model, weights=None).state_dict(), file.path)
    return file.path


def test_weight_pairs_are_every_model_with_pretrained_weights(nwpu):
    spec = load(SPACES / "resnet_nwpu.yaml", [f"dataset.root={nwpu}"])
    models = ("alexnet", "densenet121", "googlenet", "resnet50", "vgg16")
    assert weight_pairs(spec) == [(m, "imagenet") for m in models]  # not pixels: scratch only
    scratch = load(SPACES / "rsscn7.yaml", ["factors.transfer=scratch"], check_data=False)
    assert weight_pairs(scratch) == []
    optuna = validate(
        {
            **_spec(nwpu),
            "factors": {
                "model": ["resnet18", "tiny_cnn"],
                "transfer": ["scratch", "finetune"],
                "weights": {"values": ["imagenet:IMAGENET1K_V1"], "when": {"model": "resnet18"}},
            },
            "search": {"algorithm": "optuna", "num_samples": 2},
        }
    )
    assert weight_pairs(optuna) == [("resnet18", "imagenet:IMAGENET1K_V1")]


def test_offline_paper_spec_names_every_missing_file_once_before_ray(
    nwpu, tmp_path, capsys, offline
):
    results = tmp_path / "results"
    args = [str(SPACES / "resnet_nwpu.yaml"), "--set", f"dataset.root={nwpu}"]
    assert main([*args, "--results", str(results), "--laptop"]) == 2
    err = capsys.readouterr().err
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    files = {
        "alexnet-owt-7be5be79.pth",
        "densenet121-a639ec97.pth",
        "googlenet-1378be20.pth",
        "resnet50-11ad3fa6.pth",
        "vgg16-397923af.pth",
    }
    assert "5 file(s) are not in torch hub's cache" in err and "URLError" in err
    listed = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(files), "each missing file named once"
    for name in files:
        model = name.split("-")[0]
        assert f"{name}  for {model}  from https://download.pytorch.org/models/{name}" in err
    assert f"put it in {folder}" in err and "factors.weights=none" in err
    assert len(offline) == 1, "after the first failed download the others are not tried"
    assert not results.exists()


def test_cached_files_are_used_and_missing_ones_downloaded_once(nwpu, monkeypatch, offline):
    cached = _stand_in("shufflenet_v2_x0_5")
    spec = validate(_spec(nwpu, model="shufflenet_v2_x0_5", weights="imagenet"))
    assert check_weights(spec) == [] and offline == []

    cached.unlink()
    fetched: list[str] = []

    def download(url: str, dst: str, hash_prefix=None, progress=True) -> None:
        fetched.append(hash_prefix)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    two_names = validate(
        _spec(nwpu, model="shufflenet_v2_x0_5", weights=["imagenet", "imagenet:IMAGENET1K_V1"])
    )
    lines: list[str] = []
    assert check_weights(two_names, log=lines.append) == []
    assert fetched == ["f707e7126e"], "one file, one download, its hash checked"
    assert cached.is_file() and "downloading" in lines[0] and str(cached) in lines[0]


def test_unknown_member_and_project_model_with_imagenet_are_named(nwpu):
    spec = validate(_spec(nwpu, model="shufflenet_v2_x0_5", weights="imagenet:IMAGENET1K_V9"))
    (problem,) = check_weights(spec)
    assert problem.startswith("factors.weights: 'imagenet:IMAGENET1K_V9' for model")
    assert "did you mean 'IMAGENET1K_V1'" in problem
    (problem,) = check_weights(validate(_spec(nwpu, model="tiny_cnn", weights="imagenet")))
    assert "project model without ImageNet weights" in problem


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("passwd", r"is not a weights file: torch\.load\(weights_only=True\) fails with "),
        ("other_model", r"does not fit the backbone of 'mobilenet_v2'.* missing key\(s\): "),
        ("pickle", r"is not a weights file: .*Unpickl"),
    ],
)
def test_bad_weights_paths_exit_2_before_ray(nwpu, tmp_path, capsys, content, expected):
    if content == "passwd":
        path = Path("/etc/passwd")
    elif content == "other_model":
        path = tmp_path / "resnet18.pt"
        torch.save(torchvision.models.resnet18().state_dict(), path)
    else:
        path = tmp_path / "object.pt"
        torch.save({"model": object()}, path)
    spec = _write(tmp_path, _spec(nwpu, model="mobilenet_v2", weights=str(path)))
    results = tmp_path / "results"
    assert main([spec, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: factors.weights: {str(path)!r} for model 'mobilenet_v2': ")
    assert re.search(expected, err), err
    if content == "other_model":
        assert "features.0.0.weight (32, 3, 3, 3)" in err and "unexpected" in err
    assert not results.exists()


def test_a_fitting_checkpoint_passes(nwpu, tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save({"model": torchvision.models.mobilenet_v2().state_dict()}, path)
    assert check_weights(validate(_spec(nwpu, model="mobilenet_v2", weights=str(path)))) == []


def test_resource_shortfall_states_numbers_and_fix():
    assert resource_shortfall(1, 0, {"CPU": 2.0}) is None
    assert resource_shortfall(2, 0.25, {"CPU": 2.0, "GPU": 1.0}) is None
    text = resource_shortfall(4, 0, {"CPU": 2.0})  # before Ray starts: GPUs not known yet
    assert (
        "a trial asks for cpu 4 (the spec's resources), but this machine's Ray has 2 CPUs:" in text
    )
    assert "--laptop" in text and "--set resources.cpu=2" in text
    text = resource_shortfall(4, 0, {"CPU": 2.0, "GPU": 0.0})
    assert "a trial asks for cpu 4 / gpu 0" in text and "has 2 CPUs, 0 GPUs" in text
    text = resource_shortfall(1, 0.5, {"CPU": 8.0, "GPU": 0.25})
    assert "--set resources.gpu=0.25" in text and "resources.cpu" not in text
