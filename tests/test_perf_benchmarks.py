"""The performance benchmarks of issue 11 run end to end in a smoke form (figures unchecked)."""

from __future__ import annotations

import random
import re
import runpy
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str) -> dict:
    return runpy.run_path(str(BENCHMARKS / f"{name}.py"), run_name=f"benchmarks_{name}")


def test_frozen_search_smoke_prints_the_speed_up(capsys):
    assert _script("frozen_search")["main"](["--smoke", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"speed-up: \d+\.\dx \(whole search wall time", out)
    assert re.search(r"best test acc store \d\.\d{4} vs off \d\.\d{4}", out)
    # without augmentation both searches train the same heads on the same features
    assert re.search(r"identical test accuracy in every trial of augmentation 'none'", out)


def test_frozen_search_counts_backbone_passes():
    passes = _script("frozen_search")["backbone_passes"]
    counts = {"train": 100, "val": 10, "test": 20}
    assert passes(counts, 10, "store", 16) == 130 + (10 * 100 + 30)
    assert passes(counts, 10, "off", 16) == 8 * (130 + 10 * 110 + 20)
    assert passes(counts, 10, "off-views", 16) == 8 * (130 + 10 * 100 + 30)
    cells = _script("frozen_search")["cells"]()
    assert len(cells) == 16 and len({tuple(sorted(c.items())) for c in cells}) == 16


def test_frozen_search_needs_weights_outside_smoke(capsys):
    with pytest.raises(SystemExit):
        _script("frozen_search")["main"]([])
    assert "--weights" in capsys.readouterr().err


def test_gpu_benchmark_without_cuda_prints_one_line(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _script("gpu")["main"]([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "no CUDA device" in out[0]


def test_gpu_benchmark_smoke_prints_every_figure(capsys):
    assert _script("gpu")["main"](["--smoke"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"P5 fine-tune .* ratio \d+\.\d\d", out)
    for k in (1, 2):
        assert re.search(rf"P6 tiny_cnn .* {k} packed .* aggregate [\d,]+ img/s", out)


def test_packed_trials_out_of_memory_are_retried_with_fewer_neighbours():
    run_packed = _script("gpu")["run_packed"]
    calls = []

    def runner(shares):
        calls.append(shares)
        return [
            {"images_per_s": 1.0, "peak_bytes": 1}
            if share >= 0.5 or i == 0
            else RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
            for i, share in enumerate(shares)
        ]

    packed = run_packed(4, runner)
    assert calls == [[0.25] * 4, [0.5] * 3]
    assert len(packed.results) == 4 and packed.retried == {0.5: 3}

    def broken(shares):
        return [ValueError("shape mismatch") for _ in shares]

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_packed(2, broken)

    def always_oom(shares):
        return [RuntimeError("CUDA out of memory.") for _ in shares]

    with pytest.raises(RuntimeError, match="whole GPU"):
        run_packed(2, always_oom)


def _curves(bench: dict, best_cell: int, epochs: int = 4) -> list:
    """48 flat curves at 0.5; ``best_cell``'s climbs to 0.9 at its last epoch."""
    out = []
    for i, cell in enumerate(bench["cells"]()):
        acc = [0.5] * epochs
        if i == best_cell:
            acc = [0.5 + 0.4 * e / (epochs - 1) for e in range(epochs)]
        out.append(bench["Curve"](cell, acc, [0.5] * epochs))
    return out


def test_search_efficiency_costs_count_epochs_to_the_target():
    bench = _script("search_efficiency")
    curves = _curves(bench, best_cell=7)
    order = list(range(48))
    random.Random(1).shuffle(order)
    # the grid pays every epoch of the cells before the best one, then 4 epochs of it
    assert bench["grid_cost"](curves, 0.9, 1) == (
        4 * order.index(7) + 4,
        2.0 * (order.index(7) + 1),
        True,
    )
    assert bench["grid_cost"](curves, 0.95, 1) == (192, 96.0, False)
    assert bench["at_target"](curves, 0.8) == [(curves[7].cell, 4)]
    epochs, seconds, reached = bench["tpe_asha_cost"](curves, 0.95, 0, 1, 3)
    assert (epochs, reached) == (192, False) and seconds == 96.0  # never: the whole budget


def test_search_efficiency_replays_saved_curves_to_the_same_figures(tmp_path, capsys):
    bench = _script("search_efficiency")
    saved = tmp_path / "curves.json"
    assert (
        bench["main"](["--smoke", "--threads", "1", "--epochs", "2", "--save-curves", str(saved)])
        == 0
    )
    trained = capsys.readouterr().out
    assert re.search(r"^epochs ratio: \d+\.\d\d \(TPE \+ ASHA over grid", trained, re.M), trained
    assert re.search(r"^cells at the target: \d+ of 48", trained, re.M), trained
    assert bench["main"](["--curves", str(saved)]) == 0
    assert capsys.readouterr().out == trained  # deterministic: the same costs from the file
