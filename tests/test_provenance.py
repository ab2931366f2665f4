"""The version-skew check (:mod:`tuner.provenance`) and paths anchored by the driver.

The check on a real cluster, against a real incomplete upload, is in tests/test_cluster_job.py;
here: the manifest, the driver's refusal (``tuner.run`` as a subprocess, before Ray starts),
a trial worker's refusal, and the anchoring of relative spec paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.raycluster import ROOT
from tuner import provenance
from tuner.spec import anchor_paths


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_manifest_covers_package_sources_only(tmp_path):
    root = _tree(
        tmp_path,
        {
            "tuner/__init__.py": "",
            "tuner/run.py": "x = 1\n",
            "trainables/data/__init__.py": "",
            "trainables/__pycache__/a.cpython-311.py": "stale",
            "tests/test_x.py": "",
            "tuner/notes.txt": "not code",
        },
    )
    files = provenance.manifest(root)
    assert sorted(files) == ["trainables/data/__init__.py", "tuner/__init__.py", "tuner/run.py"]
    before = provenance.fingerprint(files)
    (root / "tuner/run.py").write_text("x = 2\n")
    assert provenance.fingerprint(provenance.manifest(root)) != before


def test_differences_name_each_kind():
    submitted = {"tuner/a.py": "1", "tuner/b.py": "2", "trainables/data/x.py": "3"}
    here = {"tuner/a.py": "1", "tuner/b.py": "9", "tuner/extra.py": "4"}
    text = "\n".join(provenance.differences(submitted, here))
    assert "1 file(s) submitted but missing here: trainables/data/x.py" in text
    assert "1 file(s) here but not submitted: tuner/extra.py" in text
    assert "1 file(s) different content: tuner/b.py" in text
    assert provenance.differences(here, here) == []


def test_driver_accepts_its_own_code_and_publishes_the_hash():
    files, where = provenance.imported()
    assert "tuner/provenance.py" in files and "trainables/data/__init__.py" in files
    env = {provenance.MANIFEST_ENV: json.dumps(files)}
    assert provenance.check_driver(env) == provenance.fingerprint(files)
    assert str(ROOT / "tuner") in where


def test_driver_refuses_other_code_before_anything_else(tmp_path):
    """``tuner.run`` exits 2 naming the files, creates nothing, starts no Ray."""
    files, _ = provenance.imported()
    submitted = {**files, "tuner/run.py": "0" * 16, "trainables/data/new.py": "1" * 16}
    env = {**os.environ, provenance.MANIFEST_ENV: json.dumps(submitted)}
    out = subprocess.run(
        [sys.executable, "-m", "tuner.run", "does-not-matter.yaml", "--results", "res"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "not the code that was submitted" in out.stderr
    assert "submitted but missing here: trainables/data/new.py" in out.stderr
    assert "different content: tuner/run.py" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_worker_with_other_code_refuses(monkeypatch):
    monkeypatch.setenv(provenance.HASH_ENV, "0123456789abcdef")
    with pytest.raises(provenance.CodeMismatchError, match="other code than the search driver"):
        provenance.check_process()
    monkeypatch.setenv(provenance.HASH_ENV, provenance.fingerprint(provenance.imported()[0]))
    provenance.check_process()


def test_relative_spec_paths_are_anchored_once(tmp_path):
    raw = {
        "dataset": {"root": "data/target", "cache_dir": "~/cache", "preset": "folder"},
        "pretrain": {"dataset": {"root": "./src", "preset": "folder"}},
        "factors": {
            "weights": ["imagenet", "none", "ckpt/a.pt", "imagenet:IMAGENET1K_V2"],
            "model": "resnet18",
        },
        "hyperparameters": {"weights": {"values": ["pretrain", "b.pt"], "when": {"x": [1]}}},
    }
    out = anchor_paths(raw, tmp_path)
    assert out["dataset"]["root"] == str(tmp_path / "data/target")
    assert out["dataset"]["cache_dir"] == str(Path("~/cache").expanduser())
    assert out["pretrain"]["dataset"]["root"] == str(tmp_path / "src")
    assert out["factors"]["weights"] == [
        "imagenet",
        "none",
        str(tmp_path / "ckpt/a.pt"),
        "imagenet:IMAGENET1K_V2",
    ]
    assert out["hyperparameters"]["weights"]["values"] == ["pretrain", str(tmp_path / "b.pt")]
    assert raw["dataset"]["root"] == "data/target", "the raw spec is not modified"
    absolute = {"dataset": {"root": "/srv/data", "cache_dir": "s3://bucket/cache"}}
    assert anchor_paths(absolute, tmp_path) == absolute
