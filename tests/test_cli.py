"""The ``tuner`` console script, every command's ``--help``, and ``tuner init``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.fixtures import make_nwpu
from trainables import classify
from trainables.config import TrialConfig
from trainables.data import __main__ as data_cli
from trainables.models import build_parser as models_parser
from tuner import cli, init, optuna_export, rank, submit
from tuner import run as run_cli
from tuner.report import __main__ as report_cli
from tuner.spec import load

ROOT = Path(__file__).resolve().parents[1]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parsers = {
        "run": run_cli.build_parser(),
        "rank": rank.build_parser(),
        "report": report_cli.build_parser(),
        "submit": submit.submit_parser(),
        "models": models_parser(),
        "train": classify.build_parser(),
        "init": init.build_parser(),
        "optuna": optuna_export.build_parser(),
    }
    for command in ("status", "logs", "stop", "list"):
        parsers[f"submit {command}"] = submit.command_parser(command)
    data = data_cli.build_parser()
    sub = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction))
    parsers.update({f"data {name}": p for name, p in sub.choices.items()})
    return parsers


def test_console_script_and_every_python_m_entry_point():
    pyproject = (ROOT / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'tuner = "tuner.cli:main"' in scripts.splitlines()
    modules = {module for module, _, _ in cli.COMMANDS.values()}
    for module in modules:  # each command is also `python -m MODULE`
        name = module.removesuffix(".__main__").replace(".", "/")
        path = ROOT / (f"{name}/__main__.py" if module.endswith("__main__") else f"{name}.py")
        assert 'if __name__ == "__main__":' in path.read_text(), module
    assert set(cli.COMMANDS) >= {"run", "rank", "report", "submit", "inspect", "init"}


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_help_lists_every_flag_with_its_default_and_choices(name):
    parser = _parsers()[name]
    text = parser.format_help()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        flag = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name}: {flag} has no help text"
        shown = formatter._expand_help(action)
        default = action.default
        trivial = default is None or default is False or default == [] or default == ()
        if not trivial and action.option_strings:
            assert "default" in shown.lower(), f"{name}: {flag} does not show its default"
        for choice in action.choices or ():
            assert str(choice) in text, f"{name}: {flag} does not list {choice!r}"


def test_train_flags_come_from_the_config_fields():
    parser = classify.build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for field_name, field in TrialConfig.model_fields.items():
        if field_name == "data":
            continue
        action = by_dest[field_name]
        assert field.description and action.help == field.description
        assert action.default == field.default
    assert by_dest["transfer"].choices == ["scratch", "frozen", "finetune"]
    args = parser.parse_args(["--root", "x", "--lr", "0.01", "--batch-size", "8"])
    assert args.lr == 0.01 and args.batch_size == 8 and args.transfer == "finetune"


def test_dispatch_and_unknown_commands(capsys, tmp_path):
    assert cli.main([]) == 2 and "commands:" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["rnu"]) == 2
    assert "did you mean 'run'" in capsys.readouterr().err
    root = make_nwpu(tmp_path / "nwpu", classes=("airplane", "bridge"), per_class=3)
    assert cli.main(["inspect", str(root), "--preset", "nwpu_resisc45", "--size", "16"]) == 0
    assert "classes: 2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--help"])
    assert exit_.value.code == 0 and "--time-budget" in capsys.readouterr().out


@pytest.fixture
def cpu_machine(monkeypatch):
    monkeypatch.setattr(init, "machine", lambda: (0, 2))


def test_init_writes_a_spec_that_validates(tmp_path, cpu_machine, capsys, monkeypatch):
    root = make_nwpu(tmp_path / "my scenes", per_class=4, size=48)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", str(root)]) == 0
    out = capsys.readouterr().out
    spec_file = tmp_path / "my_scenes.yaml"
    assert f"tuner run {spec_file.name} --laptop" in out
    assert "5 classes (the nwpu_resisc45 layout), 20 images, native size 48 px" in out
    spec = load(spec_file)  # validates, dataset included
    assert spec.experiment == "my_scenes" and spec.dataset.preset == "nwpu_resisc45"
    assert spec.dataset.root == str(root.resolve()) and spec.dataset.image_size == 48
    values = {p.name: p.values for p in spec.params}
    assert values["model"] == ("resnet18", "mobilenet_v3_small")
    assert values["transfer"] == ("frozen", "finetune") and values["weights"] == ("imagenet",)
    assert spec.search.num_samples == 8 and spec.scheduler.type == "asha"
    # an existing spec is kept unless --force
    before = spec_file.read_text()
    assert cli.main(["init", str(root), "--no-pretrained"]) == 2
    assert "exists" in capsys.readouterr().err and spec_file.read_text() == before
    assert cli.main(["init", str(root), "--no-pretrained", "--force"]) == 0
    scratch = load(spec_file)
    assert {p.name: p.values for p in scratch.params}["transfer"] == ("scratch",)


def test_init_plans_for_a_gpu_and_reads_any_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(init, "machine", lambda: (2, 16))
    root = tmp_path / "pets"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (300, 260), (i * 40, 90, 30)).save(root / cls / f"{i}.png")
    out = tmp_path / "pets.yaml"
    assert init.main([str(root), "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    assert raw["dataset"]["preset"] == "folder" and raw["dataset"]["image_size"] == 224
    assert raw["factors"]["model"] == ["resnet18", "resnet50", "efficientnet_b0", "convnext_tiny"]
    assert raw["search"]["num_samples"] == 24 and raw["hyperparameters"]["epochs"] == 20
    assert load(out).dataset.root == str(root.resolve())


def test_init_refuses_bad_folders_creating_nothing(tmp_path, cpu_machine, capsys):
    out = tmp_path / "x.yaml"
    assert init.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "a.png")
    assert init.main([str(tmp_path / "one"), "--out", str(out)]) == 2
    assert "at least 2" in capsys.readouterr().err and not out.exists()
