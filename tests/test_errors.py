"""Every exception the project raises survives Ray's copy, and a search's exit status tells
the truth: all trials failed -> 1 with the first error; some failed -> named in the summary."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import ray
import yaml

import trainables
import tuner
from trainables.models import WeightsNotFoundError
from tuner import rank as rank_cli
from tuner.report import __main__ as report_cli
from tuner.results import load
from tuner.run import main
from tuner.tune import error_message

pytestmark = pytest.mark.slow

MESSAGE = "the rule and the value (got 3)\nsecond line"
#: Classes whose constructor takes more than a message.
FACTORIES = {
    WeightsNotFoundError: lambda: WeightsNotFoundError(
        MESSAGE, url="https://download.pytorch.org/models/x-1234.pth", path=Path("/c/x-1234.pth")
    ),
}


def project_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of ``trainables`` or ``tuner``."""
    found = []
    for package in (trainables, tuner):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    found.append(cls)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__name__}")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        object_store_memory=128 * 1024**2,
        log_to_driver=False,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()


def test_every_project_exception_keeps_its_type_and_message_through_ray(local_ray):
    classes = project_exceptions()
    assert WeightsNotFoundError in classes and len(classes) >= 7, classes

    @ray.remote(max_retries=0)
    def fail(cls: type[BaseException]):
        raise FACTORIES.get(cls, lambda: cls(MESSAGE))()

    for cls in classes:
        with pytest.raises(cls) as info:
            ray.get(fail.remote(cls))
        err = info.value
        assert str(err.cause) == MESSAGE, cls
        assert error_message(err) == f"{cls.__name__}: the rule and the value (got 3)", cls
    with pytest.raises(WeightsNotFoundError) as info:
        ray.get(fail.remote(WeightsNotFoundError))
    weights = info.value.cause
    assert weights.url.endswith("x-1234.pth") and weights.path == Path("/c/x-1234.pth")


def _toy(tmp_path: Path, lrs: list[float]) -> str:
    spec = {
        "experiment": "fails",
        "trainable": "toy",
        "hyperparameters": {"lr": lrs, "epochs": 2},
        "search": {"algorithm": "grid", "seeds": 1, "max_failures": 0},
        "scheduler": {"type": "none"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_all_trials_failed_exits_1_with_the_first_error(tmp_path, capsys):
    results = tmp_path / "results"
    args = [_toy(tmp_path, [2.0, 3.0]), "--results", str(results), "--num-cpus", "2"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "error: every trial failed (2); the first error, of trial " in err
    assert "\n  ValueError: toy: lr=" in err and "Traceback" not in out + err
    trials, _ = load(results / "fails")
    assert set(trials["error"]) == {
        "ValueError: toy: lr=2 diverges; the toy trains with lr < 1",
        "ValueError: toy: lr=3 diverges; the toy trains with lr < 1",
    }
    for text in trials["error_traceback"]:
        assert "ray::ImplicitFunc.train()" in text and "\x1b" not in text
        assert 'trainables/toy.py", line' in text and text.rstrip().endswith("lr < 1")

    # the message is readable where results are read: tuner.rank and the report
    assert rank_cli.main([str(results / "fails")]) == 0
    listed = capsys.readouterr().out
    for trial_id, error in zip(trials["trial_id"], trials["error"], strict=True):
        assert f"\n  {trial_id}: {error}\n" in listed
    assert report_cli.main([str(results / "fails"), "--no-figures"]) == 0
    markdown = (results / "fails" / "report" / "report.md").read_text()
    assert "Failed trials and their errors" in markdown
    assert "ValueError: toy: lr=3 diverges; the toy trains with lr < 1" in markdown


def test_some_failed_trials_are_named_in_the_summary(tmp_path, capsys):
    results = tmp_path / "results"
    args = [_toy(tmp_path, [1e-3, 2.0]), "--results", str(results), "--num-cpus", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    trials, _ = load(results / "fails")
    failed = trials[trials["status"] == "error"]
    assert len(trials) == 2 and len(failed) == 1
    trial_id = failed["trial_id"].iloc[0]
    assert "\nfailed: 1 of 2 trials:\n" in out
    assert f"  {trial_id} (lr=2 seed=0): ValueError: toy: lr=2 diverges" in out
    assert "trials: 1 completed, 1 error" in out
