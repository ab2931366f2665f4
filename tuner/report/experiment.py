"""One experiment's results as the report reads them: trials, epochs, spec, split."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from tuner.report import html as H
from tuner.report import tables
from tuner.results import VAL_COLUMN, load
from tuner.spec import Spec, SpecError, load_saved, parse

LABEL = {
    "test_acc": "test accuracy",
    "best_val_acc": "validation accuracy",
    "best_val_f1": "validation macro F1",
    "best_val_kappa": "validation kappa",
}


class NoResultsError(FileNotFoundError):
    """A path holds no experiment results; the message says what was expected."""


@dataclass
class Experiment:
    """One experiment folder, read for the report.

    Attributes:
        name: Experiment name (the folder name; ``parent/name`` where names collide).
        dir: The folder.
        trials: The trials table plus ``running`` rows (:func:`tables.with_running`).
        epochs: The epochs table.
        raw_spec: ``spec.yaml`` as a mapping (``None`` when missing).
        spec: The validated spec (``None`` when missing or invalid; see ``notes``).
        manifest: ``manifest.csv`` (``None`` when missing).
        notes: Problems met while reading (unreadable files, an invalid spec).
    """

    name: str
    dir: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    raw_spec: dict | None = None
    spec: Spec | None = None
    manifest: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The trials column of the spec's validation metric (``best_val_acc``)."""
        name = self.spec.search.metric if self.spec else "val_acc"
        return VAL_COLUMN.get(name, "best_val_acc")


def _has_results(path: Path) -> bool:
    """Whether ``path`` is an experiment folder (it has a trials or epochs table)."""
    return any(
        (path / sub).is_dir() and any((path / sub).glob("*.parquet"))
        for sub in ("trials", "epochs")
    )


def find_experiments(path: str | Path) -> list[Path]:
    """The experiment folders under ``path``: itself, or its sub-folders with results.

    Raises:
        NoResultsError: ``path`` is missing, or neither it nor a sub-folder holds a trial
            or epoch Parquet file.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise NoResultsError(f"{str(path)!r} does not exist or is not a directory")
    if _has_results(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and _has_results(p))
    if not found:
        raise NoResultsError(
            f"no results under {str(path)!r}: expected an experiment folder with "
            "trials/*.parquet or epochs/*.parquet (results/<experiment>), or a results root "
            "holding such folders; has the search reported a trial yet?"
        )
    return found


def load_experiment(path: str | Path, name: str | None = None) -> Experiment:
    """Read one experiment folder (tables, spec, manifest), collecting problems as notes."""
    path = Path(path).expanduser().resolve()
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trials, epochs = load(path, on_corrupt="warn")
    notes += [str(w.message) for w in caught]
    raw = spec = None
    spec_file = path / "spec.yaml"
    if spec_file.is_file():
        try:
            # spec.yaml keeps ${VAR} references: the report shows them as written
            text = spec_file.read_text()
            raw = parse(text, str(spec_file))
            spec = load_saved(text, str(spec_file), strict=False)
        except (SpecError, ValueError, yaml.YAMLError) as err:
            notes.append(f"spec.yaml could not be validated ({err}); sections that need it say so")
    else:
        notes.append("no spec.yaml beside the results; the protocol and ASHA sections are partial")
    manifest = None
    if (path / "manifest.csv").is_file():
        manifest = pd.read_csv(path / "manifest.csv")
    return Experiment(
        name=name or path.name,
        dir=path,
        trials=tables.with_running(trials, epochs),
        epochs=epochs,
        raw_spec=raw if isinstance(raw, dict) else None,
        spec=spec,
        manifest=manifest,
        notes=notes,
    )


def slug_of(exp: Experiment) -> str:
    """The experiment's name as an HTML anchor and file-name part."""
    return H.slug(exp.name)
