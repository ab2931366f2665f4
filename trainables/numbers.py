"""Numbers as text: the one formatter of the figures the CLIs, the live view and the
reports print.

No dependencies (numpy and pandas values work through their Python protocols). Missing
values (``None``, NaN, pandas' ``NA``) print as ``na``: ``—`` unless a caller says otherwise
(the report writes ``n/a``).
"""

from __future__ import annotations

from typing import Any

#: How a missing value prints by default.
MISSING = "—"
#: SI suffixes of large counts (parameters, MACs), largest first.
SI_UNITS = {"G": 1e9, "M": 1e6, "k": 1e3}


def is_missing(value: Any) -> bool:
    """Whether ``value`` is ``None``, NaN (or NaT) or pandas' ``NA``."""
    if value is None or type(value).__name__ == "NAType":
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):  # arrays and the like are values
        return False


def si(value: Any, digits: int = 4, *, units: str = "GMk", fixed: bool = False, na=MISSING) -> str:
    """A count with an SI suffix, paper 2's style: ``2.2508M``, ``2.3818G``, ``98.71k``.

    Args:
        value: The count.
        digits: Significant digits (``fixed``: decimals).
        units: The suffixes to use, largest first (of ``G``, ``M``, ``k``): the largest whose
            size the value reaches.
        fixed: ``digits`` decimals (``2.2508M``) rather than significant digits; a value
            below every unit is then written in the smallest one (``0.0500M``).
        na: Text of a missing value.

    A value below every unit, without ``fixed``, is written as an integer.
    """
    if is_missing(value):
        return na
    value = float(value)
    spec = f".{digits}f" if fixed else f".{digits}g"
    for unit in units:
        if abs(value) >= SI_UNITS[unit]:
            return f"{value / SI_UNITS[unit]:{spec}}{unit}"
    if fixed:
        return f"{value / SI_UNITS[units[-1]]:{spec}}{units[-1]}"
    return f"{value:.0f}"


def number(value: Any, digits: int = 4, *, na=MISSING) -> str:
    """Any table cell: integers (also integral floats) exactly, other numbers to ``digits``
    significant digits, text as it is (text holding a fractional number is a number)."""
    if is_missing(value):
        return na
    if isinstance(value, str):
        try:
            parsed = float(value)
        except ValueError:
            return value
        fractional = "." in value and parsed == parsed and abs(parsed) != float("inf")
        return f"{parsed:.{digits}g}" if fractional and parsed != int(parsed) else value
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float):
        integral = value.is_integer() and abs(value) < 1e15
        return str(int(value)) if integral else f"{value:.{digits}g}"
    return str(value)


def param_value(value: Any) -> str:
    """A parameter value as a spec would write it: ``0.001``, ``1e-05``, ``32``, ``adam``."""
    if isinstance(value, float):
        small_or_large = value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4)
        return f"{value:.3g}" if small_or_large else f"{value:g}"
    return str(value)
