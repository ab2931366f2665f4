"""CPU trials widen their intra-op threads to CPUs that nothing else is using.

A search packs trials by their CPU request: with 2 CPUs and ``cpu: 1`` two trials run at
once, one thread each. When fewer trials run than fit (the last trials of an ASHA search,
a search with fewer trials than CPUs), the idle CPUs would stay idle for the rest of the
search. Each CPU trial therefore registers on a node-local board (one file per live trial
process, naming its pid and CPU request) and, at most every :data:`CHECK_S` seconds
(checked before each batch), sets its PyTorch thread count to the smaller of

* its own request plus its share of the pool CPUs that no live trial on the board requested
  (shares in proportion to the requests), and
* the CPUs of the machine that processes other than this one left idle over the last
  interval (``/proc/stat`` against this process's own CPU time, rounded half up), never
  below its request.

The second bound matters: a PyTorch thread that waits for a busy core stalls every other
thread of the step, so a trial widened onto a core that other work uses runs several times
slower than at its request (measured here: resnet18 at 64 px went from 80 to 14 images/s at
2 threads while other processes loaded the machine). Without ``/proc/stat`` (not Linux) a
trial keeps its request; ``TUNER_CPU_IDLE=N`` replaces the measurement by N idle CPUs (for a
container whose ``/proc/stat`` shows the host's CPUs rather than its own, and for tests).
A trial killed without leaving is noticed at the next read of the board (its pid no longer
runs) and its entry removed.

Thread counts change the order of floating-point reductions, so a trial's figures are
reproducible for the same sequence of thread counts; ``resources.share_idle_cpus: false``
in a spec keeps every trial at its request.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

#: Seconds between two checks of the board and the machine's load.
CHECK_S = 1.0


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


def proc_counters() -> tuple[int, int, int, int]:
    """(all CPU time, busy CPU time, this process's CPU time, CPUs) in clock ticks, from
    ``/proc/stat`` and ``/proc/self/stat``."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    fields = [int(v) for v in lines[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    busy = total - fields[3] - fields[4]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())
    with open("/proc/self/stat") as f:
        stat = f.read()
    after_name = stat[stat.rindex(")") + 2 :].split()
    ours = int(after_name[11]) + int(after_name[12])  # utime, stime (fields 14, 15)
    return total, busy, ours, cpus


class MachineLoad:
    """CPUs that processes other than this one left idle since the previous call.

    Args:
        read: The counters (default: :func:`proc_counters`); they must grow monotonically.
    """

    def __init__(self, read: Callable[[], tuple[int, int, int, int]] = proc_counters) -> None:
        self.read = read
        self._last = read()

    @classmethod
    def of_this_machine(cls) -> MachineLoad | FixedIdle | None:
        """The machine's load (``$TUNER_CPU_IDLE`` if set), or ``None`` where ``/proc``
        cannot be read."""
        fixed = os.environ.get("TUNER_CPU_IDLE")
        if fixed:
            return FixedIdle(float(fixed))
        try:
            return cls()
        except (OSError, ValueError, IndexError):
            return None

    def idle_cpus(self) -> float | None:
        """CPUs not used by other processes over the interval (``None``: too short to tell)."""
        now = self.read()
        total, busy, ours = (a - b for a, b in zip(now[:3], self._last[:3], strict=True))
        cpus = now[3]
        if total < cpus * 10:  # under ~0.1 s of ticks per CPU: keep the previous decision
            return None
        self._last = now
        others = max(0, busy - ours) * cpus / total
        return max(0.0, cpus - others)


class FixedIdle:
    """A stated number of idle CPUs in place of a measurement (``TUNER_CPU_IDLE``)."""

    def __init__(self, cpus: float) -> None:
        if cpus < 0:
            raise ValueError(f"TUNER_CPU_IDLE must be >= 0 CPUs, but got {cpus}")
        self.cpus = cpus

    def idle_cpus(self) -> float:
        """The stated idle CPUs."""
        return self.cpus


class CpuShare:
    """This process's entry on the board, and its thread count.

    Args:
        own: CPUs the trial requested (its thread count when the node is full).
        pool: CPUs the search may use on this node (the node's Ray CPU resource).
        board: The board folder (default: :func:`default_board`).
        set_threads: Applies a thread count (default: ``torch.set_num_threads``).
        load: Measures the machine's idle CPUs (default: :meth:`MachineLoad.of_this_machine`;
            where that is ``None`` the trial keeps its request).
    """

    def __init__(
        self,
        own: int,
        pool: int,
        board: Path | None = None,
        set_threads: Callable[[int], object] = torch.set_num_threads,
        load: MachineLoad | FixedIdle | None = None,
    ) -> None:
        if own < 1 or pool < 1:
            raise ValueError(f"own and pool must be >= 1 CPUs, but got own={own}, pool={pool}")
        self.own, self.pool, self.set_threads = own, pool, set_threads
        self.load = load if load is not None else MachineLoad.of_this_machine()
        self.board = board or default_board()
        self.board.mkdir(parents=True, exist_ok=True)
        self.entry = self.board / f"{os.getpid()}-{own}"
        self.entry.touch()
        self.threads = own
        self._checked = -float("inf")  # the first batch checks (the load may not tell yet)

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

    def board_threads(self) -> int:
        """Own request plus this trial's share of the pool CPUs no live trial requested."""
        self.board.mkdir(parents=True, exist_ok=True)
        self.entry.touch()  # (again, if the board was cleaned away)
        live = max(self.live_cpus(), self.own)
        return self.own + max(0, self.pool - live) * self.own // live

    def update(self) -> int:
        """Check the board and the load if :data:`CHECK_S` has passed; apply and return the
        thread count."""
        now = time.monotonic()
        if now - self._checked < CHECK_S:
            return self.threads
        self._checked = now
        threads = self.own
        if self.load is not None:
            idle = self.load.idle_cpus()
            if idle is None:
                return self.threads
            threads = max(self.own, min(self.board_threads(), int(idle + 0.5)))
        if threads != self.threads:
            self.set_threads(threads)
            self.threads = threads
        return threads

    def close(self) -> None:
        """Leave the board (the other trials widen at their next check)."""
        self.entry.unlink(missing_ok=True)
