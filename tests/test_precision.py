"""Arithmetic and memory layout of a trial's forward passes (``TrialConfig.precision``)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.fixtures import synthetic_data
from trainables import arithmetic
from trainables.arithmetic import uses_bf16
from trainables.classify import Trial
from trainables.config import DataConfig, TrialConfig
from trainables.models import create_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> DataConfig:
    root = tmp_path_factory.mktemp("synthetic")
    return synthetic_data(root, ["farmland", "water", "forest"], per_class=12)


@pytest.mark.parametrize(
    ("precision", "device", "amx", "expected"),
    [
        ("fp32", CUDA, True, False),
        ("bf16", CPU, False, True),
        ("auto", CUDA, False, True),
        ("auto", CPU, True, True),
        ("auto", CPU, False, False),
    ],
)
def test_precision_resolves_per_device(monkeypatch, precision, device, amx, expected):
    monkeypatch.setattr(arithmetic, "cpu_has_bf16_units", lambda: amx)
    assert uses_bf16(precision, device) is expected


def test_unknown_precision_is_refused_with_the_choices(data_cfg):
    with pytest.raises(ValidationError, match="'auto', 'fp32' or 'bf16'"):
        TrialConfig(data=data_cfg, model="tiny_cnn", transfer="scratch", precision="fp16")


def test_cpu_feature_probe_answers_a_bool():
    assert isinstance(arithmetic.cpu_has_bf16_units(), bool)


def _first_conv_input(trial: Trial) -> tuple[torch.Tensor, torch.dtype]:
    """The input of the model's first convolution, and the dtype that convolution computes in."""
    seen: dict = {}
    conv = next(m for m in trial.model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(
        lambda mod, inp, out: seen.update(x=inp[0], dtype=out.dtype)
    )
    try:
        trial._run_epoch()
    finally:
        handle.remove()
    return seen["x"], seen["dtype"]


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)]
)
def test_forward_passes_run_in_the_configured_precision(data_cfg, precision, dtype):
    cfg = TrialConfig(
        data=data_cfg,
        model="tiny_cnn",
        transfer="scratch",
        augmentation="aerial",
        epochs=1,
        batch_size=8,
        max_batches=1,
        num_threads=1,
        precision=precision,
    )
    trial = Trial(cfg, log=lambda _: None)
    x, computed = _first_conv_input(trial)
    assert computed == dtype
    # The cache hands out channels-last uint8 batches: bf16 keeps that layout (the model is
    # converted to match), float32 on the CPU gets plain NCHW.
    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    assert x.is_contiguous(memory_format=layout) and x.dtype == torch.float32
    conv = next(m for m in trial.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=layout)
    assert all(p.dtype == torch.float32 for p in trial.model.parameters())


@pytest.mark.parametrize(
    ("transfer", "layout"), [("frozen", "channels_last"), ("finetune", "nchw")]
)
def test_float32_cpu_layout_follows_whether_convolutions_train(
    data_cfg, tmp_path, transfer, layout
):
    """A frozen backbone only runs gradient-free forward passes, faster channels-last on the
    CPU; a trial that trains its convolutions gets NCHW (see :mod:`trainables.arithmetic`).
    The layout is part of the feature-store key (the sums run in another order)."""
    weights = tmp_path / "tiny.pt"
    torch.save(create_model("tiny_cnn", 3, transfer="scratch").state_dict(), weights)
    cfg = TrialConfig(
        data=data_cfg,
        model="tiny_cnn",
        transfer=transfer,
        weights=str(weights),
        augmentation="aerial",
        feature_views=0,  # a frozen trial runs its backbone every epoch: the hook sees it
        epochs=1,
        batch_size=8,
        max_batches=1,
        num_threads=1,
        precision="fp32",
    )
    trial = Trial(cfg, log=lambda _: None)
    x, computed = _first_conv_input(trial)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert computed == torch.float32 and x.is_contiguous(memory_format=fmt)
    conv = next(m for m in trial.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=fmt)
    assert trial.arithmetic.layout_name == layout
    if transfer == "frozen":
        assert f" fp32 {layout} " in trial._frozen_features().key["preprocessing"]
