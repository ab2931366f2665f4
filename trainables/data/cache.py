"""Decoded-image cache: every image decoded and resized once into a memory-mapped uint8 array.

The cache directory is keyed by the files (path, byte size, modification time) and the pixel
size, so later epochs, other trials and other searches on the same machine reuse it; a file
lock makes concurrent trials build it once. No JPEG is decoded per epoch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from trainables.data.folder import Scan, read_rgb

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$TUNER_CACHE`` or ``~/.cache/tuner/decoded``."""
    env = os.environ.get("TUNER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tuner" / "decoded"


def cache_key(scan: Scan, size: int) -> str:
    """Hash of the file list (path, byte size, mtime) and the pixel size."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{scan.root.resolve()}|{size}".encode())
    root = str(scan.root)
    for rel in scan.files:
        st = os.stat(os.path.join(root, rel))
        h.update(f"|{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str, tuple[int, int], str]:
    """Decode one file: (pixels or None, content digest, original (w, h), error text)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, "", (0, 0), f"{type(err).__name__}: {err}"
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as probe:
            original = probe.size
        image = read_rgb(io.BytesIO(data), size)  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - any decoder failure means "skip this file"
        return None, digest, (0, 0), f"{type(err).__name__}: {err}"
    return np.asarray(image, dtype=np.uint8), digest, original, ""


@dataclass
class DecodedCache:
    """A built cache: ``images[i]`` is file ``i`` of the scan as an (S, S, 3) uint8 array.

    Attributes:
        directory: Cache folder (``images.npy`` + ``meta.json``).
        size: Side length S.
        files: Relative file paths, in scan order.
        ok: Whether each file decoded.
        digests: Content digest per file (for exact-duplicate detection).
        original_sizes: (width, height) of each file before resizing.
        errors: File -> error text, for skipped files.
    """

    directory: Path
    size: int
    files: list[str]
    ok: np.ndarray
    digests: list[str]
    original_sizes: list[tuple[int, int]]
    errors: dict[str, str]

    @property
    def images(self) -> np.ndarray:
        """The read-only memory map (opened on first use, also in worker processes)."""
        arr = self.__dict__.get("_images")
        if arr is None:
            arr = np.load(self.directory / "images.npy", mmap_mode="r")
            self.__dict__["_images"] = arr
        return arr

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_images", None)
        return state

    @classmethod
    def open(cls, directory: Path) -> DecodedCache:
        """Open a complete cache folder."""
        meta = json.loads((directory / "meta.json").read_text())
        return cls(
            directory=directory,
            size=meta["size"],
            files=meta["files"],
            ok=np.asarray(meta["ok"], dtype=bool),
            digests=meta["digests"],
            original_sizes=[tuple(s) for s in meta["original_sizes"]],
            errors=meta["errors"],
        )

    @classmethod
    def build(
        cls, scan: Scan, size: int, cache_dir: str | Path | None = None, num_workers: int = 2
    ) -> DecodedCache:
        """Open the cache for ``scan`` at ``size``, decoding it first if needed.

        Unreadable files are skipped with a warning that lists them.
        """
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        key = cache_key(scan, size)
        final = root / key
        with FileLock(str(root / f"{key}.lock")):
            if not (final / "meta.json").is_file():
                tmp = root / f".{key}.tmp-{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                cls._write(scan, size, tmp, num_workers)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
        cache = cls.open(final)
        if cache.errors:
            listed = "\n".join(f"  {f}: {e}" for f, e in sorted(cache.errors.items()))
            warnings.warn(
                f"skipped {len(cache.errors)} unreadable image file(s) under {scan.root}:\n"
                f"{listed}",
                stacklevel=2,
            )
        return cache

    @staticmethod
    def _write(scan: Scan, size: int, directory: Path, num_workers: int) -> None:
        n = len(scan.files)
        images = np.lib.format.open_memmap(
            directory / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
        )
        ok = np.zeros(n, dtype=bool)
        digests = [""] * n
        sizes: list[tuple[int, int]] = [(0, 0)] * n
        errors: dict[str, str] = {}
        paths = [scan.root / rel for rel in scan.files]
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            for i, (pixels, digest, original, error) in enumerate(
                pool.map(lambda p: _decode(p, size), paths, chunksize=16)
            ):
                digests[i], sizes[i] = digest, original
                if pixels is None:
                    errors[scan.files[i]] = error
                    continue
                images[i] = pixels
                ok[i] = True
        images.flush()
        del images
        meta = {
            "version": CACHE_VERSION,
            "size": size,
            "root": str(scan.root),
            "files": scan.files,
            "ok": ok.tolist(),
            "digests": digests,
            "original_sizes": [list(s) for s in sizes],
            "errors": errors,
        }
        (directory / "meta.json").write_text(json.dumps(meta))
