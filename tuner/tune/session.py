"""Ray itself: start a private local instance or join a cluster, and ask its nodes.

Local runs are kept private (loopback only, token authentication, a private session folder,
a reaper after a SIGKILL; see :class:`_LocalRun` and the README's security section).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from tuner import provenance


def init_ray(address: str | None, *, num_cpus: int | None, num_gpus: float | None) -> dict:
    """Start (local) or join (``address``) Ray; returns the cluster's resources.

    Joining a cluster, the driver's ``TUNER_*`` environment variables (cache folder, test
    switches) are passed to every trial worker through the job's runtime environment.
    """
    if ray.is_initialized():
        return ray.cluster_resources()
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": "ERROR"}
    if address:
        # Trial workers on other nodes do not inherit this process's environment. In a job
        # submitted with its own env_vars (tuner.submit), the same keys are allowed to meet.
        env = {k: v for k, v in os.environ.items() if k.startswith("TUNER_")}
        env.pop(provenance.MANIFEST_ENV, None)
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, **quiet)
    else:
        global _local
        _local = _LocalRun.start()
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus or os.cpu_count(),
                num_gpus=num_gpus,
                include_dashboard=False,
                object_store_memory=256 * 1024**2,
                _temp_dir=_local.temp_dir,
                **quiet,
            )
        except BaseException:
            _local.stop()
            _local = None
            raise
        _local.announce()
    return ray.cluster_resources()


@dataclass
class _LocalRun:
    """What a local run changes in this process to keep its Ray instance private.

    * **Loopback only.** Ray binds every server of a node (GCS, raylet, workers, the
      dashboard and runtime-env agents) to the node's IP address, and its gRPC servers to
      all interfaces unless that address is 127.0.0.1. On Linux it picks a routable
      address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is ``0`` (read when ``ray`` is
      imported: both the variable, for the processes Ray starts, and Ray's constant, for
      this process, are set). Measured with ``ss -ltnp``: every socket of the run listens
      on 127.0.0.1 (see the README's security section).
    * **Token authentication** with a random token per run, passed to Ray's processes in
      their environment (never written to disk; Ray would otherwise write
      ``~/.ray/auth_token``), unless ``RAY_AUTH_MODE=disabled`` is set explicitly.
    * **A private folder** for Ray's session (its Unix sockets and logs): a fresh
      ``/tmp/tuner-ray-*`` of mode 0700, where Ray's default ``/tmp/ray`` is writable by
      every user.
    * **Clean-up after a SIGKILL.** A reaper process (:mod:`tuner.reaper`) follows the
      processes ``ray.init`` started and their descendants, and stops them and removes the
      folder when this process ends, however it ends.

    :meth:`stop` restores the environment (a test may start several runs in one process).
    """

    saved_env: dict[str, str | None]
    cluster_flag: bool
    reaper: subprocess.Popen | None
    temp_dir: str

    @classmethod
    def start(cls) -> _LocalRun:
        from ray._private import ray_constants

        from tuner import reaper

        run_id = secrets.token_hex(8)
        env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", reaper.MARK: run_id}
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
            env["RAY_AUTH_MODE"] = "token"
            if not os.environ.get("RAY_AUTH_TOKEN"):
                env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        temp_dir = tempfile.mkdtemp(prefix="tuner-ray-", dir="/tmp")  # short: socket paths
        proc = None
        if Path("/proc/self/environ").exists():
            proc = subprocess.Popen(
                [sys.executable, "-m", "tuner.reaper", run_id, temp_dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(project_root()),  # importable without an install, as a job's copy
            )
        saved = {k: os.environ.get(k) for k in env}
        run = cls(saved, ray_constants.ENABLE_RAY_CLUSTER, proc, temp_dir)
        os.environ.update(env)
        ray_constants.ENABLE_RAY_CLUSTER = False
        _reload_auth()
        return run

    def announce(self) -> None:
        """Tell the reaper which processes ``ray.init`` started: this process's children
        since the reaper (the reaper follows their descendants)."""
        if self.reaper is None or self.reaper.stdin is None:
            return
        from tuner import reaper

        kids = reaper.children(os.getpid(), since=reaper.start_time(self.reaper.pid))
        kids.pop(self.reaper.pid, None)
        try:
            self.reaper.stdin.write(" ".join(f"{p}:{t}" for p, t in kids.items()).encode())
            self.reaper.stdin.write(b"\n")
            self.reaper.stdin.flush()
        except OSError:  # the reaper is gone: nothing to clean up after a SIGKILL then
            pass

    def stop(self) -> None:
        """Restore the environment and let the reaper stop what is left."""
        from ray._private import ray_constants

        for key, value in self.saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray_constants.ENABLE_RAY_CLUSTER = self.cluster_flag
        _reload_auth()
        if self.reaper is not None and self.reaper.stdin is not None:
            try:
                self.reaper.stdin.close()  # the reaper removes the folder after the processes
            except OSError:  # the reaper is gone (killed): remove the folder here
                shutil.rmtree(self.temp_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def project_root() -> Path:
    """The folder that holds the ``tuner`` package (``python -m tuner.reaper`` runs there)."""
    from tuner import reaper

    return Path(reaper.__file__).resolve().parents[1]


#: The local run started by :func:`init_ray` (stopped by :func:`shutdown_ray`).
_local: _LocalRun | None = None


def _reload_auth() -> None:
    """Make Ray in this process read ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` again (cached)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def alive_nodes() -> int:
    """Alive nodes of the Ray cluster this driver is connected to."""
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def on_every_node(fn: Callable, *args) -> dict[str, tuple[str, object]]:
    """Run ``fn(*args)`` once on every alive node: node id -> (node IP, its result).

    One zero-CPU task per node, pinned to it (a node without free CPUs still answers).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(fn)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    found = ray.get(
        [
            task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(*args)
            for n in nodes
        ]
    )
    return {n["NodeID"]: (n["NodeManagerAddress"], r) for n, r in zip(nodes, found, strict=True)}


def _exists(path: str) -> bool:
    return Path(path).expanduser().exists()


def missing_on_nodes(path: str) -> dict[str, str]:
    """Alive nodes on which ``path`` does not exist (node id -> node IP).

    Every node must read a dataset from the same path (a shared mount, or a copy synced by
    cluster setup).
    """
    return {node: ip for node, (ip, ok) in on_every_node(_exists, path).items() if not ok}


def _code_problem() -> str | None:
    try:
        provenance.check_process()
    except provenance.CodeMismatchError as err:
        return str(err)
    return None


def code_skew_on_nodes() -> dict[str, str]:
    """Alive nodes whose workers import other code than this driver (node id -> problem).

    The driver's fingerprint (``$TUNER_CODE_HASH``) reaches the workers through the job's
    runtime environment; see :mod:`tuner.provenance`.
    """
    found = on_every_node(_code_problem)
    return {node: f"{ip}: {problem}" for node, (ip, problem) in found.items() if problem}


def shutdown_ray() -> None:
    """Disconnect from Ray (and stop it when this process started it)."""
    global _local
    if ray.is_initialized():
        ray.shutdown()
    if _local is not None:
        _local.stop()
        _local = None


def visible_gpus(resources: dict) -> float:
    """GPUs Ray can schedule (logical GPUs count, so tests can declare them)."""
    return float(resources.get("GPU", 0.0))


def job_client(address: str):
    """A Ray ``JobSubmissionClient`` for a cluster's dashboard ``address``."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)
