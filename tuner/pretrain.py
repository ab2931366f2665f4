"""The pretraining stage: train a backbone on a source dataset once, offer it as weights.

Paper 1 and paper 2 transfer "knowledge of the source domain" from ImageNet. Here the user
picks the source: ``pretrain.dataset`` (e.g. NWPU-RESISC45 for a UC-Merced search, or the
synthetic generator offline). Each model of the search that is combined with
``weights: pretrain`` is trained from scratch on the source once; the checkpoint is keyed by
a hash of the resolved pretrain section, the model and the input size, so later runs and
other experiments reuse it.

Where the checkpoints live: with local results in ``<results>/_pretrained/``; with
``s3://``, ``gs://`` or ``file://`` results the driver trains in its local cache
(``<dataset.cache_dir>/pretrained/``) and uploads to ``<results>/_pretrained/`` (``best.pt``
last, so its presence means a whole upload); each trial node downloads the file once into
its own cache (:func:`local_checkpoint`). Nothing is written to the working directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs
from filelock import FileLock

from trainables.classify import BEST, train
from trainables.config import SCRATCH, TrialConfig
from trainables.data.cache import default_cache_dir
from tuner.spec import Spec

PRETRAIN_DIR = "_pretrained"
LOCAL_DIR = "pretrained"
INFO = "pretrain.json"
SOURCE = "source.txt"


def local_dir(cache_dir: str | Path | None) -> Path:
    """This node's copy of remote pretraining checkpoints: ``<cache_dir>/pretrained``."""
    return Path(cache_dir or default_cache_dir()).expanduser().resolve() / LOCAL_DIR


def _stamp(fs: pafs.FileSystem, path: str) -> str | None:
    """Size and modification time of a remote file (``None``: no such file)."""
    info = fs.get_file_info(path)
    return f"{info.size} {info.mtime_ns}" if info.type == pafs.FileType.File else None


def _join(uri: str, *parts: str) -> str:
    """``uri`` with path parts appended before its query string (``?region=...``)."""
    head, sep, query = str(uri).partition("?")
    return "/".join([head.rstrip("/"), *parts]) + sep + query


def _copy(read, write) -> None:
    while chunk := read.read(1 << 20):
        write.write(chunk)


def _download(fs: pafs.FileSystem, src: str, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temporary file beside it (never half a file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with fs.open_input_stream(src) as f, open(tmp, "wb") as out:
        _copy(f, out)
    os.replace(tmp, dest)


def _upload(folder: Path, fs: pafs.FileSystem, dest: str) -> None:
    """Copy ``pretrain.json`` then ``best.pt`` of ``folder`` to ``dest`` (``best.pt`` last:
    its presence marks a complete upload; object stores publish a file when it is closed,
    a local filesystem by a rename)."""
    fs.create_dir(dest, recursive=True)
    for name in (INFO, BEST):
        target = f"{dest}/{name}"
        local = isinstance(fs, pafs.LocalFileSystem)
        path = f"{dest}/.{name}.tmp-{os.getpid()}" if local else target
        with open(folder / name, "rb") as f, fs.open_output_stream(path) as out:
            _copy(f, out)
        if local:
            fs.move(path, target)


def local_checkpoint(path: str, cache_dir: str | Path | None = None) -> str:
    """A pretraining checkpoint as a local file: ``path`` itself unless it is a URI.

    A URI (``s3://``, ``gs://``, ``file://``) is downloaded once per node into
    ``<cache_dir>/pretrained/<model>-<key>/best.pt`` under a file lock (trials of one node
    asking at once download it once); the local copy is reused while the remote file's size
    and modification time are those it was copied from (``source.txt`` beside it).

    Raises:
        FileNotFoundError: The URI names no file (the stage's upload is missing).
    """
    if "://" not in str(path):
        return str(path)
    from tuner.results import filesystem

    fs, remote = filesystem(path)
    stamp = _stamp(fs, remote)
    if stamp is None:
        raise FileNotFoundError(
            f"pretraining checkpoint {path} does not exist: the driver uploads it before the "
            "search starts; run the search again to rebuild it"
        )
    dest = local_dir(cache_dir) / Path(remote).parent.name / BEST
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = dest.with_name(SOURCE)
    with FileLock(str(dest.parent) + ".lock"):
        if not dest.is_file() or not source.is_file() or source.read_text() != stamp:
            _download(fs, remote, dest)
            source.write_text(stamp)
    return str(dest)


def pretrain_key(spec: Spec, model: str, max_batches: int | None = None) -> str:
    """Hash of everything that decides the pretrained weights of ``model``."""
    assert spec.pretrain is not None and spec.dataset is not None
    payload = {
        "pretrain": spec.pretrain.model_dump(mode="json"),
        "model": model,
        "image_size": spec.dataset.image_size,
        "version": 1,
    }
    if max_batches is not None:
        payload["max_batches"] = max_batches
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def models_to_pretrain(spec: Spec) -> list[str]:
    """Models of the search that can be combined with ``weights: pretrain``."""
    by_name = {p.name: p for p in spec.params}
    weights = by_name.get("weights")
    if weights is None or "pretrain" not in weights.values:
        return []
    model = by_name.get("model")
    models = model.values if model else (TrialConfig.model_fields["model"].default,)
    return sorted(set(models))


def pretrain_all(
    spec: Spec,
    results_root: str | Path,
    log: Callable[[str], None] = print,
    max_batches: int | None = None,
) -> dict[str, str]:
    """Train (or reuse) the source-domain checkpoint of every model that needs one.

    Args:
        spec: The spec (its ``pretrain`` section and models).
        results_root: The checkpoints go to ``<results_root>/_pretrained/`` (a URI: trained
            in the local cache, then uploaded there; see the module docstring).
        log: Where progress lines go.
        max_batches: Smoke-size switch: at most this many batches per split per epoch
            (part of the checkpoint's key, so a smoke stage never stands in for a full one).

    Returns:
        Model name -> path or URI of its ``best.pt`` (a checkpoint :func:`create_model`
        loads once :func:`local_checkpoint` has made it local).
    """
    out: dict[str, str] = {}
    models = models_to_pretrain(spec)
    if not models:
        return out
    assert spec.pretrain is not None and spec.dataset is not None
    remote = "://" in str(results_root)
    if remote:
        from tuner.results import filesystem

        fs, base = filesystem(results_root)
        root = local_dir(spec.dataset.cache_dir)
    else:
        root = Path(results_root).expanduser().resolve() / PRETRAIN_DIR
    root.mkdir(parents=True, exist_ok=True)
    p = spec.pretrain
    source = p.dataset.model_copy(update={"image_size": spec.dataset.image_size})
    for model in models:
        key = pretrain_key(spec, model, max_batches)
        final = root / f"{model}-{key}"
        shared = f"{base}/{PRETRAIN_DIR}/{model}-{key}" if remote else None
        uri = _join(str(results_root), PRETRAIN_DIR, f"{model}-{key}", BEST)
        with FileLock(str(root / f"{model}-{key}.lock")):
            if shared and _stamp(fs, f"{shared}/{BEST}") is not None:
                log(f"pretrain: reusing {model} source weights {uri}")
            elif (final / BEST).is_file():
                log(f"pretrain: reusing {model} source weights {final / BEST}")
            else:
                log(f"pretrain: training {model} on {source.preset} ({p.epochs} epochs) ...")
                cfg = TrialConfig(
                    data=source,
                    model=model,
                    transfer=SCRATCH,
                    weights=None,
                    max_batches=max_batches,
                    **p.settings(),
                )
                tmp = root / f".{model}-{key}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                summary = train(cfg, checkpoint_dir=tmp, log=lambda s, m=model: log(f"  {m} {s}"))
                (tmp / INFO).write_text(
                    json.dumps(
                        {
                            **p.model_dump(mode="json"),
                            "model": model,
                            "summary": {
                                k: v for k, v in summary.items() if not isinstance(v, list)
                            },
                        },
                        default=str,
                    )
                )
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                log(
                    f"pretrain: {model} source val acc {summary['best_val_acc']:.3f} -> "
                    f"{final / BEST}"
                )
            if shared and _stamp(fs, f"{shared}/{BEST}") is None:
                _upload(final, fs, shared)
                (final / SOURCE).write_text(_stamp(fs, f"{shared}/{BEST}"))
                log(f"pretrain: uploaded {model} source weights to {uri}")
        out[model] = uri if remote else str(final / BEST)
    return out
