"""Spec validation: every bad input exits 2 with the YAML path of the key; nothing is created."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fixtures import make_nwpu
from tuner.run import main
from tuner.spec import SpecError, grid_cells, load, load_raw, validate

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def _base(root: Path) -> dict:
    return {
        "experiment": "t",
        "dataset": {
            "preset": "nwpu_resisc45",
            "root": str(root),
            "image_size": 16,
            "classes": ["airplane", "bridge"],
        },
        "factors": {
            "model": ["tiny_cnn", "resnet18"],
            "transfer": ["scratch", "finetune"],
            "weights": "imagenet",
        },
        "hyperparameters": {"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 3},
        "search": {"algorithm": "optuna", "num_samples": 2},
    }


@pytest.fixture
def root(tmp_path) -> Path:
    return make_nwpu(tmp_path / "nwpu", classes=("airplane", "bridge", "palace"), per_class=3)


def _edit(raw: dict, path: str, value) -> dict:
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return raw


_DELETE = object()

BAD = [
    ("serach", {}, r"^serach: unknown key; did you mean 'search'\?"),
    ("search.num_sample", 3, r"^search\.num_sample: unknown key; did you mean 'num_samples'"),
    (
        "hyperparameters.lr",
        {"loguniform": [1e-2, 1e-4]},
        r"^hyperparameters\.lr\.loguniform: `low < high` must hold, but got \(low=0\.01",
    ),
    (
        "hyperparameters.lr",
        {"loguniform": [0, 1e-2]},
        r"^hyperparameters\.lr\.loguniform: .*low > 0",
    ),
    (
        "hyperparameters.lr",
        {"logunifrom": [1e-4, 1e-2]},
        r"^hyperparameters\.lr: .*did you mean 'loguniform'",
    ),
    (
        "hyperparameters.learning_rate",
        0.1,
        r"^hyperparameters\.learning_rate: unknown parameter .*'lr'",
    ),
    (
        "hyperparameters.batch_size",
        {"int": [8, 2]},
        r"^hyperparameters\.batch_size\.int: `low < high`",
    ),
    ("hyperparameters.lr", -1, r"^hyperparameters\.lr: Input should be greater than 0"),
    (
        "factors.model",
        ["resnet5"],
        r"^factors\.model\[0\]: unknown model 'resnet5'; did you mean 'resnet50'",
    ),
    (
        "factors.augmentation",
        "papr",
        r"^factors\.augmentation: unknown augmentation 'papr'.*'paper'",
    ),
    ("factors.weights", "/no/such.pt", r"^factors\.weights: .*'/no/such.pt' does not exist"),
    ("dataset.preset", "nwpu", r"^dataset\.preset: unknown dataset preset 'nwpu'.*nwpu_resisc45"),
    ("dataset.root", "/no/such/dir", r"^dataset\.root: dataset root '/no/such/dir' does not exist"),
    (
        "dataset.classes",
        ["airplane", "brige"],
        r"^dataset\.classes: class 'brige' is not present.*'bridge'",
    ),
    (
        "dataset.split",
        {"train": 0.8, "val": 0.1, "test": 0.2},
        r"^dataset\.split: split ratios must sum to 1",
    ),
    ("search.algorithm", "random", r"^search\.algorithm: Input should be 'optuna' or 'grid'"),
    ("experiment", "../escape", r"^experiment: experiment name must match"),
    ("scheduler.grace_period", 9, r"^scheduler\.grace_period: must be <= the most epochs"),
    ("resources.gpu", 1.5, r"^resources\.gpu: a trial trains on one GPU, so gpu must be <= 1"),
    ("resources.gpu", 2, r"^resources\.gpu: .*run several trials at once: gpu: 1"),
    ("tracking", ["tensorbord"], r"^tracking: .*unknown tracker 'tensorbord'; did you mean"),
    ("search.time_budget", "2 hours", r"^search\.time_budget: expected a duration such as 2h"),
    ("dataset", _DELETE, r"^dataset: required"),
]


@pytest.mark.parametrize(("key", "value", "pattern"), BAD, ids=[b[0] for b in BAD])
def test_bad_spec_exits_2_naming_the_key(key, value, pattern, root, tmp_path, capsys):
    raw = _edit(_base(root), key, value)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    assert main([str(spec), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    import re

    assert re.search(pattern, err.removeprefix("error: "), re.M), err
    assert not results.exists(), "a bad spec must not create anything"


def test_grid_with_a_range_is_refused(root):
    raw = _base(root)
    raw["search"] = {"algorithm": "grid"}
    with pytest.raises(SpecError, match=r"^hyperparameters\.lr: search\.algorithm 'grid' needs"):
        validate(raw)


def test_duplicate_keys_are_an_error(tmp_path):
    spec = tmp_path / "dup.yaml"
    spec.write_text("experiment: a\nsearch: {}\nexperiment: b\n")
    with pytest.raises(SpecError, match="duplicate key 'experiment' at line 3"):
        load_raw(spec)


def test_overrides_and_environment(root, tmp_path, monkeypatch):
    raw = _base(root)
    raw["dataset"]["root"] = "${TEST_ROOT}"
    raw["dataset"]["cache_dir"] = "${TEST_CACHE:-/tmp/default-cache}"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("TEST_ROOT", str(root))
    s = load(spec, ["search.num_samples=7", "factors.model=[tiny_cnn]", "hyperparameters.epochs=5"])
    assert s.search.num_samples == 7 and s.dataset.root == str(root)
    assert s.dataset.cache_dir == "/tmp/default-cache"
    assert [p.values for p in s.params if p.name == "model"] == [("tiny_cnn",)]
    assert s.max_epochs == 5
    monkeypatch.delenv("TEST_ROOT")
    with pytest.raises(
        SpecError, match=r"^dataset\.root: environment variable TEST_ROOT is not set"
    ):
        load(spec)
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load(spec, ["search.num_samples"])


def test_grid_cells_conditions_exclusions_and_seeds(root):
    raw = _base(root)
    raw["factors"] = {
        "model": ["tiny_cnn", "pixels"],
        "transfer": ["scratch", "frozen", "finetune"],
        "weights": ["imagenet", "none"],
        "head": {"values": ["svm"], "when": {"model": "pixels"}},
    }
    raw["hyperparameters"] = {
        "lr": [0.1, 0.01],
        "epochs": 2,
        "backbone_lr_mult": {"values": [0.1, 1.0], "when": {"transfer": "finetune"}},
    }
    raw["search"] = {
        "algorithm": "grid",
        "seeds": [3, 4],
        "exclude": [{"model": "pixels", "transfer": ["frozen", "finetune"]}],
    }
    cells = grid_cells(validate(raw))
    # tiny_cnn: scratch (1) + frozen (1) + finetune x 2 mults = 4 transfer cells; pixels: scratch.
    # (weights none folds into scratch.) x 2 lr x 2 seeds.
    assert len(cells) == (4 + 1) * 2 * 2
    assert all(c["head"] == "svm" for c in cells if c["model"] == "pixels")
    assert all("head" not in c for c in cells if c["model"] == "tiny_cnn")
    assert all(("backbone_lr_mult" in c) == (c["transfer"] == "finetune") for c in cells)
    assert all(c["weights"] == "none" for c in cells if c["transfer"] == "scratch")
    assert {c["seed"] for c in cells} == {3, 4}


@pytest.mark.parametrize("name", ["demo", "resnet_nwpu", "mobilenet_ucmerced", "rsscn7"])
def test_shipped_specs_are_valid(name):
    spec = load(SPACES / f"{name}.yaml", check_data=False)
    assert spec.experiment == name
    if spec.search.algorithm == "grid":
        assert len(grid_cells(spec)) >= 8
