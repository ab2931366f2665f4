"""``cluster.yaml`` is a valid Ray cluster-launcher config, and a safe one by default."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _schema_errors(config: dict) -> list[str]:
    """What the cluster launcher's schema (``ray-schema.json``, shipped with Ray and
    checked by ``ray up``) finds wrong with ``config``: ``path: message`` per error."""
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(config)]


def test_validates_against_rays_autoscaler_schema(config):
    assert _schema_errors(config) == []


def test_schema_rejects_a_misspelled_field(config):
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_worker"]["max_worker"] = 4
    errors = _schema_errors(bad)
    where = "available_node_types/gpu_worker: "
    assert any(e.startswith(where) and "max_worker" in e for e in errors), errors


def test_head_and_autoscaling_gpu_workers(config):
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and set(types) == {"head", "gpu_worker"}
    assert types["head"]["resources"] == {"CPU": 0}, "no trials on the head"
    worker = types["gpu_worker"]
    assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    assert re.match(r"g\d", worker["node_config"]["InstanceType"]), "a GPU instance type"


def test_setup_installs_the_project_and_mounts_the_specs(config):
    assert config["file_mounts"]["~/tuner"] == "."  # code and search_spaces/
    setup = " ".join(config["setup_commands"])
    assert "pip install -q -e ~/tuner" in setup and "ray[default" in setup
    assert {"data/", "results/", ".git"} <= set(config["rsync_exclude"])


def test_dashboard_on_localhost_and_token_auth_everywhere(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in CONFIG.read_text()
    for command in (head, " ".join(config["worker_start_ray_commands"])):
        assert "RAY_AUTH_MODE=token" in command
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_fields_a_user_must_change_are_marked(config):
    lines = CONFIG.read_text().splitlines()
    must = ("type: aws", "region:", "availability_zone:", "InstanceType:", "ImageId:", "Arn:")
    for key in must:
        hits = [i for i, line in enumerate(lines) if line.strip().startswith(key)]
        assert hits, key
        for i in hits:
            window = " ".join(lines[max(0, i - 3) : i + 1])
            assert "CHANGE" in window, f"line {i + 1} ({key}) has no CHANGE comment"
    bucket = [i for i, line in enumerate(lines) if "MY-BUCKET" in line and "s3://" in line]
    assert bucket and all(
        "CHANGE" in " ".join(lines[i : i + 3]) for i in bucket if not lines[i].startswith("#")
    )
