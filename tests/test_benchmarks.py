"""The benchmark scripts run end to end on tiny generated data; their figures are checked
for consistency (same images, ratios of the printed rates), not for speed."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest

from tests.fixtures import make_presplit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> dict:
    return runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name=f"benchmarks_{name}")


@pytest.fixture(scope="module")
def presplit(tmp_path_factory) -> Path:
    """3 classes × (8 train + 2 test) JPEGs in a pre-split tree."""
    return make_presplit(tmp_path_factory.mktemp("bench"), train_per_class=8, test_per_class=2)


def test_pooled_links_every_image_of_a_presplit_tree(presplit, tmp_path):
    pooled = _script("frozen")["pooled"]
    out = pooled(presplit, tmp_path / "pooled")
    links = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert len(links) == 30
    assert "beach/train_beach_0.jpg" in links and "beach/test_beach_8.jpg" in links
    assert all((out / link).resolve().is_file() for link in links)
    plain = tmp_path / "plain"
    (plain / "beach").mkdir(parents=True)
    assert pooled(plain, tmp_path / "unused") == plain


@pytest.mark.parametrize(
    ("extra", "counts", "bound"),
    [([], (24, 3, 3), (2 * 27 + 3) / 30), (["--keep-presplit"], (21, 3, 6), (2 * 24 + 6) / 30)],
)
def test_frozen_benchmark_states_split_and_bound(presplit, capsys, extra, counts, bound):
    argv = ["--root", str(presplit), "--image-size", "32", "--epochs", "2", "--batch-size", "8"]
    assert _script("frozen")["main"]([*argv, "--threads", "1", *extra]) == 0
    out = capsys.readouterr().out
    train, val, test = counts
    assert f"train {train} / val {val} / test {test} images; bound {bound:.2f}x" in out
    once, every = re.search(r"test acc (\S+) / (\S+)", out).groups()
    assert once == every  # both ways train the same head on the same features
    assert re.search(r"speed-up: \d+\.\d\dx \(median of 1; bound", out)


def test_loader_benchmark_times_the_same_images_both_ways(presplit, capsys):
    """Both pipelines serve the tree's 24 training images; the speed-up is their rates' ratio."""
    argv = ["--root", str(presplit), "--size", "32", "--workers", "0", "--epochs", "1"]
    assert _script("loader")["main"]([*argv, "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "(24 images)" in out and re.search(r"speed-up: \d+\.\dx", out)
    base, base_n = re.search(
        r"ImageFolder \+ DataLoader:\s+(\d+) images/s \((\d+) images", out
    ).groups()
    ours, ours_n = re.search(
        r"\(built once in [\d.]+ s\):\s+(\d+) images/s \((\d+) images", out
    ).groups()
    assert base_n == ours_n == "24"  # the same files, not the whole pre-split tree
    assert float(base) > 0 and float(ours) > 0
    speed = float(re.search(r"speed-up: (\d+\.\d)x", out).group(1))
    assert speed == pytest.approx(float(ours) / float(base), rel=0.02, abs=0.06)


@pytest.mark.slow
def test_peer_benchmark_runs_both_searches_on_one_split(presplit, tmp_path, capsys):
    """Both searches finish on the same manifest; the script prints every figure."""
    argv = ["--root", str(presplit), "--image-size", "32", "--quick", "--work", str(tmp_path)]
    assert _script("peer")["main"](argv) == 0
    out = capsys.readouterr().out
    assert "split (tuner's manifest, read by both): train 21 / val 3 / test 6" in out
    assert re.search(r"^tuner: wall .* 2 trials .* test \d\.\d{4}$", out, re.M), out
    assert re.search(r"^peer : wall .* 2 trials .* test \d\.\d{4}$", out, re.M), out
    assert re.search(r"^wall ratio: \d+\.\d\dx$", out, re.M)
    assert re.search(r"binomial standard error \d+\.\d\d points", out)
    peer = json.loads((tmp_path / "peer.json").read_text())
    assert peer["n_test"] == 6 and peer["trials"] == 2
