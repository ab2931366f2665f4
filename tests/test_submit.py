"""``python -m tuner.submit``: with a stand-in client, and against a real Ray job server.

The real test starts ``ray start --head`` with the dashboard on 127.0.0.1 and token
authentication, submits the toy spec from a copy of the project and follows it to SUCCEEDED
(the two-node recipe, from a copy installed nowhere, is tests/test_cluster_job.py). The job
server needs ``ray[default]`` (aiohttp and friends); without it that test is skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.raycluster import (
    ROOT,
    RayHead,
    auth_env,
    dashboard_dependency_error,
    project_copy,
    reset_auth_cache,
)
from tuner import provenance
from tuner import submit as submit_cli
from tuner.results import load

TOY = {
    "experiment": "job",
    "trainable": "toy",
    "hyperparameters": {"lr": [1e-3, 1e-2], "epochs": 3},
    "search": {"algorithm": "grid"},
    "scheduler": {"type": "none"},
}


def _spec(folder: Path, spec: dict = TOY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class FakeClient:
    """Records what ``tuner.submit`` asks of Ray's JobSubmissionClient."""

    instances: list[FakeClient] = []

    def __init__(self, address: str):
        self.address, self.calls = address, []
        FakeClient.instances.append(self)

    def submit_job(self, **kw) -> str:
        self.calls.append(("submit_job", kw))
        return "raysubmit_test"

    def get_job_info(self, job_id):
        self.calls.append(("get_job_info", job_id))
        return type("Info", (), {"status": "RUNNING", "message": "ok"})()

    def get_job_status(self, job_id):
        return "SUCCEEDED"

    def get_job_logs(self, job_id):
        return "search finished in 3 s\n"

    def stop_job(self, job_id):
        self.calls.append(("stop_job", job_id))
        return True


@pytest.fixture
def fake(monkeypatch):
    FakeClient.instances = []
    monkeypatch.setattr(submit_cli, "make_client", FakeClient)
    return FakeClient


def _project(folder: Path) -> Path:
    """A working directory holding the project's two packages (a one-file stand-in each)."""
    for package in provenance.PACKAGES:
        (folder / package).mkdir(parents=True, exist_ok=True)
        (folder / package / "__init__.py").write_text(f'"""{package}"""\n')
    return folder


def test_submit_builds_the_job(fake, tmp_path, capsys):
    _project(tmp_path / "project")
    spec = _spec(tmp_path / "project" / "search_spaces")
    argv = [
        str(spec),
        "--working-dir",
        str(tmp_path / "project"),
        "--results",
        "s3://bucket/tuner",
        "--set",
        "search.seeds=2",
        "--name",
        "job2",
        "--env",
        "TUNER_TOY_EPOCH_S=0.1",
        "--",
        "--smoke",
        "--top",
        "3",
    ]
    assert submit_cli.main(argv) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "raysubmit_test"
    (client,) = fake.instances
    assert client.address == "http://127.0.0.1:8265"
    ((name, kw),) = client.calls
    assert kw["entrypoint"] == (
        "python -m tuner.run search_spaces/toy.yaml --address auto "
        "--results s3://bucket/tuner --set search.seeds=2 --name job2 --smoke --top 3"
    )
    env = kw["runtime_env"]
    assert env["working_dir"] == str((tmp_path / "project").resolve())
    assert {"/.git", "/data/", "/results/"} <= set(env["excludes"])
    # --env values and the code manifest travel in the runtime environment, not the command
    assert env["env_vars"]["TUNER_TOY_EPOCH_S"] == "0.1"
    manifest = json.loads(env["env_vars"][provenance.MANIFEST_ENV])
    assert sorted(manifest) == ["trainables/__init__.py", "tuner/__init__.py"]
    assert kw["metadata"]["experiment"] == "job2" and kw["entrypoint_num_cpus"] == 0
    assert "logs raysubmit_test --follow" in out.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "search.algorithm=bayes"], "search.algorithm"),
        (["--name", "../escape"], "experiment name"),
        (["--env", "NOVALUE"], "--env"),
    ],
)
def test_bad_input_exits_2_and_submits_nothing(fake, tmp_path, capsys, argv, message):
    spec = _spec(_project(tmp_path))
    assert submit_cli.main([str(spec), "--working-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err and fake.instances == []


def test_spec_outside_the_working_dir_is_refused(fake, tmp_path, capsys):
    spec = _spec(tmp_path / "elsewhere")
    argv = [str(spec), "--working-dir", str(tmp_path / "project")]
    (tmp_path / "project").mkdir()
    assert submit_cli.main(argv) == 2
    assert "not inside the uploaded working directory" in capsys.readouterr().err


def test_public_http_address_warns(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    spec = _spec(_project(tmp_path))
    argv = [str(spec), "--working-dir", str(tmp_path), "--address", "http://203.0.113.7:8265"]
    assert submit_cli.main(argv) == 0
    assert "travels unencrypted" in capsys.readouterr().err


@pytest.mark.parametrize(
    "address, extra, code",
    [
        ("http://203.0.113.7:8265", [], 2),  # a token over plain HTTP: refused
        ("http://203.0.113.7:8265", ["--insecure"], 0),  # unless the user says so
        ("https://203.0.113.7:8265", [], 0),
        ("http://127.0.0.1:8265", [], 0),
        ("http://localhost:8265", [], 0),
    ],
)
def test_token_travels_only_over_https_or_loopback(
    fake, tmp_path, capsys, monkeypatch, address, extra, code
):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    spec = _spec(_project(tmp_path))
    argv = [str(spec), "--working-dir", str(tmp_path), "--address", address, *extra]
    assert submit_cli.main(argv) == code
    if code == 2:
        assert "--insecure" in capsys.readouterr().err and fake.instances == []


def test_working_dir_without_the_project_is_refused(fake, tmp_path, capsys):
    spec = _spec(tmp_path)  # a folder with a spec only: the job would run an installed copy
    assert submit_cli.main([str(spec), "--working-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no tuner/, trainables/ package" in err and fake.instances == []


def test_upload_keeps_every_file_of_the_packages(tmp_path):
    """Ray's own packer, with our excludes, keeps every tracked file of tuner/ and trainables/.

    ``create_package`` is the function Ray's job client uploads a working directory with
    (it also applies the project's ``.gitignore``); a bare ``data/`` pattern dropped
    ``trainables/data/``.
    """
    from ray._private.runtime_env.packaging import create_package

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the project")
    tracked = subprocess.run(
        ["git", "ls-files", *provenance.PACKAGES],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "trainables/data/__init__.py" in tracked
    archive = tmp_path / "upload.zip"
    create_package(str(ROOT), archive, include_gitignore=True, excludes=submit_cli.EXCLUDES)
    with zipfile.ZipFile(archive) as z:
        uploaded = {n for n in z.namelist() if not n.endswith("/")}
    missing = sorted(set(tracked) - uploaded)
    assert missing == [], f"left out of the upload: {missing}"
    assert not any(n.startswith((".git/", "results/", "data/")) for n in uploaded)
    # the unanchored pattern would have dropped the package's data/ folder
    old = tmp_path / "old.zip"
    create_package(str(ROOT), old, include_gitignore=True, excludes=["data/"])
    with zipfile.ZipFile(old) as z:
        assert "trainables/data/__init__.py" not in z.namelist()


def test_status_logs_stop(fake, capsys):
    assert submit_cli.main(["status", "raysubmit_test"]) == 0
    assert "raysubmit_test: RUNNING (ok)" in capsys.readouterr().out
    assert submit_cli.main(["logs", "raysubmit_test", "--follow", "--every", "0"]) == 0
    out = capsys.readouterr()
    assert "search finished" in out.out and "SUCCEEDED" in out.err
    assert submit_cli.main(["stop", "raysubmit_test"]) == 0
    assert ("stop_job", "raysubmit_test") in fake.instances[-1].calls


def test_default_address_is_local(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a GCS address, not the job API
    assert submit_cli.default_address() == "http://127.0.0.1:8265"


# --------------------------------------------------------------------------- real server
@pytest.mark.slow
def test_submit_to_a_real_job_server(tmp_path, monkeypatch, capsys):
    reason = dashboard_dependency_error()
    if reason:
        pytest.skip(f"Ray's job server cannot run here ({reason}); pip install 'ray[default]'")
    import requests

    auth = auth_env()
    for k, v in auth.items():
        monkeypatch.setenv(k, v)
    reset_auth_cache()
    head = RayHead(num_cpus=2, env=auth)
    try:
        t0 = time.time()
        head.wait_ready()
        # the job API refuses requests without the cluster's token
        assert requests.get(f"{head.address}/api/jobs/", timeout=10).status_code == 401
        spec = _spec(project_copy(tmp_path / "wd"))
        results = tmp_path / "results"
        argv = [str(spec), "--address", head.address, "--working-dir", str(tmp_path / "wd")]
        argv += ["--results", str(results), "--env", "TUNER_TOY_EPOCH_S=0.05"]
        assert submit_cli.main(argv) == 0
        job_id = capsys.readouterr().out.strip()
        assert re.fullmatch(r"raysubmit_\w+", job_id), job_id
        deadline = time.time() + 180
        while time.time() < deadline:
            submit_cli.main(["status", job_id, "--address", head.address])
            status = capsys.readouterr().out
            if re.search(r": (SUCCEEDED|FAILED|STOPPED)", status):
                break
            time.sleep(1)
        assert submit_cli.main(["logs", job_id, "--address", head.address]) == 0
        logs = capsys.readouterr().out
        assert ": SUCCEEDED" in status, logs
        assert "search finished" in logs and "trials: 2 completed" in logs
        trials, epochs = load(results / "job")
        assert len(trials) == 2 and len(epochs) == 6
        # --env values travel in the runtime environment, not in the listed command
        assert submit_cli.main(["list", "--address", head.address]) == 0
        listed = capsys.readouterr().out
        assert job_id in listed and "TUNER_TOY_EPOCH_S" not in listed
        took = time.time() - t0
        # stop: a slow job is stopped and reports STOPPED
        slow = _spec(tmp_path / "wd", {**TOY, "experiment": "slow"})
        argv = [str(slow), "--address", head.address, "--working-dir", str(tmp_path / "wd")]
        argv += ["--results", str(results), "--env", "TUNER_TOY_EPOCH_S=5"]
        assert submit_cli.main(argv) == 0
        slow_id = capsys.readouterr().out.strip()
        assert submit_cli.main(["stop", slow_id, "--address", head.address]) == 0
        deadline = time.time() + 60
        while time.time() < deadline:
            submit_cli.main(["status", slow_id, "--address", head.address])
            if "STOPPED" in capsys.readouterr().out:
                break
            time.sleep(1)
        else:
            pytest.fail("the stopped job never reached STOPPED")
        print(f"\njob {job_id}: head up, submitted and SUCCEEDED in {took:.1f} s; stop works")
    finally:
        head.stop()
        monkeypatch.undo()
        reset_auth_cache()
