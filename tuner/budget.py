"""A search's time budget: ``search.time_budget: 2h`` (or ``--time-budget 2h``).

When the budget is spent the search launches no more trials; each running trial finishes
the epoch it is in, reports it, and stops with the status ``stopped-budget`` (its epochs
stay in the tables; it has no test figures, like an early-stopped trial). The run then
prints how much of the search space it covered. The budget counts from the start of the
search (after data preparation and pretraining) of each run; a budget-stopped search is
finished, and ``--resume`` does not launch the trials it never started (run a new
experiment with ``--name`` to go on).

Durations are written ``90s``, ``45m``, ``2h``, ``1h30m``, ``1.5h``, ``2d`` or a bare number
of seconds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration such as ``2h``, ``1h30m``, ``90s`` or ``3600``.

    Raises:
        ValueError: Not a positive duration (the message shows the accepted forms).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 2h, 45m or 1h30m, but got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"expected a duration such as 2h, 45m, 1h30m, 90s or a number of "
                    f"seconds, but got {value!r}"
                ) from None
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError(f"a time budget must be > 0 seconds, but got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h30m``-style text for a number of seconds."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return out


@dataclass
class Budget:
    """A deadline for launching trials.

    Attributes:
        seconds: The budget.
        start: When it started counting (``time.time()``).
    """

    seconds: float
    start: float = field(default_factory=time.time)

    @property
    def deadline(self) -> float:
        """When the budget is spent (``time.time()`` scale)."""
        return self.start + self.seconds

    def spent(self, now: float | None = None) -> bool:
        """Whether the budget is spent at ``now`` (default: now)."""
        return (time.time() if now is None else now) >= self.deadline


def coverage(spec, trials, budget: Budget) -> str:
    """How much of the search space a budget-stopped search covered (one paragraph).

    Args:
        spec: The search's :class:`~tuner.spec.Spec`.
        trials: Its trials table.
        budget: The spent budget.
    """
    from tuner.results import COMPLETED, TRIAL_STATUSES
    from tuner.spec import grid_cells

    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    ran = len(trials)
    if spec.search.algorithm == "grid":
        planned, what = len(grid_cells(spec)), "grid trials (cells x seeds)"
    else:
        planned, what = spec.search.num_samples, "sampled configurations (num_samples)"
    done = counts.get(COMPLETED, 0)
    parts = [f"{done} {COMPLETED}"]
    for status in TRIAL_STATUSES[1:]:
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    return (
        f"time budget {format_duration(budget.seconds)} spent: {ran} of {planned} {what} "
        f"ran ({100 * ran / max(planned, 1):.0f}% of the space): {', '.join(parts)}; "
        f"{max(planned - ran, 0)} not started. The search is finished: to go on, run a new "
        "experiment (--name) with a larger budget"
    )
