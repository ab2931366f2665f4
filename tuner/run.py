"""``python -m tuner.run SPEC``: run a search from one YAML spec.

Validates the spec (exit status 2 on any error, nothing created), prepares the data and
the optional pretraining stage, runs the Ray Tune search with a compact live view, writes
the trials / epochs Parquet tables as trials end, and prints a top-10 ranking.

Examples::

    python -m tuner.run search_spaces/demo.yaml --laptop
    python -m tuner.run search_spaces/resnet_nwpu.yaml --set dataset.root=/data/NWPU-RESISC45
    python -m tuner.run search_spaces/resnet_nwpu.yaml --resume      # continue after a crash
    python -m tuner.run search_spaces/resnet_nwpu.yaml --address auto \
        --results s3://my-bucket/tuner                                  # on a Ray cluster
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING

import yaml

from tuner import provenance

if TYPE_CHECKING:  # the project's other modules are imported after the code check
    from tuner.spec import Spec


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner.run``."""
    from trainables.clihelp import HelpFormatter  # after the code check (see _main)

    p = argparse.ArgumentParser(
        prog="python -m tuner.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("spec", help="search spec (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key, e.g. --set dataset.root=/data --set search.num_samples=4",
    )
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--name", help="experiment name (default: the spec's 'experiment')")
    p.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--laptop",
        nargs="?",
        type=int,
        const=0,
        default=None,
        metavar="TRIALS_PER_GPU",
        help="local Ray on this machine, packing trials per GPU (default: as many as a memory "
        "probe finds fit, tuner.gpu_memory) or splitting cores",
    )
    mode.add_argument("--address", help="existing Ray cluster: 'auto' or ray://HOST:10001")
    p.add_argument(
        "--shared-storage",
        action="store_true",
        help="the local --results path is a shared filesystem mounted at the same path on "
        "every node (otherwise a multi-node cluster needs --results s3://... or gs://...)",
    )
    p.add_argument("--num-cpus", type=int, help="local Ray: CPUs to declare")
    p.add_argument("--num-gpus", type=float, help="local Ray: (logical) GPUs to declare")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check the set-up in minutes: every cell kind once, 1 epoch of 2 batches, "
        "small images on CPUs, then the report; results under <experiment>_smoke (see "
        "tuner.smoke)",
    )
    p.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="stop launching trials after this long (2h, 45m, 1h30m or seconds); running "
        "trials finish their epoch (status stopped-budget); overrides search.time_budget",
    )
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    p.add_argument("--top", type=int, default=10, help="rows of the final ranking")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def saved_spec(store) -> Spec:
    """The spec saved with an experiment's results (used by ``--resume``).

    Read with the same limits as a spec file; its ``${VAR}`` references are expanded from
    the environment now.

    Args:
        store: The experiment's :class:`~tuner.results.ResultsStore` (local or a URI).
    """
    from tuner.spec import load_saved

    return load_saved(store.read_text("spec.yaml"), f"{store.dir}/spec.yaml")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2: bad spec or arguments).

    The experiment folder's lock (:mod:`tuner.lock`), once taken, is released however the
    run ends.
    """
    held: list = []
    try:
        return _main(argv, held)
    finally:
        for lock in held:
            lock.release()


def _main(argv: list[str] | None, held: list) -> int:
    """Check, start Ray, run the search, summarise; each step a function named for it.

    Nothing of the project beyond this module is imported before the code check, and Ray
    not before the spec, the results folder, the weights and the data are checked.
    """
    try:
        args = _checked_arguments(argv)
        spec, smoke = _load_spec_refusing(args)
        _check_tracking(args, spec)
        store, lock, spec = _open_results(args, spec)
        manifest = _preflight(args, spec)
        resources, packing, short = _start_ray(args, spec)
    except _Refused as err:
        return _fail(str(err))
    from tuner import tune

    try:  # one driver per experiment folder, from here to the end
        pretrained = _begin(args, spec, smoke, store, lock, held, manifest)
    except _Refused as err:
        tune.shutdown_ray()
        return _fail(str(err))
    _announce(spec, smoke, packing, resources, short)
    if args.resume and not tune.can_resume(args.results, spec.experiment):
        tune.shutdown_ray()
        return _fail(f"--resume: no Ray state for {spec.experiment!r} under {store.dir}")
    from tuner.budget import Budget

    if args.resume and args.time_budget:
        spec.search.time_budget = args.time_budget
    budget = Budget(spec.search.time_budget_s) if spec.search.time_budget_s else None
    t0 = time.time()
    try:
        tune.run_search(
            spec,
            results_root=args.results,
            packing=packing,
            pretrained=pretrained,
            resume=args.resume,
            status_every_s=args.status_every,
            max_batches=smoke.max_batches if smoke else None,
            budget=budget,
        )
    finally:
        tune.shutdown_ray()
    print(f"\nsearch finished in {time.time() - t0:.0f} s", flush=True)
    _compact(store.uri)
    local_results = "://" not in str(args.results)
    return _summarize(store.uri, spec, args.top, budget, smoke, local_results)


def _checked_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line, once the code this driver imported is known to be the right one.

    Raises:
        _Refused: A submitted job imports other code than was submitted (see
            :mod:`tuner.provenance`).
    """
    try:  # first: a submitted job must run the submitted code
        code = provenance.check_driver()
    except provenance.CodeMismatchError as err:
        raise _Refused(str(err)) from None
    args = build_parser().parse_args(argv)
    if os.environ.get(provenance.MANIFEST_ENV):
        print(f"code: {code} = the submitted code ({provenance.imported()[1]})", flush=True)
    if args.address:  # every node and trial checks that it runs this code
        os.environ[provenance.HASH_ENV] = code
    return args


def _load_spec_refusing(args: argparse.Namespace):
    """:func:`_load_spec`, a bad spec raised as :class:`_Refused`."""
    from tuner.spec import SpecError

    try:
        return _load_spec(args)
    except (SpecError, ValueError) as err:
        raise _Refused(str(err)) from None


def _check_tracking(args: argparse.Namespace, spec: Spec) -> None:
    """Trackers that write files need a local results folder (mlflow: or a remote server)."""
    remote_mlflow = set(spec.tracking) <= {"mlflow"} and os.environ.get("MLFLOW_TRACKING_URI")
    if spec.tracking and "://" in str(args.results) and not remote_mlflow:
        raise _Refused(
            f"tracking: {', '.join(spec.tracking)} write files next to the results, so "
            f"they need a local --results folder, but got {args.results!r} (mlflow alone "
            "also works with a remote MLFLOW_TRACKING_URI)"
        )


def _preflight(args: argparse.Namespace, spec: Spec):
    """The checks before Ray starts: a trial that cannot fit this machine, every weights
    file the trials read (downloaded once here, not by each trial), the data (validated, its
    decoded cache built once); returns the split manifest (``None`` without a dataset)."""
    from tuner.preflight import check_weights, resource_shortfall

    if not args.address and args.laptop is None:
        short = resource_shortfall(
            spec.resources.cpu, 0.0, {"CPU": args.num_cpus or os.cpu_count()}
        )
        if short:
            raise _Refused(short)
    problems = check_weights(spec)
    if problems:
        raise _Refused("\n".join(problems))
    if spec.trainable != "classify":
        return None
    try:
        return _prepare_data(spec)
    except (FileNotFoundError, ValueError) as err:
        raise _Refused(f"dataset: {err}") from None


def _begin(args, spec: Spec, smoke, store, lock, held: list, manifest) -> dict[str, str]:
    """Take the experiment's lock, write the manifest and the resolved spec (a new search),
    run the pretraining stage; returns its checkpoints by model name.

    Raises:
        _Refused: Another live driver holds the experiment.
    """
    from tuner.lock import ExperimentLocked
    from tuner.spec import referenced

    try:
        taken_over = lock.acquire(spec.experiment)
    except ExperimentLocked as err:
        raise _Refused(str(err)) from None
    held.append(lock)
    if taken_over:
        print(taken_over, flush=True)
    if not args.resume:
        if manifest is not None:
            store.write_text("manifest.csv", manifest)
        store.write_text("spec.yaml", yaml.safe_dump(referenced(spec), sort_keys=False))
    if spec.pretrain is None:
        return {}
    from tuner.pretrain import pretrain_all

    return pretrain_all(spec, args.results, max_batches=smoke and smoke.max_batches)


def _announce(spec: Spec, smoke, packing, resources: dict, short) -> None:
    """Print what is about to run: the search, the packing, a cluster too small, the smoke
    reductions."""
    print(f"experiment {spec.experiment}: {_describe_search(spec)}", flush=True)
    print(packing.note, flush=True)
    if short:
        print(
            f"note: a trial needs cpu {packing.cpu:g} / gpu {packing.gpu:g} and the cluster "
            f"has {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs now: the "
            "search waits for it to grow (an autoscaler adds nodes); the status line says "
            "for how long",
            flush=True,
        )
    if smoke is not None:
        print("smoke run, reduced from the spec:\n  " + "\n  ".join(smoke.reductions), flush=True)


def _load_spec(args: argparse.Namespace):
    """The validated spec of the command line (``--set``, ``--name``, ``--time-budget``
    applied), reduced by ``--smoke``; returns ``(spec, smoke)`` (``smoke``: ``None``).

    The spec keeps its template: the ``${VAR}`` references that ``spec.yaml`` records
    (see :mod:`tuner.spec`).
    """
    from tuner.spec import anchor_paths, check_name, expand, load_raw, validate

    if args.name:
        check_name(args.name)
    budget_set = [f"search.time_budget={args.time_budget}"] if args.time_budget else []
    template = load_raw(args.spec, [*args.overrides, *budget_set], expand_vars=False)
    raw = anchor_paths(expand(template), os.getcwd())
    if args.name:
        raw["experiment"] = args.name
    spec = validate(raw)
    spec._template = template
    smoke = None
    if args.smoke:
        from tuner.smoke import smoke_spec

        smoke = smoke_spec(spec, gpu=_smoke_on_gpu(args, spec), rename=not args.name)
        spec = smoke.spec
        spec._template = template
    return spec, smoke


def _summarize(exp_dir: str, spec: Spec, top: int, budget, smoke, local_results: bool) -> int:
    """After the search: the ranking, the Optuna study, the budget's coverage, the failed
    trials and the smoke report; returns the exit status."""
    from tuner.budget import coverage

    trials = _print_ranking(exp_dir, spec, top)
    _export_study(exp_dir, spec)
    if budget is not None and budget.spent():
        print(f"\n{coverage(spec, trials, budget)}", flush=True)
    status = _failures(trials)
    if smoke is not None and status == 0:
        status = _smoke_report(exp_dir, local_results)
    return status


def _compact(exp_dir: str) -> None:
    """Pack the finished trials' rows into one file per table (see :mod:`tuner.compact`)."""
    from tuner.compact import CompactionError, compact

    try:
        done = compact(exp_dir)
    except CompactionError as err:
        print(f"note: results not compacted: {err}", flush=True)
        return
    print(f"results compacted: {done.describe()}", flush=True)


class _Refused(Exception):
    """A check before the search failed; the message says why (exit status 2)."""


def _open_results(args: argparse.Namespace, spec: Spec):
    """The experiment folder: its store and lock; on ``--resume``, the spec saved there.

    Returns ``(store, lock, spec)``. The lock is only checked here (taken once Ray is up), so
    that a second run of a running experiment stops before any work.

    Raises:
        _Refused: The folder is locked by a live driver, already holds results (without
            ``--resume``), holds none to resume, or its saved spec does not load.
    """
    from tuner.lock import ExperimentLock, ExperimentLocked
    from tuner.results import ResultsStore
    from tuner.spec import SpecError

    store = ResultsStore(args.results, spec.experiment)
    lock = ExperimentLock(store.fs, store.dir)
    try:
        lock.check(spec.experiment)
    except ExperimentLocked as err:
        raise _Refused(str(err)) from None
    if store.has_results() and not args.resume:
        raise _Refused(
            f"experiment {spec.experiment!r} already has results in {store.dir}; "
            "use --resume to continue it or --name NEW_NAME for a new experiment"
        )
    if args.resume and not store.has_results():
        raise _Refused(
            f"--resume: no experiment {spec.experiment!r} under {args.results} to resume"
        )
    if args.resume:
        try:
            saved = saved_spec(store)
        except (SpecError, ValueError, OSError) as err:
            raise _Refused(f"saved spec of {spec.experiment!r}: {err}") from None
        if saved.model_dump() != spec.model_dump():
            print("note: --resume continues with the spec saved with the results", flush=True)
        spec = saved
    return store, lock, spec


def _start_ray(args: argparse.Namespace, spec: Spec):
    """Start or join Ray, pack the trials and check what the search needs of the cluster.

    Returns:
        ``(resources, packing, shortfall)``: Ray's resources, the
        :class:`~tuner.packing.Packing`, and what one trial lacks on a cluster that has yet
        to grow (``None``: it fits).

    Raises:
        _Refused: Ray could not start, a trial can never fit this machine, the results
            storage is not shared, or a node runs other code or lacks the dataset (Ray is
            shut down again).
    """
    from tuner import tune
    from tuner.cluster import StorageError, check_storage
    from tuner.packing import plan_packing
    from tuner.preflight import resource_shortfall

    try:
        resources = tune.init_ray(args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise _Refused(f"cannot start or reach Ray ({args.address or 'local'}): {err}") from None
    packing = plan_packing(
        spec,
        laptop=args.laptop is not None,
        cpus=int(resources.get("CPU", os.cpu_count() or 1)),
        gpus=tune.visible_gpus(resources),
        per_gpu=args.laptop or _measured_per_gpu(spec, tune.visible_gpus(resources)),
        cluster=bool(args.address),
    )
    short = resource_shortfall(packing.cpu, packing.gpu, {"GPU": 0.0, **resources})
    problem = short if short and not args.address else None
    if problem is None:
        try:
            check_storage(args.results, args.address, shared=args.shared_storage)
        except StorageError as err:
            problem = str(err)
    if problem is None and args.address:
        skew = tune.code_skew_on_nodes()
        problem = (
            "version skew on node(s) " + "\n  ".join(skew.values())
            if skew
            else _data_missing_on_nodes(spec)
        )
    if problem:
        tune.shutdown_ray()
        raise _Refused(problem)
    return resources, packing, short


def _export_study(exp_dir: str, spec: Spec) -> None:
    """Write the final Optuna study (``optuna.db``) and say how to open it."""
    from tuner.optuna_export import export

    try:
        path = export(exp_dir, spec)
    except Exception as err:  # a convenience copy: the Parquet tables are the record
        print(f"warning: optuna.db export failed: {type(err).__name__}: {err}", file=sys.stderr)
        return
    where = f"sqlite:///{path}" if "://" not in path else path
    print(f"optuna:     {where} (optuna.load_study / optuna-dashboard)")


def _smoke_on_gpu(args: argparse.Namespace, spec: Spec) -> bool:
    """Whether the trials of this run will have GPUs (a smoke run keeps full sizes there)."""
    if args.address:
        return spec.resources.gpu > 0
    if args.num_gpus is not None:
        gpus = args.num_gpus > 0
    else:
        import torch

        gpus = torch.cuda.is_available()
    return gpus and (args.laptop is not None or spec.resources.gpu > 0)


def _failures(trials) -> int:
    """Name the failed trials; exit status 1 when every trial failed or none was recorded."""
    from tuner.results import ERROR

    if trials.empty:
        print("error: the search recorded no trial", file=sys.stderr)
        return 1
    failed = trials[trials["status"] == ERROR].sort_values("end_time", kind="stable")
    if failed.empty:
        return 0
    rows = failed.to_dict("records")
    lines = [f"  {r['trial_id']} ({_config_text(r)}): {r['error']}" for r in rows[:10]]
    if len(rows) > 10:
        lines.append(f"  ... and {len(rows) - 10} more")
    lines.append("tracebacks: the trials table's error_traceback column")
    if len(rows) == len(trials):
        first = rows[0]
        print(
            f"error: every trial failed ({len(rows)}); the first error, of trial "
            f"{first['trial_id']} ({_config_text(first)}):\n  {first['error']}\n"
            "failed trials:\n" + "\n".join(lines),
            file=sys.stderr,
        )
        return 1
    print(f"\nfailed: {len(rows)} of {len(trials)} trials:\n" + "\n".join(lines), flush=True)
    return 0


def _config_text(row: dict) -> str:
    """``model=resnet18 transfer=finetune lr=0.001 ...`` for a trials-table row."""
    import pandas as pd

    keys = ("model", "transfer", "weights", "augmentation", "lr", "batch_size", "seed")
    shown = [(k, row.get(k)) for k in keys if row.get(k) is not None and pd.notna(row.get(k))]
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown)


def _smoke_report(exp_dir: str, local: bool) -> int:
    """A smoke run ends with the report, as the real run's readers will build it."""
    if not local:
        print("report: skipped (the results are not on a local path)")
        return 0
    from tuner.report import build_report

    try:
        page = build_report([exp_dir])
    except Exception as err:  # the smoke run is there to find exactly this
        print(f"error: the report failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"report: {page}", flush=True)
    return 0


def _data_missing_on_nodes(spec: Spec) -> str | None:
    """On a cluster, every node must see the dataset folders (synthetic ones are generated)."""
    from tuner.tune import missing_on_nodes

    datasets = [("dataset.root", spec.dataset)]
    if spec.pretrain is not None:
        datasets.append(("pretrain.dataset.root", spec.pretrain.dataset))
    for key, data in datasets:
        if data is None or data.preset == "synthetic":
            continue
        missing = missing_on_nodes(data.root)
        if missing:
            nodes = ", ".join(f"{ip} (node {node_id[:8]})" for node_id, ip in missing.items())
            return (
                f"{key} {data.root!r} does not exist on node(s) {nodes}: every node reads the "
                "dataset from the same path; mount shared storage there or sync the data in "
                "the cluster's setup commands (see cluster.yaml)"
            )
    return None


def _prepare_data(spec: Spec) -> str:
    """Validate the dataset, build its decoded cache and return the split manifest (CSV)."""
    from trainables.augment import stored_size
    from trainables.data.dataset import prepare

    augs = {p.values for p in spec.params if p.name == "augmentation"}
    names = sorted({a for values in augs for a in values} or {"none"})
    sizes: dict[int, str] = {}
    for a in names:
        sizes.setdefault(stored_size(a, spec.dataset.image_size), a)
    data = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for aug in sizes.values():
            data = prepare(spec.dataset, aug)
    for message in dict.fromkeys(str(w.message) for w in caught):  # once per image size
        print(f"warning: {message}", file=sys.stderr)
    assert data is not None
    counts = data.counts()
    print(
        f"dataset {spec.dataset.preset}: {len(data.class_names)} classes, "
        f"{len(data.manifest)} images (train {counts['train'].sum()}, val {counts['val'].sum()}, "
        f"test {counts['test'].sum()}), split hash {data.split_hash}",
        flush=True,
    )
    if data.duplicates:
        print(
            f"warning: {len(data.duplicates)} exact duplicate image(s) in both train and test, "
            f"e.g. {data.duplicates[0]}",
            file=sys.stderr,
        )
    return data.manifest.to_csv(index=False)


def _describe_search(spec: Spec) -> str:
    s = spec.search
    if s.algorithm == "grid":
        from tuner.spec import grid_cells

        what = f"grid of {len(grid_cells(spec))} trials"
    else:
        what = f"optuna TPE, {s.num_samples} trials"
    sched = (
        f"ASHA (grace {spec.scheduler.grace_period}, eta {spec.scheduler.reduction_factor:g}, "
        f"max {spec.max_epochs} epochs)"
        if spec.scheduler.type == "asha"
        else "no early stopping"
    )
    searched = ", ".join(p.name for p in spec.searched) or "nothing"
    return f"{what} over {searched}; {sched}; metric {s.metric} ({s.mode})"


def _print_ranking(exp_dir: str, spec: Spec, top: int):
    """Print the status counts and the top ranking; returns the trials table."""
    from tuner.results import COMPLETED, format_ranking, load, rank

    trials, epochs = load(exp_dir, on_corrupt="warn")
    status = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(
        "trials: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
        if status
        else "trials: none recorded"
    )
    by = "test_acc"
    print(f"\ntop {top} by {by} (test split, best-validation checkpoint):")
    print(format_ranking(rank(trials, by=by, top=top), by))
    if (trials["status"] != COMPLETED).any():
        print("(early-stopped and failed trials have no test figures; --by best_val_acc ranks all)")
    print(f"\nresults: {exp_dir}/trials  ({len(trials)} rows)")
    print(f"         {exp_dir}/epochs  ({len(epochs)} rows)")
    print(f"rank again: python -m tuner.rank {exp_dir} --by test_acc --group model,transfer")
    print(f"report:     python -m tuner.report {exp_dir}")
    return trials


def _measured_per_gpu(spec, gpus: float) -> int:
    """``--laptop`` without a count: trials per GPU from a memory probe (4 without one)."""
    import torch

    if not gpus or spec.trainable != "classify" or spec.dataset is None:
        return 4
    if 0 < spec.resources.gpu < 1 or not torch.cuda.is_available():
        return 4  # the spec's fraction is used / logical GPUs (--num-gpus) cannot be probed
    from tuner.gpu_memory import CudaMemory, plan_per_gpu, probe_configs

    per_gpu, note = plan_per_gpu(probe_configs(spec), CudaMemory())
    print(note, flush=True)
    return per_gpu


if __name__ == "__main__":
    raise SystemExit(main())
