"""Write an experiment's trials as an Optuna study: ``<results>/<experiment>/optuna.db``.

Optuna's own tools then work on a tuner search, during and after it::

    optuna-dashboard sqlite:///results/demo/optuna.db
    python -c "import optuna; s = optuna.load_study(study_name='demo',
               storage='sqlite:///results/demo/optuna.db'); print(s.best_trial)"

The live search keeps Optuna's in-memory storage inside Ray's ``OptunaSearch``, which
Tune's experiment snapshot restores; handing it a database storage broke that restore
when measured. So the study is *exported* instead, from the Parquet tables (the record):
the driver rewrites the file at most every :data:`EVERY_S` seconds while trials end, and
once more when the search ends (``python -m tuner.optuna_export results/<experiment>`` does
it by hand). Each export builds a fresh SQLite file and moves it into place, so a reader
never sees half a study.

One Optuna trial per row of the trials table, in start order:

* **params**: the searched parameters (their spec ranges or choices as distributions), and
  ``seed`` where several seeds ran; the fixed configuration is in the trial's user attrs;
* **value**: the search metric at the trial's best epoch (the epoch whose weights are
  tested): ``best_val_acc`` for ``val_acc``, likewise ``best_val_f1`` / ``best_val_kappa``;
* **intermediate values**: the metric at every epoch (what ASHA compared);
* **state**: ``completed`` -> COMPLETE, ``early-stopped`` and ``stopped-budget`` -> PRUNED
  (with their value), ``error`` -> FAIL; the tuner status, trial id and test figures are
  user attrs.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from trainables.clihelp import HelpFormatter
from tuner.spec import RANGE_KINDS, Spec, referenced

DB_NAME = "optuna.db"
EVERY_S = 30.0
"""Least seconds between two exports while a search runs."""

STATES = {
    "completed": "COMPLETE",
    "early-stopped": "PRUNED",
    "stopped-budget": "PRUNED",
    "error": "FAIL",
}
"""Tuner trial status -> Optuna ``TrialState`` name (others: FAIL)."""

USER_ATTRS = ("status", "epochs_run", "best_epoch", "test_acc", "test_f1", "test_kappa")


def _py(value: Any) -> Any:
    """A plain Python scalar (``None`` for nulls and NaN)."""
    if value is None:
        return None
    try:
        if value != value:  # NaN, pandas NA
            return None
    except TypeError:
        return None
    return value.item() if hasattr(value, "item") else value


def _datetime(value: Any) -> datetime | None:
    value = _py(value)
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return value.astimezone().replace(tzinfo=None) if value.tzinfo else value


def distributions(spec: Spec, trials) -> dict[str, Any]:
    """The Optuna distribution of every searched parameter (and of ``seed`` if it varies).

    Categorical choices are the spec's values plus any value a trial recorded beyond them
    (``weights: none`` folded in by ``transfer: scratch``), so that every row fits.
    """
    import optuna.distributions as od

    out: dict[str, Any] = {}
    names = []
    for p in spec.searched:
        names.append(p.name)
        if p.kind in RANGE_KINDS:
            low, high = p.values
            if p.kind in ("int", "logint"):
                out[p.name] = od.IntDistribution(int(low), int(high), log=p.kind == "logint")
            else:
                out[p.name] = od.FloatDistribution(
                    float(low), float(high), log=p.kind == "loguniform"
                )
            continue
        choices = list(p.values)
        if p.name in trials.columns:
            for v in trials[p.name]:
                v = _py(v)
                if v is not None and v not in choices:
                    choices.append(v)
        out[p.name] = od.CategoricalDistribution(choices)
    if "seed" not in names and "seed" in trials.columns:
        seeds = sorted({int(s) for s in trials["seed"] if _py(s) is not None})
        if len(seeds) > 1:
            out["seed"] = od.CategoricalDistribution(seeds)
    return out


def study_trials(spec: Spec, trials, epochs) -> list:
    """One ``optuna.trial.FrozenTrial`` per row of the trials table (see module docstring)."""
    import optuna

    dists = distributions(spec, trials)
    metric = spec.search.metric
    fixed = [p.name for p in spec.params if p.name not in dists]
    curves: dict[str, dict[int, float]] = {}
    if not epochs.empty and metric in epochs.columns:
        for row in epochs[["trial_id", "epoch", metric]].itertuples(index=False):
            value = _py(row[2])
            if value is not None and math.isfinite(value):
                curves.setdefault(str(row[0]), {})[int(row[1])] = float(value)
    rows = trials.sort_values("start_time", kind="stable", na_position="last")
    out = []
    for row in rows.to_dict("records"):
        trial_id = str(row["trial_id"])
        curve = curves.get(trial_id, {})
        best = _py(row.get("best_epoch"))
        value = curve.get(int(best)) if best is not None else None
        if value is None and _py(row.get(f"best_{metric}")) is not None:
            value = float(_py(row.get(f"best_{metric}")))
        state = getattr(optuna.trial.TrialState, STATES.get(str(row["status"]), "FAIL"))
        if state == optuna.trial.TrialState.FAIL:
            value = None
        elif value is None:
            state = optuna.trial.TrialState.FAIL
        params = {k: _py(row.get(k)) for k in dists}
        params = {k: v for k, v in params.items() if v is not None}
        attrs = {"trial_id": trial_id}
        for k in (*USER_ATTRS, *fixed):
            v = _py(row.get(k))
            if v is not None:
                attrs[k] = v
        if _py(row.get("error")):
            attrs["error"] = str(row["error"])[:1000]
        start = _datetime(row.get("start_time")) or _datetime(row.get("end_time"))
        end = _datetime(row.get("end_time")) or start
        out.append(
            optuna.trial.FrozenTrial(
                number=-1,
                trial_id=-1,
                state=state,
                value=value,
                values=None,
                datetime_start=start or datetime.now(),
                datetime_complete=end or datetime.now(),
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs=attrs,
                system_attrs={},
                intermediate_values=curve,
            )
        )
    return out


def write_study(path: Path, spec: Spec, trials, epochs) -> int:
    """Write the study to a new SQLite file ``path``; returns the number of trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.experiment,
            direction="maximize" if spec.search.mode == "max" else "minimize",
        )
        study.set_user_attr("metric", spec.search.metric)
        study.set_user_attr("algorithm", spec.search.algorithm)
        description = referenced(spec).get("description")  # ${VAR} kept as written
        if description:
            study.set_user_attr("description", description)
        frozen = study_trials(spec, trials, epochs)
        study.add_trials(frozen)
        return len(frozen)
    finally:
        storage.engine.dispose()


def export(exp_dir: str | Path, spec: Spec | None = None) -> str:
    """Export ``<exp_dir>``'s trials to ``<exp_dir>/optuna.db``; returns its path or URI.

    Args:
        exp_dir: ``<results>/<experiment>`` (local or ``s3://`` / ``gs://``).
        spec: The experiment's spec (default: its saved ``spec.yaml``).
    """
    from tuner.results import filesystem, load

    fs, base = filesystem(exp_dir)
    if spec is None:
        spec = saved_spec(fs, base)
    trials, epochs = load(exp_dir, on_corrupt="warn")
    scheme = str(exp_dir).split("://", 1)[0] + "://" if "://" in str(exp_dir) else ""
    dest = f"{base}/{DB_NAME}"
    with tempfile.TemporaryDirectory(prefix="tuner-optuna-") as tmp:
        built = Path(tmp) / DB_NAME
        write_study(built, spec, trials, epochs)
        if scheme:
            with fs.open_output_stream(dest) as out:
                out.write(built.read_bytes())
        else:
            staged = Path(base) / f".{DB_NAME}.{uuid.uuid4().hex}.tmp"
            shutil.copyfile(built, staged)
            os.replace(staged, dest)
    return f"{scheme}{dest}"


def saved_spec(fs, base: str) -> Spec:
    """The spec saved beside an experiment's results (``${VAR}`` kept unexpanded)."""
    from tuner.spec import load_saved

    with fs.open_input_stream(f"{base}/spec.yaml") as f:
        text = f.read().decode()
    return load_saved(text, f"{base}/spec.yaml", strict=False)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner.optuna_export``."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.optuna_export",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("experiment_dir", help="results/<experiment> (local or s3:// / gs://)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Export one experiment's study; exit status 2 when it has no results."""
    args = build_parser().parse_args(argv)
    from tuner.results import filesystem

    fs, base = filesystem(args.experiment_dir)
    if fs.get_file_info(f"{base}/spec.yaml").type.name != "File":
        print(f"error: no experiment (spec.yaml) in {args.experiment_dir}", file=sys.stderr)
        return 2
    path = export(args.experiment_dir)
    print(f"optuna study: {path}")
    if "://" not in path:
        print(f"  optuna-dashboard sqlite:///{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
