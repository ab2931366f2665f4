"""Which code runs: fingerprints of the ``tuner`` and ``trainables`` packages.

A search submitted to a cluster must run the code the user submitted. Two copies of the
project on one cluster (the uploaded job package and a ``pip install``-ed one) can mix
silently: a module missing from the upload is then imported from the installed copy, and
version skew between a laptop and a cluster gives wrong results without an error. So:

* ``tuner.submit`` records a *manifest* of the package files it uploads (relative path ->
  content hash) and hands it to the job as ``$TUNER_CODE_MANIFEST``;
* the driver (``tuner.run``) compares that manifest with the packages it actually imports
  *before* it imports anything else of the project, and refuses to run on a difference,
  naming the files and the folder it imported from; joining a cluster, it then publishes its
  own fingerprint as ``$TUNER_CODE_HASH``;
* every node, and every trial before it trains, compares its own fingerprint with
  ``$TUNER_CODE_HASH`` (:func:`check_process`).

Only the standard library is imported here, so the check can run first.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path

#: The project's packages: every ``.py`` file under them is fingerprinted.
PACKAGES = ("tuner", "trainables")
#: The manifest of the submitted code (set by ``tuner.submit`` for the job's driver).
MANIFEST_ENV = "TUNER_CODE_MANIFEST"
#: The fingerprint of the code the driver runs (set by the driver for every trial).
HASH_ENV = "TUNER_CODE_HASH"


class CodeMismatchError(RuntimeError):
    """This process imports other code than the code that was submitted (version skew)."""


def manifest(root: str | Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Relative path -> SHA-256 (16 hex digits) of every ``.py`` file of the packages.

    Args:
        root: The project folder holding ``tuner/`` and ``trainables/``.
        packages: The package folders to read.
    """
    root = Path(root)
    out: dict[str, str] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(root).as_posix()
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def fingerprint(files: dict[str, str]) -> str:
    """One hash (16 hex digits) for a manifest."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def package_dirs() -> dict[str, Path]:
    """Where this process imports each package from (without importing it)."""
    dirs = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise CodeMismatchError(f"package {package!r} cannot be imported in this process")
        dirs[package] = Path(next(iter(spec.submodule_search_locations))).resolve()
    return dirs


@functools.cache
def imported() -> tuple[dict[str, str], str]:
    """The manifest of the packages this process imports, and where they live (cached)."""
    files: dict[str, str] = {}
    dirs = package_dirs()
    for package, folder in dirs.items():
        files.update(manifest(folder.parent, (package,)))
    return files, ", ".join(f"{p} from {d}" for p, d in dirs.items())


def differences(submitted: dict[str, str], here: dict[str, str], limit: int = 8) -> list[str]:
    """Human-readable differences between two manifests (at most ``limit`` per kind)."""
    kinds = {
        "submitted but missing here": sorted(set(submitted) - set(here)),
        "here but not submitted": sorted(set(here) - set(submitted)),
        "different content": sorted(
            k for k in set(submitted) & set(here) if submitted[k] != here[k]
        ),
    }
    lines = []
    for kind, names in kinds.items():
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            lines.append(f"{len(names)} file(s) {kind}: {', '.join(names[:limit])}{more}")
    return lines


def check_driver(environ: dict[str, str] | None = None) -> str:
    """Compare the submitted manifest (if any) with the imported code.

    Returns:
        The fingerprint of the imported code. A driver joining a cluster publishes it as
        ``$TUNER_CODE_HASH`` for its workers; a local search does not (its workers import
        this checkout, and editing it while a search runs must not fail the trials).

    Raises:
        CodeMismatchError: The imported code differs from ``$TUNER_CODE_MANIFEST``.
    """
    env = os.environ if environ is None else environ
    files, where = imported()
    raw = env.get(MANIFEST_ENV)
    if raw:
        try:
            submitted = json.loads(raw)
        except json.JSONDecodeError as err:
            raise CodeMismatchError(f"${MANIFEST_ENV} is not a JSON manifest: {err}") from None
        diff = differences(submitted, files)
        if diff:
            raise CodeMismatchError(
                f"the code this job runs is not the code that was submitted (version skew); "
                f"this process imports {where}:\n  "
                + "\n  ".join(diff)
                + "\nThe job must run the uploaded copy only: check that tuner.submit's upload "
                "keeps every file of tuner/ and trainables/, and that no other copy of the "
                "project shadows it on the cluster (pip uninstall tuner there, or install this "
                "commit)"
            )
    return fingerprint(files)


def check_process() -> None:
    """In a trial or node process: refuse to run other code than the driver's.

    Raises:
        CodeMismatchError: This process's fingerprint differs from ``$TUNER_CODE_HASH``.
    """
    expected = os.environ.get(HASH_ENV)
    if not expected:
        return
    files, where = imported()
    actual = fingerprint(files)
    if actual != expected:
        raise CodeMismatchError(
            f"this worker runs other code than the search driver (version skew): it imports "
            f"{where} (fingerprint {actual}), the driver runs {expected}; install the same "
            "commit on every node, or submit with tuner.submit so that every node gets the "
            "uploaded copy"
        )
