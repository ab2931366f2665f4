"""One driver per experiment folder: a lock file with its owner and a heartbeat.

Two drivers writing one experiment folder destroy each other's rows (the second one moves
the first one's trials aside as orphans), so ``tuner.run`` takes this lock before it writes
anything and holds it until it ends. ``<results>/<experiment>/.driver.json`` names the
owner: host, pid, the process's start time, when it took the lock, a random token, and a
heartbeat that a background thread rewrites every :data:`BEAT_S` seconds.

A lock is *held* while its owner lives. A lock left by a driver that died (SIGKILL, a lost
node) is detected and taken over with a message:

* on the owner's own machine (same host name and boot id): its pid no longer runs, or runs
  a process started at another time (a reused pid);
* from another machine (the lock on a shared filesystem): its heartbeat is older than
  :data:`STALE_S`, and does not move during one more beat interval (so a skewed clock is
  not mistaken for a dead driver).

Claims and take-overs on a local or shared POSIX filesystem are made under an exclusive
``filelock`` on ``.driver.json.lock`` (held for milliseconds), so two drivers that start
at the same moment cannot both win. Object stores (``s3://``, ``gs://``) have no such
primitive: there the claim is written, read back after a pause, and the driver whose token
is not the one read back gives way (best effort, see the README).
"""

from __future__ import annotations

import _thread
import json
import os
import secrets
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.fs as pafs
from filelock import FileLock, Timeout

LOCK_NAME = ".driver.json"
#: Seconds between heartbeats.
BEAT_S = 5.0
#: A heartbeat older than this (by the reader's clock) makes a lock on another host suspect.
STALE_S = 30.0


class ExperimentLocked(RuntimeError):
    """Another live driver holds the experiment (the message names it)."""


@dataclass
class Owner:
    """Who holds an experiment folder.

    Attributes:
        host: Host name of the driver's machine.
        boot_id: The machine's boot id (tells two machines of one host name apart).
        pid: Driver process id.
        pid_start: The process's start time in clock ticks since boot (detects a reused pid).
        started: When the lock was taken (UTC, ISO 8601).
        heartbeat: Last heartbeat, seconds since the epoch (the owner's clock).
        beats: Heartbeats written so far.
        token: Random, identifies this claim.
        command: The driver's command line (for the message).
        folder: The experiment folder the lock guards (a lock copied along with a folder
            guards another one).
    """

    folder: str
    host: str
    boot_id: str
    pid: int
    pid_start: int | None
    started: str
    heartbeat: float
    beats: int
    token: str
    command: str

    def describe(self, now: float | None = None) -> str:
        """``host h, pid 1234, started 2025-01-01 12:00:00 UTC (heartbeat 3 s ago)``."""
        age = (now or time.time()) - self.heartbeat
        return (
            f"host {self.host}, pid {self.pid}, started {self.started} "
            f"(heartbeat {age:.0f} s ago; command: {self.command})"
        )


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (``None``: unknown or not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def this_process(folder: str) -> Owner:
    """An :class:`Owner` record of ``folder`` for this process."""
    now = time.time()
    return Owner(
        folder=folder,
        host=socket.gethostname(),
        boot_id=_boot_id(),
        pid=os.getpid(),
        pid_start=_pid_start(os.getpid()),
        started=datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        heartbeat=now,
        beats=0,
        token=secrets.token_hex(8),
        command=" ".join(sys.argv)[:300],
    )


def dead_on_this_machine(owner: Owner) -> str | None:
    """Why ``owner`` is known dead from this machine (``None``: alive or another machine)."""
    if owner.host != socket.gethostname() or owner.boot_id != _boot_id():
        return None
    if not _pid_running(owner.pid):
        return f"pid {owner.pid} no longer runs"
    start = _pid_start(owner.pid)
    if owner.pid_start is not None and start is not None and start != owner.pid_start:
        return f"pid {owner.pid} now belongs to another process"
    return None


class ExperimentLock:
    """The lock of one experiment folder.

    Args:
        fs: The results filesystem (pyarrow).
        exp_dir: The experiment folder on ``fs``.
        beat_s: Seconds between heartbeats.
        stale_s: Age after which a heartbeat of another machine's driver is suspect.
    """

    def __init__(
        self, fs: pafs.FileSystem, exp_dir: str, *, beat_s: float = BEAT_S, stale_s: float = STALE_S
    ):
        self.fs, self.dir = fs, exp_dir
        self.path = f"{exp_dir}/{LOCK_NAME}"
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.beat_s, self.stale_s = beat_s, stale_s
        self.owner: Owner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set when another driver took the lock away (this one was thought dead).
        self.lost = threading.Event()

    # ---------------------------------------------------------------------------- files
    def read(self) -> Owner | None:
        """The recorded owner (``None``: no lock, or an unreadable one)."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = json.loads(f.read().decode())
            return Owner(**data)
        except (FileNotFoundError, OSError, ValueError, TypeError):
            return None

    def _write(self, owner: Owner) -> None:
        text = json.dumps(asdict(owner)).encode()
        if self.local:
            Path(self.dir).mkdir(parents=True, exist_ok=True)
            tmp = f"{self.dir}/.{LOCK_NAME}.{uuid.uuid4().hex}.tmp"
            Path(tmp).write_bytes(text)
            os.replace(tmp, self.path)
        else:
            with self.fs.open_output_stream(self.path) as out:
                out.write(text)

    def _guard(self):
        """The short exclusive section around a claim, take-over, heartbeat or release."""
        if not self.local:
            return _NoGuard()
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        return FileLock(f"{self.path}.lock", timeout=30)

    # --------------------------------------------------------------------------- checks
    def why_dead(self, owner: Owner) -> str | None:
        """Why the recorded ``owner`` is dead, or ``None`` while it lives.

        From another machine a heartbeat older than ``stale_s`` is watched for one more
        beat interval: a driver whose clock is merely skewed keeps beating.
        """
        if owner.folder != self.dir:
            return f"the lock was copied from {owner.folder} along with the folder"
        local = dead_on_this_machine(owner)
        if local is not None:
            return local
        if owner.host == socket.gethostname() and owner.boot_id == _boot_id():
            return None  # alive here
        age = time.time() - owner.heartbeat
        if age < self.stale_s:
            return None
        time.sleep(self.beat_s * 1.5)
        again = self.read()
        if again is None or again.token != owner.token:
            return "the lock changed while it was checked"
        if again.beats != owner.beats:
            return None
        return f"no heartbeat for {age:.0f} s (a heartbeat is written every {self.beat_s:g} s)"

    def holder(self) -> Owner | None:
        """The live driver holding the lock now, if any (reads only)."""
        owner = self.read()
        if owner is None or self.why_dead(owner) is not None:
            return None
        return owner

    def check(self, experiment: str) -> None:
        """Refuse early when a live driver holds the lock (reads only).

        Raises:
            ExperimentLocked: naming the driver (host, pid, start time).
        """
        owner = self.holder()
        if owner is not None:
            raise ExperimentLocked(_locked_message(experiment, owner, self.path))

    # ------------------------------------------------------------------------- acquire
    def acquire(self, experiment: str) -> str | None:
        """Take the lock and start the heartbeat; returns a note when a dead driver's lock
        was taken over.

        Raises:
            ExperimentLocked: a live driver holds it (the message names host, pid, start).
        """
        mine = this_process(self.dir)
        note = None
        try:
            guard = self._guard().__enter__()
        except Timeout:
            raise ExperimentLocked(
                f"experiment {experiment!r}: another driver is claiming {self.path} now "
                "(its guard file stayed locked for 30 s)"
            ) from None
        try:
            owner = self.read()
            if owner is not None and owner.token != mine.token:
                why = self.why_dead(owner)
                if why is None:
                    raise ExperimentLocked(_locked_message(experiment, owner, self.path))
                note = (
                    f"note: took over the lock of experiment {experiment!r} from a driver that "
                    f"is gone ({owner.describe()}): {why}"
                )
            self._write(mine)
        finally:
            guard.__exit__(None, None, None)
        if not self.local:  # no exclusive create on object stores: read the claim back
            time.sleep(1.0)
            back = self.read()
            if back is None or back.token != mine.token:
                raise ExperimentLocked(_locked_message(experiment, back or mine, self.path))
        self.owner = mine
        self._thread = threading.Thread(target=self._beat, name="tuner-lock", daemon=True)
        self._thread.start()
        return note

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            with self._guard():
                current = self.read()
                if current is None or current.token != self.owner.token:
                    self.lost.set()
                else:
                    self.owner.heartbeat, self.owner.beats = time.time(), self.owner.beats + 1
                    self._write(self.owner)
            if self.lost.is_set():
                taker = current.describe() if current else "nobody (the lock file was removed)"
                print(
                    f"error: the lock of {self.dir} was taken by another driver ({taker}); "
                    "this driver stops so that one driver writes the folder",
                    file=sys.stderr,
                    flush=True,
                )
                _thread.interrupt_main()
                return

    def release(self) -> None:
        """Stop the heartbeat and remove the lock (only if it is still this driver's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.beat_s + 5)
        if self.owner is None:
            return
        with self._guard():
            current = self.read()
            if current is not None and current.token == self.owner.token:
                self.fs.delete_file(self.path)
        self.owner = None


class _NoGuard:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _locked_message(experiment: str, owner: Owner, path: str) -> str:
    return (
        f"experiment {experiment!r} is being run by another driver: {owner.describe()}; "
        f"lock file {path}. Wait for that run to end (or stop it); a lock left by a driver "
        "that died is detected and taken over by the next run"
    )


__all__ = ["ExperimentLock", "ExperimentLocked", "Owner", "this_process"]
