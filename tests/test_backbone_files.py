"""Backbone ImageNet weights from a local file, offline, the timm way:
``pretrained_cfg_overlay=dict(file=PATH)`` (or in ``backbone_kwargs``) and ``--backbone-weights``."""

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from msrn.cli.train import build_parser as build_train_parser
from msrn.engine.builders import _create_model
from msrn.engine.config import TrainConfig

TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, num_groups=2)


class NotATensor:
    """A Python object that a weights-only load must refuse to rebuild."""


@pytest.fixture
def offline(monkeypatch):
    """Offline, and any Hub download fails the test: the weights must come from the file."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_hub(*args, **kwargs):
        raise AssertionError("the Hugging Face Hub was asked for a file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_hub, raising=False)


def imagenet_weights(name: str, **kwargs) -> dict:
    """A timm model's full state dict (classifier included), with random values that a skipped
    tensor would show."""
    state = timm.create_model(name, pretrained=False, **kwargs).state_dict()
    return {k: (torch.randn_like(v) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def assert_trunk_holds(model, weights: dict):
    trunk = model.backbone.trunk.state_dict()
    assert set(trunk) == {k for k in weights if not k.startswith("fc.")}
    for key, value in trunk.items():
        assert torch.equal(value, weights[key]), key


def test_pretrained_cfg_overlay_file_loads_the_backbone_offline(offline, tmp_path):
    weights = imagenet_weights("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file(weights, str(path))
    model = timm.create_model(
        "msrn_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3, **TINY
    )
    assert_trunk_holds(model, weights)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    # The same file given to the backbone itself, as timm takes it.
    same = timm.create_model(
        "msrn_resnet18",
        pretrained=True,
        num_classes=3,
        backbone_kwargs=dict(pretrained_cfg_overlay=dict(file=str(path))),
        **TINY,
    )
    assert_trunk_holds(same, weights)


def test_pth_files_are_read_as_weights_only(offline, tmp_path):
    weights = imagenet_weights("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": weights, "epoch": 90}, path)  # a training checkpoint nests the weights
    model = timm.create_model(
        "msrn_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3, **TINY
    )
    assert_trunk_holds(model, weights)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": weights, "extra": NotATensor()}, unsafe)
    with pytest.raises(ValueError, match="cannot be read as weights only"):
        timm.create_model(
            "msrn_resnet18",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(unsafe)),
            num_classes=3,
            **TINY,
        )


def test_transformer_weights_are_adapted_by_timm(offline, tmp_path):
    # ViT weights for 224 px into a trunk built for 64 px: timm resamples the position embeddings.
    weights = imagenet_weights("vit_tiny_patch16_224")
    path = tmp_path / "vit.safetensors"
    save_file(weights, str(path))
    model = timm.create_model(
        "msrn_custom",
        backbone="vit_tiny_patch16_224",
        pretrained=True,
        num_classes=2,
        backbone_kwargs=dict(img_size=64),
        pretrained_cfg_overlay=dict(file=str(path)),
        **TINY,
    )
    trunk = model.backbone.trunk.state_dict()
    assert torch.equal(trunk["model.blocks.0.attn.qkv.weight"], weights["blocks.0.attn.qkv.weight"])
    assert trunk["model.pos_embed"].shape[1] == 1 + 4 * 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("resnet34", "does not hold the weights of timm's resnet18"),
        ("msrn", "holds a whole MSRN"),
        ("missing", "does not exist"),
        ("text", "must be .safetensors"),
    ],
)
def test_wrong_backbone_files_are_clear_errors(offline, tmp_path, content, message):
    path = tmp_path / "weights.safetensors"
    if content == "resnet34":
        save_file(imagenet_weights("resnet34"), str(path))
    elif content == "msrn":
        state = timm.create_model("msrn_resnet18", num_classes=3, **TINY).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif content == "text":
        path = tmp_path / "weights.txt"
        path.write_text("not weights")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        timm.create_model(
            "msrn_resnet18",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            num_classes=3,
            **TINY,
        )


def test_trainer_backbone_weights_option(offline, tmp_path):
    weights = imagenet_weights("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file(weights, str(path))
    config = TrainConfig(model="msrn_resnet18", backbone_weights=str(path))
    model_config = {"kwargs": dict(num_classes=3, **TINY)}
    assert_trunk_holds(_create_model(config, model_config, None, None), weights)
    with pytest.raises(ValueError, match="drop --no-pretrained"):
        _create_model(
            TrainConfig(model="msrn_resnet18", backbone_weights=str(path), pretrained=False),
            model_config,
            None,
            None,
        )
    args = build_train_parser().parse_args(["--backbone-weights", str(path)])
    assert args.backbone_weights == str(path)
