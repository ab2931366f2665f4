"""Tests for the model factory: counts, heads, transfer modes and weight loading, offline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from trainables.models import (
    HEADS,
    IMAGENET_NORMALIZATION,
    PROJECT_MODELS,
    SCRATCH_NORMALIZATION,
    Classifier,
    WeightsNotFoundError,
    count_macs,
    count_parameters,
    create_model,
    load_weights_file,
    loss_function,
    main,
    model_stats,
)

# Paper 2, Table 2 ("Params", 21 UC-Merced classes), as exact integers.
PAPER2_PARAMS = {
    "resnet18": (11_187_285, "11.1873M"),
    "shufflenet_v2_x1_0": (1_275_129, "1.2751M"),
    "vgg16": (134_346_581, "134.3466M"),
    "alexnet": (57_089_877, "57.0899M"),
    "mobilenet_v2": (2_250_773, "2.2508M"),
}

# The eight backbones of the two papers: where the ImageNet head lives and its width D.
PAPER_HEADS = {
    "resnet50": ("fc", 2048),
    "resnet18": ("fc", 512),
    "mobilenet_v2": ("classifier.1", 1280),
    "vgg16": ("classifier.6", 4096),
    "alexnet": ("classifier.6", 4096),
    "googlenet": ("fc", 1024),
    "densenet121": ("classifier", 1024),
    "shufflenet_v2_x1_0": ("fc", 1024),
}


@pytest.fixture(scope="module")
def scratch21() -> Iterator[Callable[[str], Classifier]]:
    """Random 21-class models by name, built once and shared by the read-only tests."""
    cache: dict[str, Classifier] = {}

    def get(name: str) -> Classifier:
        if name not in cache:
            cache[name] = create_model(name, 21, transfer="scratch", image_size=64)
        return cache[name]

    yield get
    cache.clear()  # vgg16 and alexnet hold ~0.8 GB


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny CPU workloads run faster single-threaded, above all on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download weights fails at once, as on a machine without internet."""

    def refuse(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise URLError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def backbone_snapshot(model: Classifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def assert_backbone_equals(model: Classifier, state: dict[str, torch.Tensor], skip: str) -> None:
    loaded = model.backbone.state_dict()
    expected = {k: v for k, v in state.items() if not k.startswith(skip)}
    assert set(loaded) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key


@pytest.mark.parametrize("name", sorted(PAPER2_PARAMS))
def test_parameter_counts_match_paper2_table2(name: str, scratch21) -> None:
    exact, rounded = PAPER2_PARAMS[name]
    total, trainable = count_parameters(scratch21(name))
    assert total == trainable == exact
    assert f"{total / 1e6:.4f}M" == rounded


def test_model_stats_counts_frozen_head_only_without_weights(scratch21) -> None:
    stats = model_stats("resnet18", 21, image_size=64)
    assert stats.total == 11_187_285
    assert stats.trainable == {
        "scratch": 11_187_285,
        "frozen": 512 * 21 + 21,
        "finetune": 11_187_285,
    }
    assert stats.macs == count_macs(scratch21("resnet18"), 64)


@pytest.mark.parametrize("name", sorted(PAPER_HEADS))
def test_head_replaced_for_the_papers_models(name: str, scratch21) -> None:
    model = scratch21(name)
    head_path, dim = PAPER_HEADS[name]
    assert (model.head_path, model.feature_dim) == (head_path, dim)
    assert isinstance(model.backbone.get_submodule(head_path), nn.Identity)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 21)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(2), atol=1e-5)  # log-probabilities


def test_googlenet_returns_a_tensor_in_train_mode(scratch21) -> None:
    model = scratch21("googlenet").train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 21)
    assert count_macs(model, 64) > 0 and model.training


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("squeezenet1_1", 64),
        ("inception_v3", 96),
        ("efficientnet_b0", 64),
        ("mobilenet_v3_small", 64),
        ("convnext_tiny", 64),
        ("swin_t", 64),
        ("vit_b_16", 32),
        ("maxvit_t", 224),
    ],
)
def test_head_found_across_families(name: str, size: int) -> None:
    with torch.device("meta"):
        model = create_model(name, 5, transfer="scratch", image_size=size)
    features = model.backbone(torch.zeros(2, 3, size, size, device="meta"))
    assert features.shape == (2, model.feature_dim)
    assert model.train()(torch.zeros(2, 3, size, size, device="meta")).shape == (2, 5)


def test_count_macs_of_pixels_svm_and_restores_modes() -> None:
    model = create_model("pixels", 3, head="svm", transfer="scratch", image_size=8)
    model.train()
    assert count_macs(model, 8) == 3 * 8 * 8 * 3
    assert all(m.training for m in model.modules())


def _train_steps(model: Classifier, size: int, steps: int = 2) -> None:
    model.train()
    optimizer = torch.optim.Adam(model.param_groups(lr=1e-2))
    loss_fn = loss_function(model.head_type)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(2, 3, size, size, generator=generator)
        y = torch.tensor([0, 2])
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()


def _pretrained_file(name: str, tmp_path: Path) -> Path:
    """A weights file for ``name``: a torchvision state_dict, or a Classifier one."""
    if name not in PROJECT_MODELS:
        state = torchvision.models.get_model(name, weights=None).state_dict()
    else:
        state = create_model(name, 7, transfer="scratch").state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name", ["resnet18", "tiny_cnn"])
def test_frozen_keeps_backbone_and_batchnorm_stats(name: str, tmp_path: Path) -> None:
    model = create_model(name, 3, transfer="frozen", weights=_pretrained_file(name, tmp_path))
    before = backbone_snapshot(model)
    head_before = model.head[0].weight.detach().clone()
    _train_steps(model, size=32)
    assert model.training and not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert any("running_mean" in k for k in before)
    for key, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    assert not torch.equal(model.head[0].weight, head_before)


@pytest.mark.parametrize("name", ["resnet18", "tiny_cnn"])
def test_finetune_changes_backbone_and_batchnorm_stats(name: str, tmp_path: Path) -> None:
    model = create_model(name, 3, transfer="finetune", weights=_pretrained_file(name, tmp_path))
    before = backbone_snapshot(model)
    _train_steps(model, size=32)
    after = model.backbone.state_dict()
    params = {k for k, _ in model.backbone.named_parameters()}
    assert all(not torch.equal(after[k], before[k]) for k in params)
    for suffix in ("running_mean", "running_var", "num_batches_tracked"):
        assert all(not torch.equal(after[k], before[k]) for k in after if k.endswith(suffix))


def test_imagenet_weights_load_from_hub_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    member = torchvision.models.ShuffleNet_V2_X0_5_Weights.DEFAULT
    file_name = Path(member.url).name
    assert file_name == "shufflenetv2_x0.5-f707e7126e.pth"
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = torchvision.models.shufflenet_v2_x0_5(weights=None).state_dict()
    torch.save(state, cache / file_name)

    for weights in ("imagenet", "imagenet:IMAGENET1K_V1"):
        model = create_model("shufflenet_v2_x0_5", 5, transfer="frozen", weights=weights)
        assert_backbone_equals(model, state, skip="fc.")
        assert model.normalization == IMAGENET_NORMALIZATION
        assert model.head[0].weight.shape == (5, 1024)
    with pytest.raises(ValueError, match="did you mean 'IMAGENET1K_V1'"):
        create_model("shufflenet_v2_x0_5", 5, weights="imagenet:IMAGENET1K_V9")


def test_imagenet_weights_missing_offline(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "shufflenetv2_x0.5-f707e7126e.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        create_model("shufflenet_v2_x0_5", 5, transfer="finetune", weights="imagenet")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(expected) in message and "TORCH_HOME" in message
    assert "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth" in message
    assert info.value.path == expected and not expected.exists()


def test_plain_torchvision_state_dict_loads_and_skips_imagenet_head(tmp_path: Path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    model = create_model("resnet18", 4, transfer="finetune", weights=str(tmp_path / "r18.pth"))
    assert_backbone_equals(model, state, skip="fc.")
    assert model.normalization == IMAGENET_NORMALIZATION


def test_a_weights_file_backbone_is_not_randomly_initialised_first(tmp_path: Path) -> None:
    """The file replaces every backbone tensor, so the backbone is built without its random
    init: the head draws from the seed as if no backbone had been built, and a
    ``num_batches_tracked`` the file lacks is zero, not uninitialised memory."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "r18.pth")
    torch.manual_seed(7)
    model = create_model("resnet18", 4, transfer="frozen", weights=tmp_path / "r18.pth")
    torch.manual_seed(7)
    alone = nn.Linear(512, 4)
    assert torch.equal(model.head[0].weight, alone.weight)
    assert torch.equal(model.head[0].bias, alone.bias)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    tracked = {k: v for k, v in loaded.items() if "num_batches" in k}
    assert tracked and all(int(v) == 0 for v in tracked.values())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_a_builder_that_needs_real_tensors_still_loads_its_file(tmp_path: Path) -> None:
    """RegNet's builder computes its widths with tensors, which the meta device cannot."""
    state = torchvision.models.regnet_x_400mf(weights=None).state_dict()
    torch.save(state, tmp_path / "regnet.pth")
    model = create_model("regnet_x_400mf", 3, transfer="finetune", weights=tmp_path / "regnet.pth")
    assert_backbone_equals(model, state, skip="fc.")


def test_googlenet_file_with_aux_classifiers_loads(tmp_path: Path) -> None:
    source = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    torch.save(source.state_dict(), tmp_path / "g.pth")
    model = create_model("googlenet", 3, transfer="frozen", weights=tmp_path / "g.pth")
    assert model.backbone.aux1 is None and not model.backbone.transform_input
    assert model.normalization == SCRATCH_NORMALIZATION  # same input as transform_input=True


def test_classifier_state_dict_and_checkpoint_load_with_other_class_count(tmp_path: Path) -> None:
    source = create_model("tiny_cnn", 3, transfer="scratch")
    state = source.state_dict()
    torch.save(state, tmp_path / "plain.pt")
    norm = ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    checkpoint = {"model": state, "normalization": [list(norm[0]), list(norm[1])]}
    torch.save({**checkpoint, "model_name": "tiny_cnn"}, tmp_path / "ckpt.ckpt")

    model = create_model("tiny_cnn", 5, transfer="finetune", weights=tmp_path / "plain.pt")
    assert_backbone_equals(model, source.backbone.state_dict(), skip="-")
    assert model.head[0].weight.shape == (5, 128)
    assert model.normalization == SCRATCH_NORMALIZATION

    model = create_model("tiny_cnn", 5, transfer="frozen", weights=str(tmp_path / "ckpt.ckpt"))
    assert_backbone_equals(model, source.backbone.state_dict(), skip="-")
    assert model.normalization == norm


def test_bad_checkpoints_are_refused_with_the_key(tmp_path: Path) -> None:
    state = create_model("tiny_cnn", 3, transfer="scratch").state_dict()
    model = create_model("tiny_cnn", 3, transfer="scratch")

    torch.save({**state, "backbone.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(
        ValueError, match=r"0\.weight: file \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)"
    ):
        load_weights_file(model, tmp_path / "shape.pt")

    torch.save({k: v for k, v in state.items() if k != "backbone.3.weight"}, tmp_path / "miss.pt")
    with pytest.raises(ValueError, match=r"1 missing key\(s\): 3\.weight \(32, 16, 3, 3\)"):
        load_weights_file(model, tmp_path / "miss.pt")

    torch.save({"model": state, "model_name": "resnet18"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="checkpoint of model 'resnet18'.*'tiny_cnn'"):
        load_weights_file(model, tmp_path / "other.pt")

    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_model("tiny_cnn", 3, transfer="finetune", weights=str(tmp_path / "nowhere.pth"))


def test_loss_function_matches_head() -> None:
    assert isinstance(loss_function("linear"), nn.NLLLoss)
    assert isinstance(loss_function("mlp"), nn.NLLLoss)
    assert isinstance(loss_function("svm"), nn.MultiMarginLoss)
    with pytest.raises(ValueError, match="unknown head 'smv'; did you mean 'svm'"):
        loss_function("smv")


def test_param_groups_scale_backbone_lr(tmp_path: Path) -> None:
    model = create_model("tiny_cnn", 3, head="mlp", transfer="scratch")
    groups = model.param_groups(lr=0.1, backbone_lr_mult=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("backbone", pytest.approx(0.01)),
        ("head", 0.1),
    ]
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)[1]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.01), 0.1]

    frozen = create_model(
        "tiny_cnn", 3, transfer="frozen", weights=_pretrained_file("tiny_cnn", tmp_path)
    )
    assert [g["name"] for g in frozen.param_groups(lr=0.1)] == ["head"]
    with pytest.raises(ValueError, match="backbone_lr_mult must be >= 0, got backbone_lr_mult=-1"):
        model.param_groups(lr=0.1, backbone_lr_mult=-1)


@pytest.mark.parametrize("head", HEADS)
def test_pixels_baseline(head: str) -> None:
    model = create_model("pixels", 4, head=head, transfer="scratch", image_size=8)
    out = model(torch.rand(2, 3, 8, 8))
    assert model.feature_dim == 192 and out.shape == (2, 4)
    loss = loss_function(head)(out, torch.tensor([0, 3]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert model.normalization == SCRATCH_NORMALIZATION


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet18", "transfer": "scratch", "weights": "imagenet"}, "takes no weights"),
        ({"name": "resnet18", "transfer": "frozen"}, "starts from pretrained weights"),
        ({"name": "resnet18", "transfer": "finetune", "weights": "none"}, "weights='none'"),
        ({"name": "resnet18", "head": "lnear"}, "unknown head 'lnear'; did you mean 'linear'"),
        ({"name": "resnet5"}, "unknown model 'resnet5'; did you mean 'resnet50'"),
        ({"name": "resnet18", "transfer": "frozn"}, "did you mean 'frozen'"),
        ({"name": "pixels", "transfer": "frozen", "weights": "x.pt"}, "must be 'scratch'"),
        ({"name": "tiny_cnn", "weights": "imagenet"}, "without ImageNet weights"),
        ({"name": "resnet18", "weights": "imagenett"}, "got 'imagenett'"),
        ({"name": "resnet18", "transfer": "scratch", "num_classes": 1}, "num_classes=1"),
    ],
)
def test_invalid_combinations_raise_clearly(kwargs: dict, message: str) -> None:
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        create_model(kwargs.pop("name"), kwargs.pop("num_classes"), **kwargs)


def test_cli_prints_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--classes", "21", "--image-size", "64", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "alexnet: 21 classes, linear head, 64x64 input" in out
    assert "57.0899M" in out and "57,089,877" in out and "86,037 (head only)" in out
    assert "MACs" in out


def test_cli_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resnet5"]) == 2
    assert "unknown model 'resnet5'; did you mean 'resnet50'" in capsys.readouterr().err
