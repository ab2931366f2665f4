"""``python -m trainables.data download PRESET --root DIR``: fetch, verify, extract a dataset.

Each downloadable preset (:data:`DOWNLOADABLE`) states its archive's public location and
published MD5 in :mod:`trainables.data.presets` (``url``, ``md5``, ``source``). The
download:

1. fetches the archive into ``DIR/<archive>.part`` with a progress line on stderr, and
   **resumes** a partial file left by an interrupted run (an HTTP ``Range`` request; a
   server that ignores it sends the whole file again);
2. **verifies** the MD5 (the preset's, or ``--md5``): on a mismatch it stops with exit
   status 2 and leaves nothing in ``DIR`` but the partial file (delete it to start over);
3. **extracts** into the preset's layout (``DIR/<class>/...``; UC-Merced:
   ``DIR/Images/<class>/...``), whatever single top folder the archive wraps it in, refusing
   members that would land outside ``DIR``;
4. checks that every class folder of the preset is there, then deletes the archive
   (``--keep-archive`` keeps it).

``--url`` (and ``--md5``) take a mirror; without ``--md5`` a mirror is checked against the
preset's MD5, since mirrors serve the same file. A preset without a published MD5 (RSSCN7)
is checked against its layout only and the MD5 found is printed, to pin with ``--md5`` later.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import TextIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from trainables.data.presets import PRESETS, Preset

DOWNLOADABLE = tuple(name for name, p in PRESETS.items() if p.url)
"""Presets with a public archive: ``nwpu_resisc45``, ``ucmerced``, ``rsscn7``."""

TIMEOUT_S = 60.0
"""Seconds the server may stay silent before a download fails (the partial file is kept)."""

CHUNK = 1 << 20
MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


class DownloadError(RuntimeError):
    """The download failed (network); a partial file, if any, is kept for a resume."""


class RefusedError(ValueError):
    """Bad input or a file that fails its check (exit status 2)."""


def _partial_name(url: str, preset: Preset) -> str:
    name = Path(urlparse(url).path).name or f"{preset.name}.zip"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def is_complete(root: Path, preset: Preset) -> bool:
    """Whether ``root`` already holds every class folder of ``preset``."""
    base = root / preset.subdir if preset.subdir else root
    if not base.is_dir() or preset.classes is None:
        return False
    return all((base / preset.folder_of(c)).is_dir() for c in preset.classes)


class _Progress:
    """A throttled progress line (``\\r``-updated on a terminal, a line per 10 % otherwise)."""

    def __init__(self, stream: TextIO, total: int | None, start: int):
        self.stream, self.total, self.start = stream, total, start
        self.t0 = self.last = time.monotonic()
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.shown = -1

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        pct = int(100 * done / self.total) if self.total else None
        if not final:
            if self.tty and now - self.last < 0.5:
                return
            if not self.tty and (pct is None or pct // 10 == self.shown // 10):
                return
        self.last, self.shown = now, pct if pct is not None else self.shown
        rate = (done - self.start) / max(now - self.t0, 1e-6) / 1e6
        total = f" / {self.total / 1e6:.1f} MB ({pct}%)" if self.total else " MB"
        text = f"download: {done / 1e6:.1f}{total}, {rate:.1f} MB/s"
        self.stream.write(("\r" + text + ("\n" if final else "")) if self.tty else text + "\n")
        self.stream.flush()


def fetch(url: str, partial: Path, *, stream: TextIO, timeout: float = TIMEOUT_S) -> None:
    """Download ``url`` into ``partial``, resuming from its current size.

    Raises:
        DownloadError: The connection failed or ended early (``partial`` keeps what came).
    """
    have = partial.stat().st_size if partial.is_file() else 0
    headers = {"User-Agent": "tuner-download/1", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and have:  # the partial file is already the whole file
            stream.write(f"download: {partial.name} already complete ({have:,} bytes)\n")
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (URLError, OSError) as err:
        raise DownloadError(f"{url}: {getattr(err, 'reason', err)}") from None
    with response:
        resumed = have and response.status == 206
        if have and not resumed:
            stream.write("download: the server does not resume downloads; starting over\n")
            have = 0
        length = response.headers.get("Content-Length")
        total = int(length) + have if length and length.isdigit() else None
        if resumed:
            stream.write(f"download: resuming {partial.name} at {have:,} bytes\n")
        progress = _Progress(stream, total, have)
        done = have
        try:
            with partial.open("ab" if resumed else "wb") as out:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    done += len(chunk)
                    progress.update(done)
        except (OSError, ValueError) as err:  # http.client.IncompleteRead is an OSError
            raise DownloadError(
                f"{url}: the connection ended after {done:,} bytes ({type(err).__name__}); "
                f"the partial file {partial} is kept: run the same command again to resume"
            ) from None
        progress.update(done, final=True)
    if total is not None and done < total:
        raise DownloadError(
            f"{url}: the connection ended after {done:,} of {total:,} bytes; the partial file "
            f"{partial} is kept: run the same command again to resume"
        )


def md5_of(path: Path) -> str:
    """Hex MD5 of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(base: Path, name: str) -> Path:
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise RefusedError(f"archive member {name!r} would be written outside {base}; refused")
    return target


def extract(archive: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest`` (members may not leave it).

    Raises:
        RefusedError: Not a zip or tar file, or a member outside ``dest``.
    """
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                _inside(dest, member.filename)
            z.extractall(dest)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for member in t.getmembers():
                _inside(dest, member.name)
                if member.issym() or member.islnk():
                    raise RefusedError(f"archive member {member.name!r} is a link; refused")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                t.extractall(dest, filter="data")
            else:
                t.extractall(dest)
        return
    raise RefusedError(
        f"{archive} is neither a zip nor a tar archive (RAR archives are not read: convert "
        "it to zip, or extract it yourself into the preset's layout)"
    )


def _content_root(staging: Path, preset: Preset) -> Path:
    """The folder of the extracted tree that holds the preset's layout.

    Descends through single wrapping folders (``UCMerced_LandUse/``, ``RSSCN7-<sha>/``)
    until it reaches class folders (or UC-Merced's ``Images/``).
    """
    markers = {preset.folder_of(c) for c in preset.classes or ()}
    if preset.subdir:
        markers.add(preset.subdir)
    here = staging
    while True:
        entries = [p for p in here.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if any(p.name in markers for p in entries) or len(entries) != 1 or entries[0].is_file():
            return here
        here = entries[0]


def arrange(staging: Path, root: Path, preset: Preset) -> None:
    """Move the extracted tree into ``root`` in the preset's layout."""
    content = _content_root(staging, preset)
    target = root
    if preset.subdir and not (content / preset.subdir).is_dir():
        target = root / preset.subdir  # a copy without the Images/ level
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(content.iterdir()):
        if entry.name.startswith((".", "__MACOSX")):
            continue
        shutil.move(str(entry), str(target / entry.name))


def check_layout(root: Path, preset: Preset) -> None:
    """Every class folder of the preset is under ``root``.

    Raises:
        RefusedError: Some are missing (named).
    """
    base = root / preset.subdir if preset.subdir else root
    missing = [c for c in preset.classes or () if not (base / preset.folder_of(c)).is_dir()]
    if missing:
        raise RefusedError(
            f"the archive does not hold the {preset.name} layout: {len(missing)} of "
            f"{len(preset.classes)} class folders are missing under {base} "
            f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
        )


def download(
    preset_name: str,
    root: str | Path,
    *,
    url: str | None = None,
    md5: str | None = None,
    keep_archive: bool = False,
    stream: TextIO | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download, verify and extract one dataset into ``root``; returns ``root``.

    Args:
        preset_name: One of :data:`DOWNLOADABLE`.
        root: Folder to fill (created; it may hold only a partial download already).
        url: A mirror of the archive (default: the preset's ``url``).
        md5: Expected MD5 (default: the preset's; ``None`` there: layout check only).
        keep_archive: Keep the archive after extraction.
        stream: Where progress goes (default stderr).
        timeout: Seconds the server may stay silent.

    Raises:
        RefusedError: Unknown preset, bad ``md5``, a folder holding other files, an MD5
            mismatch (the partial file is kept, nothing else), or an archive without the
            preset's layout.
        DownloadError: The network failed (the partial file is kept for a resume).
    """
    stream = stream or sys.stderr
    if preset_name not in DOWNLOADABLE:
        raise RefusedError(
            f"preset {preset_name!r} cannot be downloaded; downloadable: {', '.join(DOWNLOADABLE)}"
        )
    preset = PRESETS[preset_name]
    if md5 is not None and not MD5_RE.match(md5):
        raise RefusedError(f"--md5 must be 32 hexadecimal digits, but got {md5!r}")
    url = url or preset.url
    expected = (md5 or preset.md5 or "").lower() or None
    root = Path(root).expanduser()
    if is_complete(root, preset):
        stream.write(f"{preset_name}: already in {root}; nothing to download\n")
        return root
    archive = root / _partial_name(url, preset)
    _fetch_verified(
        preset_name,
        url,
        archive,
        expected,
        md5_given=md5 is not None,
        stream=stream,
        timeout=timeout,
    )
    staging = root / f".extract-{secrets.token_hex(4)}"
    try:
        stream.write(f"{preset_name}: extracting {archive.name}\n")
        extract(archive, staging)
        arrange(staging, root, preset)
        check_layout(root, preset)
    except BaseException:
        for entry in root.iterdir():
            if entry != archive:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    base = root / preset.subdir if preset.subdir else root
    stream.write(f"{preset_name}: {len(preset.classes or ())} classes in {base}\n")
    return root


def _fetch_verified(
    preset_name: str,
    url: str,
    archive: Path,
    expected: str | None,
    *,
    md5_given: bool,
    stream: TextIO,
    timeout: float,
) -> None:
    """Put the checked archive at ``archive``: fetch it (resuming a ``.part`` file) and check
    its MD5, or check the one already there.

    ``archive``'s folder may hold nothing else (other files are refused); a mismatching
    download stays as ``.part`` and nothing else is written.
    """
    root, partial = archive.parent, archive.with_name(archive.name + ".part")
    if root.exists():
        others = [p.name for p in root.iterdir() if p not in (archive, partial)]
        if others:
            raise RefusedError(
                f"--root {root} already holds other files ({', '.join(sorted(others)[:5])}); "
                "download into an empty or new folder"
            )
    root.mkdir(parents=True, exist_ok=True)
    if archive.is_file():
        if expected is not None and md5_of(archive) != expected:
            raise RefusedError(f"{archive}: MD5 does not match {expected}; delete it and run again")
        return
    stream.write(f"{preset_name}: {url} -> {root}\n")
    fetch(url, partial, stream=stream, timeout=timeout)
    found = md5_of(partial)
    if expected is not None and found != expected:
        raise RefusedError(
            f"{partial}: MD5 {found} does not match the expected {expected} "
            f"({'--md5' if md5_given else f'the {preset_name} preset'}); the file is left as "
            f"{partial.name} and nothing else was written: delete it to download again, "
            "or pass --md5 if this mirror serves another file"
        )
    os.replace(partial, archive)
    if expected is None:
        stream.write(
            f"{preset_name}: no published checksum; MD5 of this download: {found} "
            "(pass --md5 to pin it); checking the layout instead\n"
        )
    else:
        stream.write(f"{preset_name}: MD5 {found} verified\n")
