"""The protocol section: data, split, search, scheduler, resources and versions."""

from __future__ import annotations

import platform
from importlib import metadata

import pandas as pd

from tuner.report import tables
from tuner.report.experiment import Experiment
from tuner.report.html import Section, Table, Text
from tuner.spec import referenced

VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "ray",
    "optuna",
    "pandas",
    "pyarrow",
    "numpy",
    "matplotlib",
    "scikit-learn",
    "tuner",
)


def _versions() -> pd.DataFrame:
    """The versions of Python and of :data:`VERSION_PACKAGES` in this environment."""
    rows = [("python", platform.python_version())]
    for pkg in VERSION_PACKAGES:
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def _protocol_rows(exp: Experiment) -> list[tuple[str, str]]:
    """Field / value rows from the spec (defaults filled in), the manifest and the trials.

    The spec is read as the mapping saved with the results (:func:`tuner.spec.referenced`:
    ``${VAR}`` references as written, dataset roots resolved), or the raw saved spec where
    it no longer validates, so the rows say what the search was given.
    """
    raw = referenced(exp.spec) if exp.spec is not None else exp.raw_spec or {}
    rows: list[tuple[str, str]] = [
        ("experiment", exp.name),
        ("description", str(raw.get("description") or "—")),
        ("results", str(exp.dir)),
        ("trainable", str(raw.get("trainable", "—"))),
    ]
    rows += _dataset_rows(raw.get("dataset") or {}, exp)
    rows += _split_rows(exp)
    rows += _search_rows(raw, exp)
    rows += _run_rows(exp)
    return rows


def _dataset_rows(data: dict, exp: Experiment) -> list[tuple[str, str]]:
    """The dataset: preset (with its citation), root, classes, split ratios, input size."""
    if not data:
        return []
    from trainables.data.presets import PRESETS

    preset = PRESETS.get(data.get("preset", ""))
    rows = [
        ("dataset preset", f"{data.get('preset')}" + (f" ({preset.citation})" if preset else "")),
        ("dataset root", str(data.get("root"))),
    ]
    classes = data.get("classes")
    if not classes and exp.manifest is not None:
        classes = list(dict.fromkeys(exp.manifest.sort_values("label")["class"]))
    if classes:
        rows.append(("classes", f"{len(classes)}: {', '.join(map(str, classes))}"))
    split = data.get("split") or {}
    rows.append(
        (
            "split ratios",
            f"train {split.get('train')}, val {split.get('val')}, test {split.get('test')}; "
            f"split seed {split.get('seed')} (stratified per class)",
        )
    )
    rows.append(("image size", f"{data.get('image_size')} px"))
    if data.get("synthetic"):
        rows.append(("synthetic generator", _inline_mapping(data["synthetic"])))
    return rows


def _split_rows(exp: Experiment) -> list[tuple[str, str]]:
    """The split as it was made: images per split (manifest) and the trials' split hash."""
    rows = []
    if exp.manifest is not None and "split" in exp.manifest:
        counts = exp.manifest["split"].value_counts()
        rows.append(
            (
                "images per split",
                ", ".join(f"{s} {int(counts.get(s, 0))}" for s in ("train", "val", "test"))
                + f" (total {len(exp.manifest)}; manifest.csv)",
            )
        )
    hashes = exp.trials["split_hash"].dropna().astype(str).unique() if len(exp.trials) else []
    if len(hashes) == 1:
        n = int(exp.trials["split_hash"].notna().sum())
        rows.append(("split hash", f"{hashes[0]} (identical in all {n} trials that record it)"))
    elif len(hashes) > 1:
        rows.append(("split hash", f"DIFFERS between trials: {', '.join(hashes)}"))
    else:
        rows.append(("split hash", "n/a (no trial recorded one)"))
    return rows


def _search_rows(raw: dict, exp: Experiment) -> list[tuple[str, str]]:
    """Pretraining, the search algorithm, the scheduler (with ASHA's rungs), resources."""
    rows = []
    if raw.get("pretrain"):
        pre = dict(raw["pretrain"])
        pdata = pre.pop("dataset", {}) or {}
        rows.append(
            (
                "pretraining (weights 'pretrain')",
                f"dataset {pdata.get('preset')} at {pdata.get('root')} "
                f"({len(pdata.get('classes') or [])} classes); " + _inline_mapping(pre),
            )
        )
    search = raw.get("search") or {}
    if search:
        text = f"{search.get('algorithm')}"
        if search.get("algorithm") == "optuna":
            text += f" (TPE), {search.get('num_samples')} samples, sampler seed "
            text += f"{search.get('sampler_seed')}"
        text += f"; seeds {search.get('seeds')}; metric {search.get('metric')} "
        text += f"({search.get('mode')}); max failures {search.get('max_failures')}"
        if search.get("max_concurrent"):
            text += f"; max concurrent {search.get('max_concurrent')}"
        if search.get("exclude"):
            text += f"; excluded cells {search.get('exclude')}"
        rows.append(("search", text))
    sched = raw.get("scheduler") or {}
    if sched:
        text = _inline_mapping(sched)
        if exp.spec is not None and exp.spec.scheduler.type == "asha":
            s = exp.spec.scheduler
            ms = tables.asha_milestones(s.grace_period, s.reduction_factor, exp.spec.max_epochs)
            text += f"; max epochs {exp.spec.max_epochs}; rungs at epochs {ms}"
        rows.append(("scheduler", text))
    if raw.get("resources"):
        rows.append(("resources per trial", _inline_mapping(raw["resources"])))
    return rows


def _run_rows(exp: Experiment) -> list[tuple[str, str]]:
    """When and where the trials ran, and how to run the search again."""
    rows = []
    finished = exp.trials[exp.trials["status"] != tables.RUNNING]
    if len(finished) and finished["start_time"].notna().any():
        start, end = finished["start_time"].min(), finished["end_time"].max()
        rows.append(("trials ran", f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"))
        nodes = sorted(set(finished["node"].dropna().astype(str)))
        if nodes:
            rows.append(("nodes", ", ".join(nodes)))
    rows.append(
        (
            "reproduce",
            f"python -m tuner.run {exp.dir / 'spec.yaml'} --name NEW_NAME --results DIR "
            "(the spec saved with the results is complete; its ${VAR} references expand "
            "from the environment, the dataset roots are recorded resolved)",
        )
    )
    return rows


def _inline_mapping(mapping: dict) -> str:
    """``key value, key value`` on one line."""
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def protocol_section(exp: Experiment) -> Section:
    """Section 6: what a reader needs to reproduce the search, and the search space."""
    sec = Section("6. Protocol")
    sec.add(
        Text(
            "What a reader needs to reproduce the search: from the spec.yaml saved with the "
            "results, the manifest and the trials. Package versions are those of the "
            "environment that wrote this report (recorded at report time, not at search time)."
        ),
        Table(pd.DataFrame(_protocol_rows(exp), columns=["field", "value"])),
    )
    if exp.spec is not None and exp.spec.params:
        space = pd.DataFrame(
            [
                {
                    "parameter": p.name,
                    "kind": p.kind,
                    "values": ", ".join(tables.value_text(v) for v in p.values),
                    "when": _inline_mapping({k: list(v) for k, v in p.when.items()}) or "—",
                    "searched": "yes" if p.searched else "no",
                }
                for p in exp.spec.params
            ]
        )
        sec.add(Table(space, caption="Factors and hyperparameters (search space)"))
    sec.add(Table(_versions(), caption="Versions (at report time)"))
    return sec
