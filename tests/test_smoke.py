"""``--smoke``: every cell kind of a spec once, small and short, ending with the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from tests.fixtures import make_nwpu, make_rsscn7, make_ucmerced
from trainables.models import imagenet_file
from tuner.results import EPOCH_SCHEMA, TRIAL_SCHEMA, load
from tuner.run import main
from tuner.smoke import BATCH_SIZE, EPOCHS, IMAGE_SIZE, smoke_spec
from tuner.spec import FACTOR_NAMES, grid_cells, load_raw, validate

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
PAPERS = ("resnet_nwpu", "mobilenet_ucmerced", "rsscn7")


def _paper(name: str):
    return validate(load_raw(SPACES / f"{name}.yaml"), check_data=False)


def _kinds(cells: list[dict]) -> set[tuple]:
    return {tuple(c.get(f) for f in FACTOR_NAMES) for c in cells}


@pytest.mark.parametrize("name", PAPERS)
def test_smoke_covers_every_cell_kind_once_with_one_value_per_hyperparameter(name):
    spec = _paper(name)
    smoke = smoke_spec(spec, gpu=False)
    cells = grid_cells(smoke.spec)
    assert _kinds(cells) == _kinds(grid_cells(spec)), "every kind of cell of the spec"
    assert len(cells) == len(_kinds(cells)), "each once"
    assert smoke.spec.experiment == f"{name}_smoke"
    assert smoke.spec.scheduler.type == "none" and smoke.spec.search.seed_list == [0]
    searched = {p.name for p in smoke.spec.searched}
    assert searched <= set(FACTOR_NAMES), searched
    assert {c["epochs"] for c in cells} == {EPOCHS}
    assert {c["batch_size"] for c in cells} == {BATCH_SIZE}
    assert smoke.spec.dataset.image_size == IMAGE_SIZE
    text = "\n".join(smoke.reductions)
    assert f"-> grid of {len(cells)} trials" in text and f"-> {IMAGE_SIZE} px" in text
    assert f"hyperparameters.epochs: {spec.max_epochs} -> {EPOCHS}" in text

    on_gpu = smoke_spec(spec, gpu=True, rename=False)
    assert on_gpu.spec.experiment == name
    assert on_gpu.spec.dataset.image_size == spec.dataset.image_size
    largest = max(next(p for p in spec.params if p.name == "batch_size").values)
    assert {c["batch_size"] for c in grid_cells(on_gpu.spec)} == {largest}


def test_smoke_of_an_optuna_spec_is_a_grid_at_the_middle_of_each_range():
    spec = validate(
        {
            "experiment": "o",
            "dataset": {"preset": "synthetic", "root": "/tmp/x", "image_size": 224},
            "pretrain": {
                "dataset": {"preset": "synthetic", "root": "/tmp/y"},
                "epochs": 7,
            },
            "factors": {
                "model": ["vit_b_16", "tiny_cnn"],
                "transfer": ["scratch", "finetune"],
                "weights": "pretrain",
            },
            "hyperparameters": {
                "lr": {"loguniform": [1e-4, 1e-2]},
                "dropout": {"uniform": [0.1, 0.5]},
                "mlp_hidden": {"values": [64, 128], "when": {"transfer": "finetune"}},
            },
            "search": {"algorithm": "optuna", "num_samples": 30, "seeds": [5, 6]},
        },
        check_data=False,
    )
    smoke = smoke_spec(spec, gpu=False)
    cells = grid_cells(smoke.spec)
    assert len(cells) == 4 and {c["seed"] for c in cells} == {5}
    assert all(c["lr"] == pytest.approx(1e-3) and c["dropout"] == pytest.approx(0.3) for c in cells)
    assert {c.get("mlp_hidden") for c in cells if c["transfer"] == "finetune"} == {64}
    assert {c.get("mlp_hidden") for c in cells if c["transfer"] == "scratch"} == {None}
    assert smoke.spec.pretrain.epochs == 1
    assert smoke.spec.dataset.image_size == 224, "vit_b_16 accepts no smaller input"
    assert "search: optuna, 30 trials -> grid of 4 trials" in "\n".join(smoke.reductions)


# ------------------------------------------------------------------------------ end to end
DATASETS = {
    "resnet_nwpu": lambda root: make_nwpu(
        root, classes=("airplane", "bridge", "palace", "commercial_area", "stadium"), per_class=10
    ),
    "mobilenet_ucmerced": lambda root: make_ucmerced(
        root, classes=("agricultural", "airplane", "beach", "forest"), per_class=10, size=64
    ),
    "rsscn7": lambda root: make_rsscn7(root, per_class=10, size=64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPERS)
def test_paper_spec_smoke_run_writes_every_table_and_the_report(
    name, tmp_path, capsys, monkeypatch
):
    """Each shipped paper spec on data in its preset's layout: ImageNet files stand in as
    randomly initialised state_dicts in an empty torch hub cache (for rsscn7, which has
    only resnet50), else ``weights: none`` (scratch cells only)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    root = DATASETS[name](tmp_path / "data")
    sets = ["--set", f"dataset.root={root}"]
    if name == "rsscn7":
        file = imagenet_file("resnet50", "imagenet")
        file.path.parent.mkdir(parents=True)
        torch.save(torchvision.models.resnet50().state_dict(), file.path)
    else:
        sets += ["--set", "factors.weights=none", "--set", "factors.transfer=scratch"]
    results = tmp_path / "results"
    argv = [str(SPACES / f"{name}.yaml"), *sets, "--smoke", "--laptop", "--results", str(results)]
    assert main([*argv, "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "smoke run, reduced from the spec:" in out and f"-> {IMAGE_SIZE} px" in out
    exp = results / f"{name}_smoke"
    trials, epochs = load(exp)
    assert list(trials.columns) == TRIAL_SCHEMA.names
    assert list(epochs.columns) == EPOCH_SCHEMA.names
    assert (trials["status"] == "completed").all() and trials["test_acc"].notna().all()
    assert (trials["epochs_run"] == EPOCHS).all() and len(epochs) == len(trials) * EPOCHS
    transfers = {"scratch", "frozen", "finetune"} if name == "rsscn7" else {"scratch"}
    assert set(trials["transfer"]) == transfers
    cells = grid_cells(_paper(name)) if name == "rsscn7" else _scratch(name)
    assert len(trials) == len(_kinds(cells))
    assert (exp / "report" / "report.html").is_file() and (exp / "report" / "report.md").is_file()
    assert f"report: {exp / 'report' / 'report.html'}" in out
    assert not (results / name).exists(), "the real experiment's folder stays empty"


def _scratch(name: str) -> list[dict]:
    raw = load_raw(SPACES / f"{name}.yaml", ["factors.weights=none", "factors.transfer=scratch"])
    return grid_cells(validate(raw, check_data=False))


def test_smoke_size_switch_bounds_the_backbone_once_pass_and_the_pretrain_key(tmp_path):
    from trainables.classify import Trial
    from trainables.config import DataConfig, TrialConfig
    from trainables.models import create_model
    from tuner.pretrain import pretrain_key

    data = DataConfig(
        preset="synthetic",
        root=str(tmp_path / "images"),
        classes=["farmland", "water", "forest"],
        synthetic={"per_class": 20, "size": 16},
        image_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    weights = tmp_path / "tiny.pt"
    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), weights)
    cfg = TrialConfig(
        data=data, model="tiny_cnn", transfer="frozen", weights=str(weights), batch_size=4
    )
    full = Trial(cfg, log=lambda _: None)
    smoke = Trial(cfg.model_copy(update={"max_batches": 2}), log=lambda _: None)
    assert full.backbone_once and smoke.backbone_once
    assert len(full.splits["train"].features[1]) == len(full.data.dataset("train", None))
    assert len(smoke.splits["train"].features[1]) == 2 * 4, "2 batches of 4, not the split"

    spec = validate(
        {
            "experiment": "p",
            "dataset": data.model_dump(mode="json"),
            "pretrain": {"dataset": data.model_dump(mode="json")},
            "factors": {"model": "tiny_cnn", "transfer": "finetune", "weights": "pretrain"},
        },
        check_data=False,
    )
    assert pretrain_key(spec, "tiny_cnn") == pretrain_key(spec, "tiny_cnn", None)
    assert pretrain_key(spec, "tiny_cnn", 2) != pretrain_key(spec, "tiny_cnn")
