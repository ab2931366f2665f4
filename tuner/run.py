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

import yaml

from tuner.spec import Spec, SpecError, check_name, load_raw, validate


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``tuner.run``."""
    p = argparse.ArgumentParser(
        prog="python -m tuner.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        const=4,
        default=None,
        metavar="TRIALS_PER_GPU",
        help="local Ray on this machine, packing trials per GPU (default 4) or splitting cores",
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
    p.add_argument("--smoke", action="store_true", help="tiny run: 2 batches per split per epoch")
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines")
    p.add_argument("--top", type=int, default=10, help="rows of the final ranking")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def saved_spec(store) -> Spec:
    """The resolved spec saved with an experiment's results (used by ``--resume``).

    Args:
        store: The experiment's :class:`~tuner.results.ResultsStore` (local or a URI).
    """
    return validate(yaml.safe_load(store.read_text("spec.yaml")))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2: bad spec or arguments)."""
    args = build_parser().parse_args(argv)
    try:
        if args.name:
            check_name(args.name)
        raw = load_raw(args.spec, args.overrides)
        if args.name:
            raw["experiment"] = args.name
        spec = validate(raw)
    except (SpecError, ValueError) as err:
        return _fail(str(err))

    from tuner.results import ResultsStore, filesystem

    store = ResultsStore(args.results, spec.experiment)
    local_results = "://" not in str(args.results)
    if store.has_results() and not args.resume:
        return _fail(
            f"experiment {spec.experiment!r} already has results in {store.dir}; "
            "use --resume to continue it or --name NEW_NAME for a new experiment"
        )
    if args.resume and not store.has_results():
        return _fail(f"--resume: no experiment {spec.experiment!r} under {args.results} to resume")
    if args.resume:
        try:
            saved = saved_spec(store)
        except (SpecError, ValueError, OSError) as err:
            return _fail(f"saved spec of {spec.experiment!r}: {err}")
        if saved.model_dump() != spec.model_dump():
            print("note: --resume continues with the spec saved with the results", flush=True)
        spec = saved

    # Data first (validates it and builds the decoded cache once), then Ray; nothing is
    # written under the results root before the storage check.
    pretrained: dict[str, str] = {}
    manifest = None
    if spec.trainable == "classify":
        try:
            manifest = _prepare_data(spec)
        except (FileNotFoundError, ValueError) as err:
            return _fail(f"dataset: {err}")

    from tuner import search
    from tuner.cluster import StorageError, check_storage

    try:
        resources = search.init_ray(args.address, num_cpus=args.num_cpus, num_gpus=args.num_gpus)
    except (ConnectionError, RuntimeError, ValueError) as err:
        return _fail(f"cannot start or reach Ray ({args.address or 'local'}): {err}")
    try:
        check_storage(args.results, args.address, shared=args.shared_storage)
    except StorageError as err:
        search.shutdown_ray()
        return _fail(str(err))
    if args.address:
        problem = _data_missing_on_nodes(spec, search)
        if problem:
            search.shutdown_ray()
            return _fail(problem)
    if not args.resume:
        if manifest is not None:
            store.write_text("manifest.csv", manifest)
        store.write_text("spec.yaml", yaml.safe_dump(_resolved(spec), sort_keys=False))
    if spec.pretrain is not None:
        from tuner.pretrain import pretrain_all

        _, base = filesystem(args.results)
        pretrained = pretrain_all(spec, base if local_results else ".")
    packing = search.plan_packing(
        spec,
        laptop=args.laptop is not None,
        cpus=int(resources.get("CPU", os.cpu_count() or 1)),
        gpus=search.visible_gpus(resources),
        per_gpu=args.laptop or 4,
    )
    print(f"experiment {spec.experiment}: {_describe_search(spec)}", flush=True)
    print(packing.note, flush=True)
    if args.resume and not search.can_resume(args.results, spec.experiment):
        search.shutdown_ray()
        return _fail(f"--resume: no Ray state for {spec.experiment!r} under {store.dir}")
    t0 = time.time()
    try:
        search.run_search(
            spec,
            results_root=args.results,
            packing=packing,
            pretrained=pretrained,
            resume=args.resume,
            status_every_s=args.status_every,
            max_batches=2 if args.smoke else None,
        )
    finally:
        search.shutdown_ray()
    print(f"\nsearch finished in {time.time() - t0:.0f} s", flush=True)
    _print_ranking(store.uri, spec, args.top)
    return 0


def _data_missing_on_nodes(spec: Spec, search) -> str | None:
    """On a cluster, every node must see the dataset folders (synthetic ones are generated)."""
    datasets = [("dataset.root", spec.dataset)]
    if spec.pretrain is not None:
        datasets.append(("pretrain.dataset.root", spec.pretrain.dataset))
    for key, data in datasets:
        if data is None or data.preset == "synthetic":
            continue
        missing = search.missing_on_nodes(data.root)
        if missing:
            nodes = ", ".join(f"{ip} (node {node_id[:8]})" for node_id, ip in missing.items())
            return (
                f"{key} {data.root!r} does not exist on node(s) {nodes}: every node reads the "
                "dataset from the same path; mount shared storage there or sync the data in "
                "the cluster's setup commands (see cluster.yaml)"
            )
    return None


def _resolved(spec: Spec) -> dict:
    return spec.model_dump(mode="json", exclude_none=True)


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
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
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


def _print_ranking(exp_dir: str, spec: Spec, top: int) -> None:
    from tuner.results import format_ranking, load, rank

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
    if (trials["status"] != "completed").any():
        print("(early-stopped and failed trials have no test figures; --by best_val_acc ranks all)")
    print(f"\nresults: {exp_dir}/trials  ({len(trials)} rows)")
    print(f"         {exp_dir}/epochs  ({len(epochs)} rows)")
    print(f"rank again: python -m tuner.rank {exp_dir} --by test_acc --group model,transfer")
    print(f"report:     python -m tuner.report {exp_dir}")


if __name__ == "__main__":
    raise SystemExit(main())
