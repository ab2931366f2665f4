"""Compaction of the results store: each table's per-trial Parquet files into one file.

A search writes one file per trial in ``trials/`` and in ``epochs/`` (see
:mod:`tuner.results`); a folder of thousands of small files is slow to read. :func:`compact`
packs the rows of every *finished* trial (a trials row with a
:data:`~tuner.results.FINISHED_STATUSES` status; its epochs too) into one
``compacted-<id>.parquet`` per table, together with the rows of earlier compacted files.
During a long search the driver adds segments (``merge=False``: a compacted file of the
trials finished since the last one, every :data:`SEGMENT_TRIALS` trials that end), so that
the folder never holds many more per-trial files than that, plus one file per segment, and
readers stay fast while it runs.
The files of other trials (failed, running, without a row) stay as they are: a resumed
search retries failed trials and rewrites their files, and a finished trial is never
written again, so every row lives in exactly one file. ``tuner.run`` compacts at the end of
a search, ``python -m tuner.rank DIR --compact`` on demand.

Atomicity: the new content of a table folder (the compacted file, and hard links to every
file that stays, ``_quarantine/`` and ``_orphaned/`` included) is built in a hidden sibling
folder, then the two folders are swapped in one step (Linux ``renameat2`` with
``RENAME_EXCHANGE``), and the old content, now in the hidden folder, is removed. A reader of
``pd.read_parquet(".../trials")`` sees either the old files or the new ones, never both and
never neither; a compaction killed at any step leaves the folder as it was or as it becomes,
plus a hidden leftover that readers skip and the next compaction removes. A reader that
listed the folder just before the swap and opens a file just after it gets "file not found"
(:func:`tuner.results.load` then reads the folder again).

Compaction needs a local folder (or a shared filesystem that supports ``RENAME_EXCHANGE``);
elsewhere (``s3://``, ``gs://``) it raises :class:`CompactionError` and the per-trial files
stay, which every reader handles.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tuner.results import (
    COMPACTED,
    EPOCH_SCHEMA,
    EPOCHS,
    FINISHED_STATUSES,
    TRIAL_SCHEMA,
    TRIALS,
    filesystem,
)

#: Trials that end between two segments of a running search (see :func:`compact`).
SEGMENT_TRIALS = 500
#: Prefix of the hidden folders a compaction builds (and leaves when killed).
LEFTOVER = ".compacting-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class CompactionError(RuntimeError):
    """The folder cannot be compacted here (the reason is in the message)."""


@dataclass
class Compaction:
    """What one compaction did, per table: files packed, rows in the compacted file."""

    packed: dict[str, int]
    rows: dict[str, int]
    kept: dict[str, int]

    def describe(self) -> str:
        return "; ".join(
            f"{t}: {self.packed[t]} file(s) packed into one of {self.rows[t]} rows"
            + (f", {self.kept[t]} left per trial" if self.kept[t] else "")
            for t in (TRIALS, EPOCHS)
        )


def exchange(a: str, b: str) -> None:
    """Swap two folders in one step (``renameat2(RENAME_EXCHANGE)``).

    Raises:
        CompactionError: the system or filesystem cannot do it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        raise CompactionError("compaction needs renameat2 (Linux, glibc >= 2.28)")
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise CompactionError(
                f"the filesystem of {b} cannot swap two folders in one step "
                f"(renameat2 RENAME_EXCHANGE: {os.strerror(err)}); the per-trial files stay"
            )
        raise OSError(err, os.strerror(err), b)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
    )


def _read(path: Path, schema: pa.Schema) -> pa.Table | None:
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowInvalid, OSError):
        return None  # unreadable: left in place for load() / --resume to quarantine


def _finished(tables: dict[Path, pa.Table | None]) -> set[str]:
    """Trial ids with a finished row in the files of a trials folder."""
    ids: set[str] = set()
    for table in tables.values():
        if table is None:
            continue
        for trial_id, status in zip(
            table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True
        ):
            if status in FINISHED_STATUSES:
                ids.add(trial_id)
    return ids


def _link_tree(src: Path, dest: Path, skip: set[Path]) -> None:
    """Hard-link every file under ``src`` into ``dest`` (same layout), but ``skip``."""
    for root, _, files in os.walk(src):
        here = dest / Path(root).relative_to(src)
        here.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = Path(root) / name
            if path in skip or (Path(root) == src and name.startswith(".")):
                continue  # packed, or a temporary file of a killed writer
            os.link(path, here / name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _compact_table(
    exp: Path,
    table: str,
    schema: pa.Schema,
    finished: set[str],
    read: dict | None = None,
    merge: bool = True,
) -> tuple[int, int, int]:
    """Compact one table folder; returns (files packed, rows compacted, files kept).

    ``read``: the folder's files already read (path -> table, ``None``: unreadable).
    ``merge``: the earlier compacted files are packed too (else only those holding rows
    that a per-trial file replaces).
    """
    folder = exp / table
    if not folder.is_dir():
        return 0, 0, 0
    files = _parquet_files(folder)
    read = read or {}

    def rows_of(path: Path) -> pa.Table | None:
        return read[path] if path in read else _read(path, schema)

    packed: list[Path] = []
    parts: list[pa.Table] = []
    fresh: set[str] = set()  # trials whose per-trial file replaces their compacted rows
    for path in files:
        if path.name.startswith(COMPACTED):
            continue
        trial_id = path.name[: -len(".parquet")]
        if trial_id not in finished:
            continue
        rows = rows_of(path)
        if rows is None:
            continue
        packed.append(path)
        parts.append(rows)
        fresh.add(trial_id)
    old = [p for p in files if p.name.startswith(COMPACTED)]
    if not packed and (len(old) <= 1 or not merge):
        return 0, sum(pq.read_metadata(p).num_rows for p in old), len(files) - len(old)
    loose = len(files) - len(old)
    for path in old:
        rows = rows_of(path)
        if rows is None:
            continue  # unreadable: it stays, for load() to report
        ids = rows.column("trial_id").to_pylist()
        keep = [i not in fresh for i in ids]
        if merge or not all(keep):
            parts.append(rows.filter(pa.array(keep)) if not all(keep) else rows)
            packed.append(path)
    merged = pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()
    build = exp / f"{LEFTOVER}{table}-{uuid.uuid4().hex[:12]}"
    build.mkdir()
    target = build / f"{COMPACTED}{uuid.uuid4().hex[:12]}.parquet"
    pq.write_table(merged, target)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    _link_tree(folder, build, set(packed))
    _fsync_dir(build)
    exchange(str(build), str(folder))  # the one step that readers see
    _fsync_dir(exp)
    shutil.rmtree(build, ignore_errors=True)  # the old content
    return len(packed), merged.num_rows, loose - len(fresh)


def remove_leftovers(exp: Path) -> list[str]:
    """Remove the hidden folders of compactions that were killed (never read by anyone)."""
    gone = []
    for path in exp.glob(f"{LEFTOVER}*"):
        shutil.rmtree(path, ignore_errors=True)
        gone.append(str(path))
    return gone


def compact(exp_dir: str, *, merge: bool = True) -> Compaction:
    """Pack the finished trials' rows of ``<results>/<experiment>`` into one file per table.

    Run it only where nothing else writes the folder: ``tuner.run`` calls it at the end of a
    search, ``tuner.rank --compact`` under the experiment's lock, and the driver during a
    search from the thread that writes the rows (:class:`~tuner.tune.callbacks.Segments`).

    Args:
        exp_dir: ``<results>/<experiment>``.
        merge: Rewrite the earlier compacted files into the new one, leaving one file per
            table (the default). ``False`` adds a *segment*: one more compacted file holding
            only the newly finished trials, so that a search compacting as it goes writes
            each row into one segment, not once per compaction.

    Raises:
        CompactionError: a folder that is not local, or a filesystem without
            ``RENAME_EXCHANGE``; nothing has changed then.
    """
    fs, base = (None, "") if "://" in str(exp_dir) else filesystem(exp_dir)
    if not isinstance(fs, pafs.LocalFileSystem):
        raise CompactionError(
            f"compaction needs a local results folder (atomic folder swap), but got "
            f"{exp_dir!r}; the per-trial files stay and read as before"
        )
    exp = Path(base)
    remove_leftovers(exp)
    trials = {p: _read(p, TRIAL_SCHEMA) for p in _parquet_files(exp / TRIALS)}
    finished = _finished(trials)
    packed, rows, kept = {}, {}, {}
    for table, schema, read in ((TRIALS, TRIAL_SCHEMA, trials), (EPOCHS, EPOCH_SCHEMA, None)):
        packed[table], rows[table], kept[table] = _compact_table(
            exp, table, schema, finished, read, merge
        )
    return Compaction(packed, rows, kept)


def split_out(fs: pafs.FileSystem, path: str, trial_ids: set[str], dest: str) -> list[str]:
    """Move the rows of ``trial_ids`` from a compacted file to ``dest/<trial_id>.parquet``.

    The rows are written to ``dest`` first (a folder readers skip, such as ``_orphaned/``),
    then the compacted file is replaced without them in one step: a crash in between leaves
    them in both places, and the rows stay read once.

    Returns:
        The trial ids moved.
    """
    from tuner.results import write_atomic

    table = pq.read_table(path, filesystem=fs)
    ids = table.column("trial_id").to_pylist()
    moved = sorted({i for i in ids if i in trial_ids})
    if not moved:
        return []
    for trial_id in moved:
        rows = table.filter(pa.array([i == trial_id for i in ids]))
        write_atomic(rows, f"{dest}/{trial_id}.parquet", fs)
    write_atomic(table.filter(pa.array([i not in trial_ids for i in ids])), path, fs)
    return moved
