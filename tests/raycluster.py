"""Helpers for tests that start their own Ray processes next to any other Ray on the machine.

Every process gets explicit ports, its own temp folder and the same token authentication
(``RAY_AUTH_MODE=token`` plus a random ``RAY_AUTH_TOKEN``); only the processes a test started
are stopped (never ``ray stop``, which would stop every Ray instance of the machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class RayHead:
    """``ray start --head --block`` with the dashboard on 127.0.0.1, stopped by its own PID."""

    def __init__(self, *, num_cpus: int = 2, env: dict[str, str] | None = None):
        self.temp = tempfile.mkdtemp(prefix="trh", dir="/tmp")  # short: Unix socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {**os.environ, **(env or {})}
        self.log = Path(self.temp) / "head.log"
        cmd = [
            "ray",
            "start",
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
        ]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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

    def stop(self) -> None:
        """SIGTERM our ``ray start --block``: it stops the processes of this node only."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)
