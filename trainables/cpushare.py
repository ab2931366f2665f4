"""CPU trials widen their intra-op threads to the CPUs that no other trial of the node uses.

A search packs trials by their CPU request: with 2 CPUs and ``cpu: 1`` two trials run at
once, one thread each. When fewer trials run than fit (the last trials of an ASHA search,
a search with fewer trials than CPUs), the idle CPUs would stay idle for the rest of the
search. Each CPU trial therefore registers on a node-local board (one file per live trial
process, naming its pid and CPU request) and, before every batch, sets its PyTorch thread
count to its own request plus its share of the CPUs no live trial requested. The board
changes when a trial starts or ends, so the check is a ``stat`` of its folder: a new trial
is seen by the others within one batch. A trial killed without leaving (its process gone,
its entry still there) is noticed at the next full read, at least every
:data:`REREAD_S` seconds, and its entry removed.

Thread counts change the order of floating-point reductions, so a trial's figures are
reproducible for the same sequence of thread counts; ``resources.share_idle_cpus: false``
in a spec keeps every trial at its request.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

#: Seconds after which the board is read again even if its folder did not change.
REREAD_S = 5.0


def default_board() -> Path:
    """The node-local board folder: ``$TUNER_CPU_BOARD``, else in ``/dev/shm`` when there is
    one, else in the temp folder.

    Every search on a machine shares one board (their trials compete for the same cores);
    ``TUNER_CPU_BOARD`` gives a search its own, as the tests do.
    """
    if os.environ.get("TUNER_CPU_BOARD"):
        return Path(os.environ["TUNER_CPU_BOARD"])
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"tuner-cpu-share-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CpuShare:
    """This process's entry on the board, and its thread count.

    Args:
        own: CPUs the trial requested (its thread count when the node is full).
        pool: CPUs the search may use on this node (the node's Ray CPU resource).
        board: The board folder (default: :func:`default_board`).
        set_threads: Applies a thread count (default: ``torch.set_num_threads``).
    """

    def __init__(
        self, own: int, pool: int, board: Path | None = None, set_threads=torch.set_num_threads
    ) -> None:
        if own < 1 or pool < 1:
            raise ValueError(f"own and pool must be >= 1 CPUs, but got own={own}, pool={pool}")
        self.own, self.pool, self.set_threads = own, pool, set_threads
        self.board = board or default_board()
        self.board.mkdir(parents=True, exist_ok=True)
        self.entry = self.board / f"{os.getpid()}-{own}"
        self.entry.touch()
        self.threads = own
        self._seen: int | None = None
        self._read_at = -float("inf")

    def live_cpus(self) -> int:
        """CPUs requested by the live trials on the board (dead entries are removed)."""
        total = 0
        for item in os.scandir(self.board):
            pid, _, cpus = item.name.partition("-")
            if not (pid.isdigit() and cpus.isdigit()):
                continue
            if int(pid) == os.getpid() or _alive(int(pid)):
                total += int(cpus)
            else:
                Path(item.path).unlink(missing_ok=True)
        return total

    def update(self) -> int:
        """Re-read the board if it changed; apply and return this trial's thread count."""
        try:
            stamp = os.stat(self.board).st_mtime_ns
        except FileNotFoundError:  # the board was cleaned away: register again
            self.board.mkdir(parents=True, exist_ok=True)
            self.entry.touch()
            stamp = None
        now = time.monotonic()
        if stamp is not None and stamp == self._seen and now - self._read_at < REREAD_S:
            return self.threads
        self._seen, self._read_at = stamp, now
        if not self.entry.exists():
            self.entry.touch()
        live = max(self.live_cpus(), self.own)
        spare = max(0, self.pool - live)
        threads = self.own + spare * self.own // live
        if threads != self.threads:
            self.set_threads(threads)
            self.threads = threads
        return threads

    def close(self) -> None:
        """Leave the board (the other trials widen at their next batch)."""
        self.entry.unlink(missing_ok=True)
