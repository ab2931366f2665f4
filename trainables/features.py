"""Frozen-backbone features, computed once per search and shared by its trials.

A frozen trial trains only its head, so what its backbone makes of an image depends only
on the model, the weights, the image (which file, at what size, through which
preprocessing) and, for a training image with augmentation, on the random view drawn.
None of it depends on the learning rate, batch size, head or optimiser a search varies.
:class:`FeatureStore` keeps those features on disk under the cache directory, one file
per :class:`FeatureKey`:

* content-addressed: the file name is the hash of the key, and the key records the
  SHA-256 of the weights file and the hash of the split manifest, not their names, so a
  changed checkpoint or split never reads stale features;
* file-locked and written atomically (a temporary file, then ``os.replace``): when two
  trials ask for the same features at once, one computes them and the other waits for the
  lock and reads the file; a reader never sees a half-written file.

On a cluster the cache directory lives on each node (the default) and every node computes
the features once; pointing ``dataset.cache_dir`` at shared storage makes one node compute
them for all (the lock is then a lock file on that storage).

Frozen trials **with augmentation** replay a bank of ``V`` augmented views of the training
split (:data:`~trainables.config.TrialConfig.feature_views`, default the epoch count):
epoch ``e`` trains on view ``e mod V``. View ``v`` is drawn with the seed
:func:`view_seed` ``(trial seed, v)``, so every trial with the same seed and augmentation
sees the same views and the backbone runs once per view, not once per trial and epoch.
``feature_views: 0`` turns the bank off (fresh augmentation every epoch, backbone every
epoch); ``feature_store: false`` keeps the bank but computes it inside each trial.

:class:`FrozenFeatures` is what one trial uses: the features of each split, from the
store or computed, and the seconds it spent computing them (0 when all were read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock

from trainables.augment import PRESETS, eval_transform, stored_size, train_transform
from trainables.config import NO_WEIGHTS

STORE_VERSION = 1
"""Part of every key: bump it when the way features are computed changes."""

ENCODE_BATCH = 256
"""Images per backbone call when computing features (independent of the trial's batch
size, so trials that differ only in batch size share features)."""

FEATURES_DIR = "features"
"""Sub-folder of the cache directory that holds the store."""

HEAD_THREADS = 1
"""CPU threads of a head fit on stored features: a stream of small operations, which more
threads only slow down (on 2 cores shared with other work, 10 epochs of a linear head on
630 x 512 features took 45-50 s with 2 threads, 0.9-1.4 s with 1)."""

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images ``(N, 3, H, W)`` -> float features ``(N, D)`` (the frozen backbone)."""


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and modification time)."""
    path = Path(path).expanduser().resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_identity(weights: str | None) -> str:
    """What the features depend on in ``weights``: a file's SHA-256, else the name."""
    text = (weights or NO_WEIGHTS).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return f"sha256:{file_digest(path)}"
    return text.lower() if text.lower() in (NO_WEIGHTS, "imagenet") else text


def view_seed(seed: int, view: int) -> int:
    """Seed of augmented view ``view`` of the bank of a trial seeded ``seed``."""
    return (seed * 1_000_003 + view * 104_729 + 31) % (2**63 - 1)


@dataclass(frozen=True)
class FeatureKey:
    """Everything a stored feature tensor depends on.

    Attributes:
        model: Model name.
        weights: :func:`weights_identity` of the weights.
        split_hash: Hash of the split manifest (which files are in which split).
        image_size: Network input side.
        preprocessing: Normalisation, device type and compute dtype of the pass.
        view: ``<split>:eval:stored<side>:<how>`` for a deterministic pass (augmentation
            presets that store and evaluate alike share it), or
            ``train:<augmentation>:seed<s>:view<v>`` for one augmented view.
        limit: Only the first ``limit`` images of the split (a smoke run), or ``None``.
    """

    model: str
    weights: str
    split_hash: str
    image_size: int
    preprocessing: str
    view: str
    limit: int | None = None

    def digest(self) -> str:
        """The file name stem: a hash of the key and :data:`STORE_VERSION`."""
        payload = json.dumps({**asdict(self), "version": STORE_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


class FeatureStore:
    """Feature tensors on disk, one ``<digest>.pt`` per :class:`FeatureKey`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @classmethod
    def under(cls, cache_dir: str | Path | None) -> FeatureStore:
        """The store in ``<cache_dir>/features`` (default: beside the decoded cache)."""
        from trainables.data.cache import default_cache_dir

        return cls(Path(cache_dir or default_cache_dir()) / FEATURES_DIR)

    def path(self, key: FeatureKey) -> Path:
        """Where the features of ``key`` are (or will be) stored."""
        return self.root / f"{key.digest()}.pt"

    def fetch(
        self, key: FeatureKey, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], float]:
        """The tensors of ``key``, read or computed (then stored) under a file lock.

        Returns:
            The tensors (on the CPU) and the seconds spent computing them here (0.0 when
            they were read from the store).
        """
        final = self.path(key)
        found = self._read(final, key)
        if found is not None:
            return found, 0.0
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final.with_suffix(".lock"))):
            found = self._read(final, key)
            if found is not None:
                return found, 0.0
            start = time.perf_counter()
            tensors = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
            seconds = time.perf_counter() - start
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
            torch.save({"key": asdict(key), "tensors": tensors}, tmp)
            os.replace(tmp, final)
        return tensors, seconds

    @staticmethod
    def _read(path: Path, key: FeatureKey) -> dict[str, torch.Tensor] | None:
        """The stored tensors of ``key``; ``None`` if absent or unreadable (recomputed)."""
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged file is recomputed and replaced
            return None
        if obj.get("key") != asdict(key):
            return None
        return obj["tensors"]


class FrozenFeatures:
    """The features one frozen trial trains and evaluates its head on.

    Args:
        encode: The frozen backbone (see :data:`Encoder`); called without gradients.
        data: The prepared data (its ``split_hash`` is part of every key).
        key: The fields shared by every key of this trial (model, weights,
            preprocessing; ``view`` and ``limit`` are filled in per split).
        augmentation: The trial's augmentation preset.
        seed: The trial seed (seeds the views).
        views: Size of the view bank for augmented training (``0``: no bank).
        epochs: The trial's epoch count (a bank smaller than it is kept in memory when
            there is no store to read it back from).
        limits: Split -> first N images only (smoke runs).
        store: Where features are shared, or ``None`` to compute them in the trial.
        device: Where the returned tensors live.
    """

    def __init__(
        self,
        encode: Encoder,
        data,
        key: dict,
        *,
        augmentation: str,
        seed: int,
        views: int,
        epochs: int,
        limits: dict[str, int | None],
        store: FeatureStore | None,
        device: torch.device,
    ) -> None:
        self.encode, self.data, self.key = encode, data, key
        self.augmentation, self.seed, self.views = augmentation, seed, views
        self.limits, self.store, self.device = limits, store, device
        self.keep_views = store is None and views < epochs
        self.pass_s = 0.0
        self._kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def augmented(self) -> bool:
        """Whether training uses a bank of augmented views."""
        return self.augmentation != "none" and self.views > 0

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of ``split`` without random augmentation."""
        if split == "train" and self.augmented:
            raise ValueError("the training split of an augmented trial comes from train_view")
        size = self.key["image_size"]
        stored = stored_size(self.augmentation, size)
        how = "as-stored" if stored == size else PRESETS[self.augmentation].evaluate
        transform = eval_transform(self.augmentation, size)
        return self._get(f"{split}:eval:stored{stored}:{how}", split, transform, None)

    def train_view(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training features of 0-based ``epoch``: view ``epoch mod V``, or the plain split."""
        if not self.augmented:
            return self.split("train")
        view = epoch % self.views
        name = f"train:{self.augmentation}:seed{self.seed}:view{view}"
        transform = train_transform(self.augmentation, self.key["image_size"])
        return self._get(name, "train", transform, view_seed(self.seed, view))

    def take_pass_s(self) -> float:
        """Seconds spent computing features since the last call (0.0: all reused)."""
        out, self.pass_s = self.pass_s, 0.0
        return out

    def _get(self, view: str, split: str, transform, seed: int | None):
        if view in self._kept:
            return self._kept[view]
        key = FeatureKey(
            **self.key, split_hash=self.data.split_hash, view=view, limit=self.limits.get(split)
        )

        def compute() -> dict[str, torch.Tensor]:
            return self._compute(split, transform, seed, key.limit)

        if self.store is None:
            start = time.perf_counter()
            tensors = compute()
            self.pass_s += time.perf_counter() - start
        else:
            tensors, seconds = self.store.fetch(key, compute)
            self.pass_s += seconds
        out = (tensors["x"].to(self.device), tensors["y"].to(self.device))
        # deterministic splits are used every epoch; views only every V epochs
        if seed is None or self.keep_views:
            self._kept[view] = out
        return out

    @torch.no_grad()
    def _compute(self, split: str, transform, seed: int | None, limit: int | None) -> dict:
        dataset = self.data.dataset(split, transform)
        n = len(dataset) if limit is None else min(limit, len(dataset))
        feats, labels = [], []
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, n, ENCODE_BATCH):
                x, y = dataset.__getitems__(list(range(start, min(n, start + ENCODE_BATCH))))
                feats.append(self.encode(x).float().cpu())
                labels.append(y.long())
        if not feats:
            return {"x": torch.zeros(0, 0), "y": torch.zeros(0, dtype=torch.long)}
        return {"x": torch.cat(feats), "y": torch.cat(labels)}


@contextlib.contextmanager
def head_threads(on_features: bool, device: torch.device) -> Iterator[None]:
    """Run a head fit on stored features with :data:`HEAD_THREADS` CPU threads."""
    if not on_features or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(HEAD_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trained_state(model, weights: str | None) -> dict:
    """The ``model`` entries of a checkpoint: without a frozen backbone's tensors.

    A frozen backbone is the weights file itself, so a checkpoint written every epoch keeps
    the head only and records the file's :func:`weights_identity` (``best.pt`` stays whole:
    it is the trained model others load).
    """
    state = model.state_dict()
    if getattr(model, "transfer", None) != "frozen":
        return {"model": state}
    head = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return {"model": head, "frozen_backbone": weights_identity(weights)}


def load_trained_state(model, weights: str | None, state: Mapping, path) -> None:
    """Load what :func:`trained_state` wrote (the backbone of a frozen model stays as built).

    Raises:
        ValueError: The checkpoint's frozen backbone came from other weights, or keys do not fit.
    """
    recorded = state.get("frozen_backbone")
    if recorded is None:
        model.load_state_dict(state["model"])
        return
    if recorded != weights_identity(weights):
        raise ValueError(
            f"{path}: its frozen backbone came from weights {recorded}, but this trial's "
            f"weights are {weights_identity(weights)}; resume with the same weights file"
        )
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: the head state does not fit the model: {', '.join(bad[:5])}")
