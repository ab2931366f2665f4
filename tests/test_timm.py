"""timm backbones through the one model factory (``model: timm/<name>``), offline."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch

timm = pytest.importorskip("timm")

from trainables import extras, models  # noqa: E402
from trainables.models import (  # noqa: E402
    Classifier,
    WeightsNotFoundError,
    count_parameters,
    create_model,
    imagenet_file,
    main,
)
from tuner.spec import SpecError, validate  # noqa: E402

BN_MODEL = "mobilenetv3_small_050"  # small, with BatchNorm


def _timm_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A timm state dict (ImageNet head included) with seeded, recognisable weights."""
    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.1)
    return net.state_dict()


def _same_backbone(model: Classifier, state: dict[str, torch.Tensor]) -> bool:
    own = model.backbone.state_dict()
    shared = [k for k in own if k in state and not k.endswith("num_batches_tracked")]
    return len(shared) > 0 and all(torch.equal(own[k], state[k]) for k in shared)


def test_scratch_timm_model_gets_the_project_head() -> None:
    model = create_model("timm/convnext_atto", 5, transfer="scratch", image_size=64, head="mlp")
    assert isinstance(model, Classifier) and model.feature_dim == 320
    assert model.head_path == "head.fc"
    out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 5)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)  # log-softmax head


def test_frozen_timm_model_from_a_safetensors_file_keeps_batchnorm(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _timm_state(BN_MODEL, seed=1)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = create_model(f"timm/{BN_MODEL}", 3, transfer="frozen", weights=path, image_size=64)
    assert _same_backbone(model, state)  # pretrained_cfg_overlay(file=...) loaded the file
    total, trainable = count_parameters(model)
    assert trainable == sum(p.numel() for p in model.head.parameters()) < total
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):
        loss = model(torch.randn(4, 3, 64, 64)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included
    assert not model.backbone.training


def test_finetune_timm_model_updates_batchnorm(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(_timm_state(BN_MODEL, seed=2), path)
    model = create_model(f"timm/{BN_MODEL}", 3, transfer="finetune", weights=path, image_size=64)
    stats = [k for k in model.backbone.state_dict() if k.endswith("running_mean")]
    before = model.backbone.state_dict()[stats[0]].clone()
    model.train()
    model(torch.randn(4, 3, 64, 64))
    assert not torch.equal(before, model.backbone.state_dict()[stats[0]])


def test_project_checkpoint_of_a_timm_model_loads(tmp_path: Path) -> None:
    source = create_model(f"timm/{BN_MODEL}", 4, transfer="scratch", image_size=64)
    path = tmp_path / "best.pt"
    torch.save(
        {
            "model": source.state_dict(),
            "model_name": f"timm/{BN_MODEL}",
            "normalization": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        },
        path,
    )
    model = create_model(f"timm/{BN_MODEL}", 7, transfer="finetune", weights=path, image_size=64)
    assert _same_backbone(model, source.backbone.state_dict())
    assert model.normalization == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_imagenet_weights_missing_offline_name_the_path(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))

    def offline(file, **kw):
        raise URLError("no network")

    monkeypatch.setattr(models, "download_imagenet_file", offline)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "timm" / "convnext_atto.d2_in1k"
    file = imagenet_file("timm/convnext_atto", "imagenet")
    assert file.path == expected.with_suffix(".d2_in1k.safetensors")
    assert file.url == (
        "https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/main/model.safetensors"
    )
    with pytest.raises(WeightsNotFoundError) as err:
        create_model("timm/convnext_atto", 3, transfer="frozen", weights="imagenet")
    assert str(file.path) in str(err.value) and file.url in str(err.value)
    assert err.value.path == file.path

    # the file at that path loads offline, with timm's normalisation
    from safetensors.torch import save_file

    state = _timm_state("convnext_atto", seed=3)
    file.path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(file.path))
    model = create_model("timm/convnext_atto", 3, transfer="frozen", weights="imagenet:d2_in1k")
    assert _same_backbone(model, state)
    assert model.normalization == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_params_and_macs_cli_counts_timm_models(capsys) -> None:
    assert main(["timm/convnext_atto", "--classes", "21", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    reference = timm.create_model("convnext_atto", num_classes=21)
    total = sum(p.numel() for p in reference.parameters())
    assert f"{total:,}" in out and "MACs" in out
    assert main(["timm/convnext_atoo"]) == 2
    assert "did you mean 'timm/convnext_atto'" in capsys.readouterr().err


def _spec(model) -> dict:
    return {
        "experiment": "t",
        "trainable": "toy",
        "factors": {"model": model},
        "hyperparameters": {"lr": 0.01},
    }


def test_spec_checks_timm_names_and_names_the_extra(monkeypatch) -> None:
    assert validate(_spec(["timm/convnext_atto", "resnet18"])).params[0].values[0]
    with pytest.raises(SpecError, match=r"^factors\.model\[0\]: unknown timm model.*did you mean"):
        validate(_spec(["timm/convnext_atoo"]))
    with pytest.raises(SpecError, match=r"no pretrained tag 'nope'; its tags: d2_in1k"):
        validate(_spec("timm/convnext_atto.nope"))
    monkeypatch.setattr(extras, "installed", lambda module: module != "timm")
    monkeypatch.setattr("tuner.spec.installed", extras.installed)
    with pytest.raises(SpecError) as err:
        validate(_spec(["resnet18", "timm/convnext_atto"]))
    assert str(err.value).startswith("factors.model[1]: model 'timm/convnext_atto' needs")
    assert 'pip install -e ".[timm]"' in str(err.value)
    # reading a saved spec (report, submit) does not need timm
    assert validate(_spec(["timm/convnext_atto"]), check_data=False)
