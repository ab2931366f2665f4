"""``python -m trainables.data download``: against a local HTTP server on 127.0.0.1.

The server serves zip archives built here in each dataset's real layout (its top folder,
class folders and file names, one tiny image per class), supports HTTP ``Range`` and can
cut its first response short, so progress, resume, checksum refusal and extraction are
all exercised without a network.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from trainables.config import DataConfig
from trainables.data.__main__ import main
from trainables.data.dataset import scan_config
from trainables.data.presets import PRESETS


class Server:
    """Serves ``files`` (name -> bytes); ``cut_after`` bytes end the first response early."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                body = server.files.get(name)
                server.ranges.append(self.headers.get("Range"))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[start : start + server.cut_after])
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def _archive(tmp_path: Path, preset: str, top: str, *, subdir: str | None = None) -> bytes:
    """A zip of the preset's real layout: ``top/[subdir/]<folder>/<file>``, one image each."""
    p = PRESETS[preset]
    path = tmp_path / f"{preset}.zip"
    suffix = p.suffixes[0]
    with zipfile.ZipFile(path, "w") as z:
        for i, cls in enumerate(p.classes):
            folder = p.folder_of(cls)
            name = {
                "ucmerced": f"{cls}00{suffix}",
                "nwpu_resisc45": f"{cls}_001{suffix}",
                "rsscn7": f"{folder[0]}001{suffix}",
            }[preset]
            image = tmp_path / f"img{i}{suffix}"
            Image.new("RGB", (8, 8), (i * 5 % 256, 80, 160)).save(image)
            parts = [top, subdir, folder, name]
            z.write(image, "/".join(x for x in parts if x))
    return path.read_bytes()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


LAYOUTS = [
    ("ucmerced", "UCMerced_LandUse", "Images"),
    ("nwpu_resisc45", "NWPU-RESISC45", None),
    ("rsscn7", "RSSCN7-6d77849df87d242b323184ab096e44dd63730c7e", None),
]


@pytest.mark.parametrize(("preset", "top", "subdir"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_download_extracts_into_the_preset_layout(server, tmp_path, capsys, preset, top, subdir):
    data = _archive(tmp_path, preset, top, subdir=subdir)
    server.files["a.zip"] = data
    root = tmp_path / "data" / preset
    md5 = [] if preset == "rsscn7" else ["--md5", _md5(data)]
    argv = ["download", preset, "--root", str(root), "--url", f"{server.url}/a.zip", *md5]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "download: " in err and "(100%)" in err  # progress
    if preset == "rsscn7":  # no published checksum: the one found is printed to pin
        assert f"no published checksum; MD5 of this download: {_md5(data)}" in err
    else:
        assert "verified" in err
    scan = scan_config(DataConfig(preset=preset, root=str(root)))
    assert len(scan.class_names) == len(PRESETS[preset].classes) == len(scan.files)
    layout = PRESETS[preset]
    expected = [subdir] if subdir else [layout.folder_of(c) for c in layout.classes]
    assert sorted(p.name for p in root.iterdir()) == sorted(expected)
    # a second run finds it there and downloads nothing
    assert main(argv) == 0
    assert "already in" in capsys.readouterr().err
    assert len(server.ranges) == 1


def test_checksum_mismatch_refused_leaving_only_the_partial_file(server, tmp_path, capsys):
    data = _archive(tmp_path, "ucmerced", "UCMerced_LandUse", subdir="Images")
    server.files["UCMerced_LandUse.zip"] = data
    root = tmp_path / "ucm"
    url = f"{server.url}/UCMerced_LandUse.zip"
    # the preset's pinned MD5 is the real archive's: this one does not match it
    assert main(["download", "ucmerced", "--root", str(root), "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"MD5 {_md5(data)} does not match the expected {PRESETS['ucmerced'].md5}" in err
    assert [p.name for p in root.iterdir()] == ["UCMerced_LandUse.zip.part"]
    assert (root / "UCMerced_LandUse.zip.part").read_bytes() == data
    # a wrong --md5 for a mirror is refused the same way; a malformed one before any download
    assert main(["download", "ucmerced", "--root", str(root), "--url", url, "--md5", "0" * 32]) == 2
    assert [p.name for p in root.iterdir()] == ["UCMerced_LandUse.zip.part"]
    fresh = tmp_path / "fresh"
    assert main(["download", "ucmerced", "--root", str(fresh), "--md5", "xyz"]) == 2
    assert "32 hexadecimal digits" in capsys.readouterr().err and not fresh.exists()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path, capsys):
    data = _archive(tmp_path, "nwpu_resisc45", "NWPU-RESISC45")
    server.files["NWPU-RESISC45.zip"] = data
    server.cut_after = len(data) // 3
    root = tmp_path / "nwpu"
    argv = [
        "download",
        "nwpu_resisc45",
        "--root",
        str(root),
        "--url",
        f"{server.url}/NWPU-RESISC45.zip",
        "--md5",
        _md5(data),
        "--timeout",
        "20",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "run the same command again to resume" in err
    partial = root / "NWPU-RESISC45.zip.part"
    assert partial.stat().st_size == len(data) // 3
    assert main(argv) == 0
    assert f"resuming NWPU-RESISC45.zip.part at {len(data) // 3:,} bytes" in capsys.readouterr().err
    assert server.ranges == [None, f"bytes={len(data) // 3}-"]
    assert not partial.exists() and not (root / "NWPU-RESISC45.zip").exists()
    assert len(scan_config(DataConfig(preset="nwpu_resisc45", root=str(root))).files) == 45


def test_archive_without_the_layout_or_escaping_is_refused(server, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("RSSCN7/aGrass/a001.jpg", b"x")  # one class of seven
    server.files["bad.zip"] = bad.read_bytes()
    root = tmp_path / "rs"
    url = f"{server.url}/bad.zip"
    assert main(["download", "rsscn7", "--root", str(root), "--url", url]) == 2
    assert "6 of 7 class folders are missing" in capsys.readouterr().err
    assert [p.name for p in root.iterdir()] == ["bad.zip"]  # extraction undone, archive kept
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", b"x")
    server.files["evil.zip"] = evil.read_bytes()
    root2 = tmp_path / "rs2"
    assert (
        main(["download", "rsscn7", "--root", str(root2), "--url", f"{server.url}/evil.zip"]) == 2
    )
    assert "outside" in capsys.readouterr().err and not (tmp_path / "outside.txt").exists()


def test_refuses_a_folder_with_other_files_and_unknown_presets(tmp_path, capsys):
    root = tmp_path / "busy"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    assert main(["download", "ucmerced", "--root", str(root), "--url", "http://127.0.0.1:9/x"]) == 2
    assert "already holds other files (notes.txt)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["download", "folder", "--root", str(tmp_path / "x")])
    assert exit_.value.code == 2


def test_presets_cite_their_public_locations():
    for name in ("ucmerced", "nwpu_resisc45", "rsscn7"):
        p = PRESETS[name]
        assert p.source.startswith(("http://", "https://")) and p.url.endswith(".zip")
    assert PRESETS["ucmerced"].md5 == "5b7ec56793786b6dc8a908e8854ac0e4"  # TorchGeo's
    assert PRESETS["nwpu_resisc45"].md5 == "75206b2e16446591afa88e2628744886"  # TorchGeo's
    assert PRESETS["rsscn7"].md5 is None  # none published
