"""Helpers for tests that start their own Ray processes next to any other Ray on the machine.

Every process gets explicit ports, its own temp folder and the same token authentication
(``RAY_AUTH_MODE=token`` plus a random ``RAY_AUTH_TOKEN``); only the processes a test started
are stopped (never ``ray stop``, which would stop every Ray instance of the machine).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_concurrency(intervals: list[tuple]) -> int:
    """The most (start, end) intervals that overlap at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def auth_env() -> dict[str, str]:
    """Token authentication for every process of one test cluster."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def reset_auth_cache() -> None:
    """Make this process re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (Ray caches both)."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:  # a Ray without token authentication
        return
    reset_auth_token_state()


def dashboard_dependency_error() -> str | None:
    """Why the dashboard / job server cannot start here (``None``: it can)."""
    from ray._private.utils import get_dashboard_dependency_error

    err = get_dashboard_dependency_error()
    if err is None:
        try:
            from ray.dashboard.modules.job import sdk
            from ray.job_submission import JobSubmissionClient  # noqa: F401
        except ImportError as e:  # pragma: no cover - depends on the install
            return str(e)
        if sdk.aiohttp is None or sdk.requests is None:
            return "the job SDK needs aiohttp and requests (ray[default])"
    return None if err is None else f"{type(err).__name__}: {err}"


def project_copy(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the project")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def python_without_project(folder: Path) -> Path:
    """A virtual environment that has this machine's packages but not the project.

    Its ``site-packages`` holds one ``.pth`` line naming the base interpreter's
    ``site-packages``: Ray, torch and the rest import, but the ``.pth`` files there (among
    them the editable install of ``tuner``) are not run, so ``tuner`` and ``trainables``
    import only from a job's uploaded working directory, as on a cluster where the project
    is not installed. Returns the venv's ``python``.
    """
    import sysconfig
    import venv

    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "base-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _ray_start(python: str | None) -> list[str]:
    """``ray start`` run by ``python`` (default: the ``ray`` script on PATH)."""
    return [str(python), "-m", "ray.scripts.scripts", "start"] if python else ["ray", "start"]


def _env_for(python: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a node: ``python``'s folder first on PATH (a job's ``python``)."""
    out = {**os.environ, **(env or {})}
    if python:
        out["PATH"] = f"{Path(python).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


class _Node:
    """A ``ray start --block`` process group with its own log, stopped by its own PID."""

    proc: subprocess.Popen
    log: Path
    temp: str | None = None

    def _start(self, cmd: list[str], env: dict[str, str]) -> None:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        """SIGTERM our ``ray start --block``: it stops the processes of this node only."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.temp:
            shutil.rmtree(self.temp, ignore_errors=True)


class RayHead(_Node):
    """``ray start --head --block`` with the dashboard on 127.0.0.1, stopped by its own PID.

    Args:
        num_cpus: CPUs the head offers to trials (0: none land on it).
        env: Extra environment of every process of the node (e.g. :func:`auth_env`).
        python: The interpreter the node runs (default: the ``ray`` script on PATH); its
            folder goes first on PATH, so a job's ``python`` is that one too.
    """

    def __init__(
        self, *, num_cpus: int = 2, env: dict[str, str] | None = None, python: str | None = None
    ):
        self.temp = tempfile.mkdtemp(prefix="trh", dir="/tmp")  # short: Unix socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = _env_for(python, env)
        self.log = Path(self.temp) / "head.log"
        self._start(
            [
                *_ray_start(python),
                "--head",
                "--block",
                f"--port={self.port}",
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                f"--memory={2 * 1024**3}",
                f"--object-store-memory={100 * 1024**2}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={self.temp}",
                "--disable-usage-stats",
            ],
            self.env,
        )

    @property
    def address(self) -> str:
        """The job API (dashboard) address."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the dashboard answers HTTP (401 without a token counts as up)."""
        import requests

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited:\n{self.log.read_text()[-3000:]}")
            try:
                requests.get(f"{self.address}/api/version", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.5)
        raise TimeoutError(f"dashboard not up after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def wait_for_nodes(self, count: int, timeout: float = 120) -> list[dict]:
        """Until ``count`` nodes are alive (asked of the dashboard); returns their resources."""
        import requests

        token = self.env.get("RAY_AUTH_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = requests.get(f"{self.address}/nodes?view=summary", headers=headers, timeout=5)
            nodes = [
                n["raylet"]["resourcesTotal"]
                for n in reply.json()["data"]["summary"]
                if n.get("raylet", {}).get("state") == "ALIVE"
            ]
            if len(nodes) >= count:
                return nodes
            time.sleep(1)
        raise TimeoutError(
            f"{count} nodes not alive after {timeout} s:\n{self.log.read_text()[-3000:]}"
        )

    @property
    def gcs_address(self) -> str:
        """Where worker nodes join."""
        return f"127.0.0.1:{self.port}"


class RayWorker(_Node):
    """``ray start --address HEAD --block``: a worker node joining ``head``.

    Args:
        head: The head node.
        num_cpus: CPUs of this node.
        num_gpus: Logical GPUs of this node (no device is needed to schedule on them).
        python: As for :class:`RayHead`.
    """

    def __init__(
        self, head: RayHead, *, num_cpus: int = 2, num_gpus: int = 0, python: str | None = None
    ):
        # Its own temp folder, as on another machine: two nodes sharing one would share (and
        # delete under each other) the unpacked job package.
        self.temp = tempfile.mkdtemp(prefix="trw", dir="/tmp")
        self.log = Path(self.temp) / "worker.log"
        self._start(
            [
                *_ray_start(python),
                f"--address={head.gcs_address}",
                "--block",
                f"--num-cpus={num_cpus}",
                f"--num-gpus={num_gpus}",
                f"--memory={2 * 1024**3}",
                f"--object-store-memory={100 * 1024**2}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={self.temp}",
                "--disable-usage-stats",
            ],
            head.env,
        )


class Driver:
    """``python -m tuner.run`` in its own process (and session), output lines time-stamped."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.lines: list[tuple[float, str]] = []
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuner.run", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float = 300) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"driver timed out; output:\n{self.output}") from None
        self._reader.join(timeout=5)
        return rc

    def kill(self) -> None:
        """SIGKILL the driver (its whole session: no clean-up runs)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=5)

    def first(self, pattern: str) -> float | None:
        """Time of the first output line matching ``pattern``."""
        rx = re.compile(pattern)
        return next((t for t, line in self.lines if rx.search(line)), None)

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)
