"""The pretraining stage: train a backbone on a source dataset once, offer it as weights.

Paper 1 and paper 2 transfer "knowledge of the source domain" from ImageNet. Here the user
picks the source: ``pretrain.dataset`` (e.g. NWPU-RESISC45 for a UC-Merced search, or the
synthetic generator offline). Each model of the search that is combined with
``weights: pretrain`` is trained from scratch on the source once; the checkpoint is keyed by
a hash of the resolved pretrain section, the model and the input size, so later runs and
other experiments reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from trainables.classify import BEST, train
from trainables.config import SCRATCH, TrialConfig
from tuner.spec import Spec

PRETRAIN_DIR = "_pretrained"


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
        results_root: The checkpoints go to ``<results_root>/_pretrained/``.
        log: Where progress lines go.
        max_batches: Smoke-size switch: at most this many batches per split per epoch
            (part of the checkpoint's key, so a smoke stage never stands in for a full one).

    Returns:
        Model name -> path of its ``best.pt`` (a checkpoint :func:`create_model` loads).
    """
    out: dict[str, str] = {}
    models = models_to_pretrain(spec)
    if not models:
        return out
    assert spec.pretrain is not None and spec.dataset is not None
    root = Path(results_root).expanduser().resolve() / PRETRAIN_DIR
    root.mkdir(parents=True, exist_ok=True)
    p = spec.pretrain
    source = p.dataset.model_copy(update={"image_size": spec.dataset.image_size})
    for model in models:
        key = pretrain_key(spec, model, max_batches)
        final = root / f"{model}-{key}"
        with FileLock(str(root / f"{model}-{key}.lock")):
            if (final / BEST).is_file():
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
                (tmp / "pretrain.json").write_text(
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
        out[model] = str(final / BEST)
    return out
