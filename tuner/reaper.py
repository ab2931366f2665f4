"""Stops the processes of a local Ray instance once the driver that started it is gone.

A driver killed with SIGKILL cannot stop its Ray: Ray's GCS and raylet follow it at once,
but its dashboard agent and runtime-env agent wait for a GCS that never answers and keep
their ports open for about a minute (61.6 s in ``tests/test_reliability.py`` with Ray
2.60). So a local run (:func:`tuner.tune.init_ray`) starts this reaper in its own session
before Ray, its stdin a pipe from the driver, and once Ray is up sends it the processes
that ``ray.init`` started (``pid:start-time`` on one line, :func:`children`). The reaper
follows their process tree every :data:`TICK_S` seconds (the agents and trial workers are
the raylet's children, and lose that parent when it dies). The pipe reaches EOF when the
driver ends, however it ends; the reaper then sends SIGTERM, and after :data:`GRACE_S`
SIGKILL, to every process of that tree still running (a pid is only signalled while it
names the process that was seen: same start time), removes the run's private Ray folder,
and exits.

Every process of the run also carries an environment variable (:data:`MARK`), which finds
processes started between two looks; it cannot be the only way: Ray renames its processes
(``ray::DashboardAgent``) by writing over the memory ``/proc/<pid>/environ`` shows.

Linux only (it reads ``/proc``); elsewhere it exits without doing anything.

Run as ``python -m tuner.reaper RUN_ID [TEMP_DIR]``.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import time
from pathlib import Path

#: The environment variable that marks the processes of one local run.
MARK = "_TUNER_LOCAL_RUN"
#: Seconds between SIGTERM and SIGKILL.
GRACE_S = 2.0
#: Seconds between two looks at the run's process tree.
TICK_S = 0.5


def _table() -> dict[int, tuple[int, str]]:
    """Every running process: pid -> (parent pid, start time in clock ticks since boot)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            out[int(entry.name)] = (int(fields[1]), fields[19])
    return out


def start_time(pid: int) -> str | None:
    """A process's start time (``None``: gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def children(pid: int, since: str | None = None) -> dict[int, str]:
    """Running children of ``pid`` (started at or after clock tick ``since``): pid -> start."""
    return {
        p: t
        for p, (ppid, t) in _table().items()
        if ppid == pid and (since is None or int(t) >= int(since))
    }


def grow(tree: dict[int, str]) -> dict[int, str]:
    """``tree`` (pid -> start time) with every running descendant of its processes added."""
    table = _table()
    tree = dict(tree)
    live = {p for p, t in tree.items() if table.get(p, (0, None))[1] == t}
    added = True
    while added:
        added = False
        for pid, (ppid, started) in table.items():
            if ppid in live and pid not in live:
                live.add(pid)
                tree[pid] = started
                added = True
    return tree


def marked(run_id: str) -> dict[int, str]:
    """Running processes (other than this one) whose environment carries ``MARK=run_id``."""
    needle = f"{MARK}={run_id}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        started = start_time(int(entry.name))
        if needle in environ.split(b"\0") and started is not None:
            found[int(entry.name)] = started
    return found


def _running(pids: dict[int, str]) -> dict[int, str]:
    return {p: t for p, t in pids.items() if start_time(p) == t}


def _signal(pids: dict[int, str], sig: int) -> None:
    for pid in _running(pids):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def reap(tree: dict[int, str], run_id: str, grace_s: float = GRACE_S) -> int:
    """SIGTERM the run's processes, SIGKILL what is left after ``grace_s``, and wait until
    they are gone; returns how many were found."""
    found = {**grow(tree), **marked(run_id)}
    found.pop(os.getpid(), None)
    _signal(found, signal.SIGTERM)
    deadline = time.time() + grace_s
    while _running(found) and time.time() < deadline:
        time.sleep(0.1)
    found.update(marked(run_id))
    _signal(found, signal.SIGKILL)
    deadline = time.time() + grace_s
    while _running(found) and time.time() < deadline:
        time.sleep(0.05)
    return len(found)


def _roots(line: bytes) -> dict[int, str]:
    out = {}
    for token in line.split():
        pid, _, started = token.decode().partition(":")
        if pid.isdigit() and started.isdigit():
            out[int(pid)] = started
    return out


def main(argv: list[str] | None = None) -> int:
    """Follow the run's processes until EOF on stdin (the driver is gone), then stop them."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or not Path("/proc/self/stat").exists():
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the driver's terminal
    fd, pending, tree = sys.stdin.fileno(), b"", {}
    while True:
        ready, _, _ = select.select([fd], [], [], TICK_S)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                tree.update(_roots(line))
        tree = grow(tree)
    reap(tree, args[0])
    if len(args) == 2:
        shutil.rmtree(args[1], ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
