"""A failed trial's message and traceback, as the trials table keeps them."""

from __future__ import annotations

import re
from pathlib import Path

import ray
from ray.exceptions import RayTaskError, UnserializableException

#: Longest error message kept in the trials table (the traceback has its own column).
MAX_MESSAGE = 2000
MAX_TRACEBACK = 20000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task name in its tracebacks


def error_message(exc: BaseException) -> str:
    """The message line of an exception a trial raised: ``Type: first line of its text``.

    Ray hands the driver a ``RayTaskError`` whose ``cause`` is the trial's own exception
    (the project's exceptions all survive that copy); its text is Ray's traceback, so the
    cause's text is used. A cause Ray could not rebuild leaves its original traceback in
    the text, whose last line names it.
    """
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    if isinstance(exc, RayTaskError | UnserializableException):
        return _last_line(str(exc)) or type(exc).__name__
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (f"{type(exc).__name__}: {first}" if first else type(exc).__name__)[:MAX_MESSAGE]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_MESSAGE] if lines else ""


def trial_error(trial) -> tuple[str, str | None]:
    """``(message, traceback)`` of a trial's last failure, as Tune recorded it.

    Tune writes the error (text, and the exception pickled) to the trial's folder on the
    driver first and syncs it to storage later: both places are read, local first.
    """
    text = exc = None
    meta = trial.run_metadata
    local = Path(trial.local_path) if trial.local_path else None
    if local is not None and meta.error_filename and (local / meta.error_filename).is_file():
        text = (local / meta.error_filename).read_text(errors="replace")
    try:
        if local is not None and meta.pickled_error_filename:
            pickled = local / meta.pickled_error_filename
            if pickled.is_file():
                exc = ray.cloudpickle.loads(pickled.read_bytes())
        if exc is None:
            exc = trial.get_pickled_error()
        if text is None:
            text = trial.get_error()
    except Exception:  # an exception class the driver cannot rebuild: keep the text
        exc = exc if isinstance(exc, BaseException) else None
    if isinstance(exc, BaseException):
        message = error_message(exc)
    else:
        message = _last_line(str(text or "")) or "trial failed"
    text = _ANSI.sub("", str(text))[-MAX_TRACEBACK:] if text else None
    return _ANSI.sub("", message), text
