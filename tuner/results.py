"""The results store: one Parquet file per trial, written atomically by the driver.

Layout under ``<results>/<experiment>/``::

    trials/<trial_id>.parquet   one row per trial (TRIAL_SCHEMA)
    epochs/<trial_id>.parquet   one row per trial x epoch (EPOCH_SCHEMA)
    */compacted-<id>.parquet    the rows of finished trials, packed by tuner.compact
    spec.yaml                   the spec (defaults filled in, ${VAR} references as written)
    manifest.csv                the split (file, label, class, split) of the dataset
    .driver.json                the lock of the driver that owns the folder (tuner.lock)
    */_quarantine/              unreadable files moved aside (``load(on_corrupt=...)``,
                                ``--resume``)
    */_orphaned/                rows of trials a resumed search never heard of
    tune/                       Ray Tune's experiment snapshot and trial checkpoints

``pd.read_parquet(".../trials")`` reads the folder at any time: every file is written under a
hidden temporary name and renamed into place, and readers skip hidden files. Paths may be
local or a ``s3://`` / ``gs://`` URI (pyarrow's filesystem layer).
"""

from __future__ import annotations

import json
import math
import os
import typing
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.numbers import number, si
from tuner.spec import PARAM_NAMES, SearchMetric, field_type

#: Every value of the trials table's ``status`` column: ran all its epochs (with test
#: figures), stopped by ASHA, stopped by the time budget (:mod:`tuner.budget`), failed.
TrialStatus = Literal["completed", "early-stopped", "stopped-budget", "error"]
TRIAL_STATUSES: tuple[TrialStatus, ...] = typing.get_args(TrialStatus)
COMPLETED, EARLY_STOPPED, STOPPED_BUDGET, ERROR = TRIAL_STATUSES
#: Statuses of trials that ended normally (a resumed search keeps their rows).
FINISHED_STATUSES = (COMPLETED, EARLY_STOPPED, STOPPED_BUDGET)

#: Test-split metrics of a trial row: set only for a ``completed`` trial.
TEST_METRICS = ("test_acc", "test_f1", "test_kappa")
#: Validation metrics of a trial row, taken at its best epoch.
BEST_VAL_METRICS = ("best_val_acc", "best_val_f1", "best_val_kappa")
#: The metrics a ranking shows (mean ± std over seeds).
METRICS = (*TEST_METRICS, *BEST_VAL_METRICS)
#: The spec's ``search.metric`` -> the trials-table column that holds it. The trials table
#: has no best validation loss, so ``val_loss`` searches are summarised by accuracy.
VAL_COLUMN: dict[SearchMetric, str] = {
    "val_acc": "best_val_acc",
    "val_f1": "best_val_f1",
    "val_kappa": "best_val_kappa",
    "val_loss": "best_val_acc",
}

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Every trial-config parameter is a typed column (null where a trial did not set it).
CONFIG_FIELDS = [pa.field(n, _ARROW[field_type(n)]) for n in PARAM_NAMES]

TRIAL_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("status", pa.string()),  # TRIAL_STATUSES
        pa.field("error", pa.string()),  # the message line: "Type: first line"
        pa.field("error_traceback", pa.string()),  # everything Tune recorded
        pa.field("dataset", pa.string()),
        *CONFIG_FIELDS,
        pa.field("epochs_run", pa.int64()),
        pa.field("best_epoch", pa.int64()),
        pa.field("best_val_acc", pa.float64()),
        pa.field("best_val_f1", pa.float64()),
        pa.field("best_val_kappa", pa.float64()),
        pa.field("test_acc", pa.float64()),
        pa.field("test_f1", pa.float64()),
        pa.field("test_kappa", pa.float64()),
        pa.field("test_per_class_acc", pa.list_(pa.float64())),
        pa.field("test_confusion", pa.list_(pa.list_(pa.int64()))),
        pa.field("class_names", pa.list_(pa.string())),
        pa.field("params", pa.int64()),
        pa.field("trainable_params", pa.int64()),
        pa.field("macs", pa.int64()),
        pa.field("train_time_s", pa.float64()),
        pa.field("images_per_s", pa.float64()),
        pa.field("node", pa.string()),
        pa.field("node_id", pa.string()),
        pa.field("cpus", pa.float64()),
        pa.field("gpu_fraction", pa.float64()),
        pa.field("retries", pa.int64()),
        pa.field("checkpoint", pa.string()),
        pa.field("split_hash", pa.string()),
        pa.field("start_time", TIMESTAMP),
        pa.field("end_time", TIMESTAMP),
    ]
)

EPOCH_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("epoch", pa.int64()),
        pa.field("train_loss", pa.float64()),
        pa.field("train_acc", pa.float64()),
        pa.field("val_loss", pa.float64()),
        pa.field("val_acc", pa.float64()),
        pa.field("val_f1", pa.float64()),
        pa.field("val_kappa", pa.float64()),
        pa.field("lr", pa.float64()),
        pa.field("epoch_time_s", pa.float64()),
        pa.field("images_per_s", pa.float64()),
        pa.field("threads", pa.int64()),  # PyTorch threads at the end of the training pass
        pa.field("feature_time_s", pa.float64()),  # trainables.features: 0.0 = reused
        pa.field("best_epoch", pa.int64()),
        pa.field("best_val_acc", pa.float64()),
        pa.field("node", pa.string()),
        pa.field("node_id", pa.string()),
        pa.field("time", TIMESTAMP),
    ]
)

TRIALS, EPOCHS = "trials", "epochs"
#: Name prefix of the one file per table that :mod:`tuner.compact` packs finished trials into
#: (``_safe`` trial ids never start with it: Tune's are ``<hex>_<number>``).
COMPACTED = "compacted-"
#: Folder of Ray Tune's experiment snapshot and trial checkpoints in an experiment folder.
RAY_DIR = "tune"


class CorruptResultsError(RuntimeError):
    """Some result files could not be read; they were moved aside (see message)."""


# -------------------------------------------------------------------------------- writing
def filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and path for a local path or a ``s3://`` / ``gs://`` URI."""
    text = str(uri)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _coerce(value, typ: pa.DataType):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value) and not pa.types.is_floating(typ):
        return None
    if pa.types.is_integer(typ):
        return int(value)
    if pa.types.is_floating(typ):
        return float(value)
    if pa.types.is_string(typ):
        return str(value)
    return value


def to_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts; missing keys are null, extra keys ignored) as a table of ``schema``."""
    columns = {
        f.name: pa.array([_coerce(r.get(f.name), f.type) for r in rows], type=f.type)
        for f in schema
    }
    return pa.table(columns, schema=schema)


def write_atomic(table: pa.Table, uri: str, fs: pafs.FileSystem | None = None) -> None:
    """Write a Parquet file so that no reader ever sees it half-written.

    Written under a hidden name in the same folder (ignored by dataset readers), then moved
    into place; object stores publish an object only once its upload is complete.
    """
    if fs is None:
        fs, uri = filesystem(uri)
    parent, name = uri.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, tmp, filesystem=fs)
        os.replace(tmp, uri)
    else:
        pq.write_table(table, uri, filesystem=fs)


class ResultsStore:
    """The trials / epochs tables of one experiment folder."""

    def __init__(self, root: str | Path, experiment: str):
        self.fs, base = filesystem(root)
        self.experiment = experiment
        self.dir = f"{base}/{experiment}"
        scheme = str(root).split("://", 1)[0] + "://" if "://" in str(root) else ""
        #: ``dir`` with the URI scheme of the root (what :func:`load` takes).
        self.uri = f"{scheme}{self.dir}"

    def write_trial(self, row: dict) -> None:
        """Write (or replace) the row of one trial."""
        row = {**row, "experiment": self.experiment}
        write_atomic(to_table([row], TRIAL_SCHEMA), self._path(TRIALS, row["trial_id"]), self.fs)

    def write_epochs(self, trial_id: str, rows: list[dict]) -> None:
        """Write (or replace) every epoch row of one trial; one row per epoch."""
        by_epoch = {
            int(r["epoch"]): {**r, "experiment": self.experiment, "trial_id": trial_id}
            for r in rows
        }
        ordered = [by_epoch[e] for e in sorted(by_epoch)]
        write_atomic(to_table(ordered, EPOCH_SCHEMA), self._path(EPOCHS, trial_id), self.fs)

    def _path(self, table: str, trial_id: str) -> str:
        return f"{self.dir}/{table}/{_safe(trial_id)}.parquet"

    def read_trial(self, trial_id: str) -> dict | None:
        """The row of one trial as written (``None``: it has none, e.g. it never ran).

        Its own file only: a compacted row (:mod:`tuner.compact`) is a finished trial's,
        which a search never reads back nor writes again.
        """
        path = self._path(TRIALS, trial_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        rows = pq.read_table(path, filesystem=self.fs, schema=TRIAL_SCHEMA).to_pylist()
        return rows[0] if rows else None

    def read_epochs(self, trial_id: str) -> dict[int, dict] | None:
        """The epoch rows of one trial by epoch (``{}``: none written yet; its own file only,
        as in :meth:`read_trial`).

        An epochs file that cannot be read is moved to ``_quarantine/`` (and said so) and
        ``None`` is returned: the rows are lost unless rebuilt from the trial's checkpoint.
        """
        path = self._path(EPOCHS, trial_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        try:
            old = pq.read_table(path, filesystem=self.fs).to_pandas()
        except (pa.ArrowInvalid, OSError) as err:
            moved = quarantine(self.fs, [(path, str(err))])
            print(f"note: unreadable epochs file moved to {moved[0]}: {err}", flush=True)
            return None
        old = old.astype(object).where(pd.notna(old), None)
        return {int(r["epoch"]): dict(r) for _, r in old.iterrows()}

    def write_text(self, name: str, text: str) -> None:
        """Write a small text file (spec, manifest) atomically."""
        self.fs.create_dir(self.dir, recursive=True)
        path = f"{self.dir}/{name}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            tmp = f"{self.dir}/.{name}.{uuid.uuid4().hex}.tmp"
            Path(tmp).write_text(text)
            os.replace(tmp, path)
        else:
            with self.fs.open_output_stream(path) as out:
                out.write(text.encode())

    def read_text(self, name: str) -> str:
        """Read a small text file written by :meth:`write_text`."""
        with self.fs.open_input_stream(f"{self.dir}/{name}") as f:
            return f.read().decode()

    def _files(self, table: str) -> list[str]:
        """Paths of the Parquet files of a table (per-trial and compacted), sorted."""
        info = self.fs.get_file_info(pafs.FileSelector(f"{self.dir}/{table}", allow_not_found=True))
        return sorted(
            f.path
            for f in info
            if f.type == pafs.FileType.File
            and f.base_name.endswith(".parquet")
            and not f.base_name.startswith((".", "_"))
        )

    def _compacted_ids(self, path: str) -> set[str]:
        try:
            column = pq.read_table(path, columns=["trial_id"], filesystem=self.fs).column(0)
        except (pa.ArrowInvalid, OSError):
            return set()  # unreadable: quarantined by quarantine_unreadable
        return {_safe(str(t)) for t in column.to_pylist()}

    def trial_ids(self, table: str) -> set[str]:
        """Trial ids that have rows in ``trials/`` or ``epochs/`` (own or compacted file)."""
        ids: set[str] = set()
        for path in self._files(table):
            name = path.rsplit("/", 1)[-1]
            if name.startswith(COMPACTED):
                ids |= self._compacted_ids(path)
            else:
                ids.add(name[: -len(".parquet")])
        return ids

    def trial_statuses(self) -> dict[str, str]:
        """Trial id -> status of every readable trial row."""
        trials, _ = _read_table(self.fs, f"{self.dir}/{TRIALS}", TRIAL_SCHEMA)
        return dict(zip(trials["trial_id"].astype(str), trials["status"].astype(str), strict=True))

    def finished_trial_ids(self) -> set[str]:
        """Trials whose row has a :data:`FINISHED_STATUSES` status (a resume keeps them)."""
        return {t for t, s in self.trial_statuses().items() if s in FINISHED_STATUSES}

    def final_results(self) -> dict[str, dict]:
        """Finished trial id -> the numbers of its last epoch row (what it last reported).

        A resumed search restores a trial that finished after Tune's last snapshot as
        unfinished, with an older checkpoint: it reports this row again instead, so that
        Optuna and ASHA see the trial's true final result.
        """
        finished = self.finished_trial_ids()
        epochs, _ = _read_table(self.fs, f"{self.dir}/{EPOCHS}", EPOCH_SCHEMA)
        epochs = epochs[epochs["trial_id"].astype(str).isin(finished)]
        last = epochs.sort_values("epoch", kind="stable").groupby("trial_id").tail(1)
        kinds = {f.name: int for f in EPOCH_SCHEMA if pa.types.is_integer(f.type)}
        kinds.update({f.name: float for f in EPOCH_SCHEMA if pa.types.is_floating(f.type)})
        return {
            str(row["trial_id"]): {
                k: kinds[k](v) for k, v in row.items() if k in kinds and not pd.isna(v)
            }
            for row in last.to_dict("records")
        }

    def move_orphans(self, known: set[str]) -> list[str]:
        """Move aside the rows of trials that are not in ``known``; returns their ids.

        Tune's experiment snapshot lags the driver (by its period, see :mod:`tuner.tune.scale`):
        a driver killed in between can leave rows (epochs, even a final row) of a trial that
        the restored search never heard of and will not resume; it runs another trial in its
        place. Its files (its rows, when they were compacted: :mod:`tuner.compact`) go to
        ``trials/_orphaned/`` and ``epochs/_orphaned/``, so that every row belongs to a
        trial of the search.
        """
        known = set(map(_safe, known))
        orphans = sorted((self.trial_ids(EPOCHS) | self.trial_ids(TRIALS)) - known)
        for table in (TRIALS, EPOCHS) if orphans else ():
            dest = f"{self.dir}/{table}/_orphaned"
            for path in self._files(table):
                name = path.rsplit("/", 1)[-1]
                if name.startswith(COMPACTED):
                    from tuner.compact import split_out

                    split_out(self.fs, path, set(orphans), dest)
                elif name[: -len(".parquet")] in orphans:
                    self.fs.create_dir(dest, recursive=True)
                    self.fs.move(path, f"{dest}/{name}")
        return orphans

    def rebase_checkpoints(self, ray_dir: str = RAY_DIR) -> list[str]:
        """Point the ``checkpoint`` column of every trial row into this folder.

        A folder moved or copied elsewhere and resumed there holds rows written before the
        move, whose checkpoints lie (copied) under this folder's ``<ray_dir>/`` but are
        recorded under the old one; their paths are rewritten (nothing else changes).

        Returns:
            The old experiment folders the rewritten rows pointed into.
        """
        marker = f"/{ray_dir}/"
        old_dirs: set[str] = set()
        for path in self._files(TRIALS):
            try:
                rows = pq.read_table(path, filesystem=self.fs).to_pylist()
            except (pa.ArrowInvalid, OSError):
                continue  # unreadable: quarantined by quarantine_unreadable
            changed = False
            for row in rows:
                checkpoint = row.get("checkpoint")
                if not checkpoint or checkpoint.startswith(f"{self.dir}{marker}"):
                    continue
                cut = checkpoint.rfind(marker)
                if cut < 0:
                    continue
                old_dirs.add(checkpoint[:cut])
                row["checkpoint"] = f"{self.dir}{marker}{checkpoint[cut + len(marker) :]}"
                changed = True
            if changed:
                write_atomic(pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA), path, self.fs)
        return sorted(old_dirs)

    def quarantine_unreadable(self) -> list[str]:
        """Move unreadable (e.g. truncated) trials / epochs files to ``_quarantine/``.

        A resumed search does this before it reads the store: the rows of a quarantined
        epochs file are rebuilt from the trial's checkpoint, a quarantined trial row from
        Tune's record of the trial (see :class:`tuner.tune.callbacks.ResultsCallback`).

        Returns:
            The new paths of the moved files.
        """
        _, bad_t = _read_table(self.fs, f"{self.dir}/{TRIALS}", TRIAL_SCHEMA)
        _, bad_e = _read_table(self.fs, f"{self.dir}/{EPOCHS}", EPOCH_SCHEMA)
        return quarantine(self.fs, bad_t + bad_e)

    def has_results(self) -> bool:
        """Whether this experiment folder already holds results or a spec."""
        info = self.fs.get_file_info(
            [f"{self.dir}/spec.yaml", f"{self.dir}/{TRIALS}", f"{self.dir}/{EPOCHS}"]
        )
        return any(i.type != pafs.FileType.NotFound for i in info)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def experiment_path(results_root: str, experiment: str) -> str:
    """An experiment folder as a path or URI (Ray keeps its state in its :data:`RAY_DIR`)."""
    return ResultsStore(results_root, experiment).uri


# ------------------------------------------------------------------------------------ rows
def utc(ts: float | None) -> datetime | None:
    """A Unix time as a UTC timestamp (the tables' time columns); ``None`` stays ``None``."""
    return datetime.fromtimestamp(ts, tz=timezone.utc) if ts else None


def effective_defaults(spec) -> dict:
    """Values of the parameters a spec does not mention (what every trial used).

    Conditional parameters are not filled in: where their condition does not hold the
    column stays null ("not applicable").
    """
    if spec.trainable != "classify":
        return {}
    from trainables.config import TrialConfig

    named = {p.name for p in spec.params}
    return {
        name: TrialConfig.model_fields[name].default for name in PARAM_NAMES if name not in named
    }


def final_status(
    *, errored: bool, last: dict, epochs: int, budget_spent: bool = False
) -> TrialStatus:
    """A finished trial's status from its last result.

    ``completed`` when it ran all ``epochs`` and reported test figures; a trial stopped
    short is ``stopped-budget`` when the time budget was spent by then (a trial ends in the
    controller step that handled its last result), else ``early-stopped``.
    """
    if errored:
        return ERROR
    done = int(last.get("epoch") or 0)
    if done >= epochs and last.get("test_acc") is not None:
        return COMPLETED
    return STOPPED_BUDGET if budget_spent else EARLY_STOPPED


#: Reported metrics that travel JSON-encoded (Tune results are flat) and are lists in a row.
JSON_METRICS = ("test_per_class_acc", "test_confusion", "class_names")


def epoch_row(result: dict, received: float) -> dict:
    """An epochs-table row from a reported result (``received``: the driver's clock)."""
    return {
        **result,
        "node": result.get("hostname") or result.get("node_ip"),
        "time": utc(received),
    }


def trial_row(
    *,
    trial_id: str,
    status: TrialStatus,
    last: dict,
    params: dict,
    epochs: dict[int, dict],
    dataset: str,
    max_epochs: int,
    **recorded,
) -> dict:
    """A trials-table row from a trial's last result, its parameters and its epoch rows.

    Args:
        trial_id: The trial.
        status: Its final status.
        last: Its last reported result.
        params: Its parameters, the spec's defaults filled in (the configured values win
            over the result's: ``lr`` in a result is the last epoch's scheduled rate).
        epochs: Its epoch rows by epoch (best-epoch figures and, when the result has none,
            the training time come from them).
        dataset: The dataset preset (or the trainable's name).
        max_epochs: Epochs of a trial that does not set ``epochs``.
        **recorded: The driver's record: ``error``, ``error_traceback``, ``cpus``,
            ``gpu_fraction``, ``retries``, ``checkpoint``, ``start_time``, ``end_time``.
    """
    decoded = {k: json.loads(last[k]) for k in JSON_METRICS if isinstance(last.get(k), str)}
    row = {
        **last,
        **decoded,
        **params,
        "error": None,
        "error_traceback": None,
        **recorded,
        "trial_id": trial_id,
        "status": status,
        "dataset": dataset,
        "epochs_run": int(last.get("epoch") or 0),
        "best_val_f1": None,
        "best_val_kappa": None,
        "node": last.get("hostname") or last.get("node_ip"),
        "node_id": last.get("node_id"),
    }
    best = epochs.get(int(last.get("best_epoch") or 0))
    if best:
        row["best_val_f1"], row["best_val_kappa"] = best.get("val_f1"), best.get("val_kappa")
    if status != COMPLETED:
        for k in (*TEST_METRICS, "test_per_class_acc", "test_confusion"):
            row[k] = None
    if "train_time_s" not in last:
        row["train_time_s"] = sum((r.get("epoch_time_s") or 0.0) for r in epochs.values())
    row["epochs"] = params.get("epochs") or max_epochs
    return row


# -------------------------------------------------------------------------------- reading
def _read_table(fs: pafs.FileSystem, folder: str, schema: pa.Schema) -> tuple[pd.DataFrame, list]:
    """Read every Parquet file of a folder; unreadable ones are returned, not dropped.

    A file that vanished between the listing and its reading (a compaction swapped the
    folder's content: :mod:`tuner.compact`) makes the folder be read again.
    """
    for _ in range(2):
        try:
            return _read_files(fs, folder, schema)
        except FileNotFoundError:
            continue
    return _read_files(fs, folder, schema)


def _read_files(fs: pafs.FileSystem, folder: str, schema: pa.Schema) -> tuple[pd.DataFrame, list]:
    info = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    tables, bad = [], []
    for f in sorted(info, key=lambda i: i.path):
        name = f.base_name
        if (
            f.type != pafs.FileType.File
            or name.startswith((".", "_"))
            or not name.endswith(".parquet")
        ):
            continue
        try:
            tables.append(pq.read_table(f.path, filesystem=fs, schema=schema))
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as err:
            bad.append((f.path, str(err)))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas(types_mapper=_pandas_types), bad


def _pandas_types(typ: pa.DataType):
    if pa.types.is_integer(typ):
        return pd.Int64Dtype()
    if pa.types.is_string(typ):
        return pd.StringDtype()
    if pa.types.is_boolean(typ):
        return pd.BooleanDtype()
    return None


def quarantine(fs: pafs.FileSystem, bad: list[tuple[str, str]]) -> list[str]:
    """Move unreadable result files to a ``_quarantine/`` folder beside them."""
    moved = []
    for path, _ in bad:
        parent, name = path.rsplit("/", 1)
        dest = f"{parent}/_quarantine"
        fs.create_dir(dest, recursive=True)
        fs.move(path, f"{dest}/{name}")
        moved.append(f"{dest}/{name}")
    return moved


def load(
    experiment_dir: str | Path, *, on_corrupt: str = "raise", epochs: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and epochs tables of one experiment folder.

    Args:
        experiment_dir: ``<results>/<experiment>``.
        on_corrupt: What to do with unreadable (e.g. truncated) files: ``raise`` a
            :class:`CorruptResultsError` listing them, ``quarantine`` them (moved to
            ``_quarantine/`` and counted in a warning) or ``warn`` and skip them.
        epochs: Read the epochs table (``False``: an empty one, for readers of the trials
            table only, such as ``tuner.rank``).

    Returns:
        ``(trials, epochs)`` DataFrames with the documented columns and dtypes.
    """
    fs, base = filesystem(experiment_dir)
    trials, bad_t = _read_table(fs, f"{base}/{TRIALS}", TRIAL_SCHEMA)
    if epochs:
        epochs, bad_e = _read_table(fs, f"{base}/{EPOCHS}", EPOCH_SCHEMA)
    else:
        epochs, bad_e = EPOCH_SCHEMA.empty_table().to_pandas(types_mapper=_pandas_types), []
    bad = bad_t + bad_e
    if bad:
        listed = "\n".join(f"  {p}: {e}" for p, e in bad)
        if on_corrupt == "raise":
            raise CorruptResultsError(
                f"{len(bad)} unreadable result file(s) under {base}:\n{listed}\n"
                "re-run with on_corrupt='quarantine' (CLI: --quarantine) to move them aside"
            )
        import warnings

        if on_corrupt == "quarantine":
            moved = quarantine(fs, bad)
            warnings.warn(
                f"quarantined {len(moved)} unreadable result file(s):\n{listed}", stacklevel=2
            )
        else:
            warnings.warn(f"skipped {len(bad)} unreadable result file(s):\n{listed}", stacklevel=2)
    return trials, epochs


# -------------------------------------------------------------------------------- ranking
#: Columns that identify a configuration apart from its seed.
IDENTITY_EXCLUDE = {"seed"}


def config_columns(trials: pd.DataFrame) -> list[str]:
    """Parameter columns that vary across the trials (plus model, which always shows)."""
    cols = [c for c in ("dataset", *PARAM_NAMES) if c in trials.columns]
    varying = [c for c in cols if trials[c].astype("string").nunique(dropna=False) > 1]
    if "model" in cols and "model" not in varying and trials["model"].notna().any():
        varying.insert(0, "model")
    return varying


def rank(
    trials: pd.DataFrame,
    by: str = "test_acc",
    group: Sequence[str] | None = None,
    top: int | None = 10,
    ascending: bool = False,
) -> pd.DataFrame:
    """Rank configurations by a metric, mean ± std over seeds where configurations repeat.

    Args:
        trials: The trials table (any status; only rows with ``by`` set are ranked).
        by: Metric column to sort on.
        group: Columns that define a configuration (default: every varying parameter
            column except ``seed``).
        top: Rows to return (``None``: all).
        ascending: Sort ascending (for losses).

    Returns:
        One row per configuration: the group columns, ``n`` (trials), ``<metric>_mean`` and
        ``<metric>_std`` for the metrics present, mean params / MACs / train time.
    """
    if by not in trials.columns:
        raise KeyError(f"unknown metric column {by!r}; columns: {', '.join(trials.columns)}")
    scored = trials[trials[by].notna()]
    if group is None:
        group = [c for c in config_columns(trials) if c not in IDENTITY_EXCLUDE]
    missing = [c for c in group if c not in trials.columns]
    if missing:
        raise KeyError(f"unknown group column(s) {missing}; columns: {', '.join(trials.columns)}")
    if scored.empty:
        return pd.DataFrame(columns=[*group, "n", f"{by}_mean", f"{by}_std"])
    metrics = [
        m for m in dict.fromkeys((by, *METRICS)) if m in scored.columns and scored[m].notna().any()
    ]
    extras = [c for c in ("params", "macs", "train_time_s") if c in scored.columns]
    keyed = scored.copy()
    if not group:  # one configuration (e.g. only seeds vary): a single group
        group = ["configuration"]
        keyed["configuration"] = "all"
    for c in group:
        keyed[c] = keyed[c].astype("string").fillna("—")
    agg = keyed.groupby(list(group), dropna=False, sort=False)
    out = agg.size().rename("n").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = agg[m].mean()
        out[f"{m}_std"] = agg[m].std(ddof=1)
    for c in extras:
        out[c] = agg[c].mean()
    out = out.reset_index().sort_values(f"{by}_mean", ascending=ascending, kind="stable")
    out = out.reset_index(drop=True)
    return out.head(top) if top else out


def format_ranking(table: pd.DataFrame, by: str) -> str:
    """Plain-text ranking with ``mean ± std`` cells for the test metrics (and ``by``)."""
    if table.empty:
        return "(no scored trials yet)"
    shown = pd.DataFrame(index=table.index)
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    for c in table.columns:
        if c.endswith(("_mean", "_std")) or table[c].isna().all():
            continue
        if c in ("params", "macs"):
            shown[c] = [si(v) for v in table[c]]
        elif c == "train_time_s":
            shown["train_s"] = [f"{v:.1f}" for v in table[c]]
        else:
            shown[c] = [number(v) for v in table[c]]
    for m in metrics:
        if m == by or m.startswith("test_"):
            mean, std = table[f"{m}_mean"], table[f"{m}_std"]
            shown[m] = [
                "—" if pd.isna(a) else f"{a:.4f}" + (f" ± {s:.4f}" if pd.notna(s) else "")
                for a, s in zip(mean, std, strict=True)
            ]
    shown.index = range(1, len(shown) + 1)
    return shown.to_string()
