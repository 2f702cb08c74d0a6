"""Weights that do not fit a model are summarised everywhere: counts and the first few names, one short
line, never every key (a ResNet-101 has over 300 tensors)."""

import huggingface_hub
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import msrn
from msrn._state_dict import key_mismatch, summarize_names
from msrn.cli import main as cli_main

SMALL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, num_groups=2)
SHORT = 500  # characters


def _save(state: dict, path) -> str:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> str:
    """An msrn_resnet18 state dict: the wrong file for msrn_resnet50."""
    model = timm.create_model("msrn_resnet18", labels="voc2007", **SMALL)
    return _save(model.state_dict(), tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors")


def test_summaries_count_and_name_the_first_few():
    assert summarize_names(["a", "b"]) == "2 tensors (a, b)"
    assert summarize_names([f"k{i}" for i in range(300)], "key") == "300 keys (first: k0, k1, k2)"
    assert summarize_names(["a", "b", "c", "d"], limit=0) == "4 tensors"
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    assert key_mismatch(expected, dict(expected)) == ""
    assert key_mismatch(expected, {**expected, "b": torch.zeros(4)}) == (
        "shape mismatches: 1 tensor (b: file [4], model [3])"
    )
    assert key_mismatch(expected, {"a": torch.zeros(5), "z": torch.zeros(1)}) == (
        "missing from the file: 2 tensors (b, c); not in the model: 1 tensor (z); shape mismatches: 1 tensor"
    )


def test_another_architectures_checkpoint(resnet18_checkpoint):
    with pytest.raises(ValueError) as caught:
        msrn.load_model("msrn_resnet50", checkpoint=resnet18_checkpoint)
    message = str(caught.value)
    assert len(message) < SHORT and "\n" not in message, message
    assert "does not fit the model (msrn_resnet50)" in message
    assert "missing from the file: 198 tensors (first: " in message
    assert "shape mismatches: 30 tensors." in message


def test_the_predict_command_prints_one_short_line(resnet18_checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    argv = ["predict", str(image), "--model", "msrn_resnet50", "--checkpoint", resnet18_checkpoint]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < SHORT + 100, err
    assert "missing from the file: 198 tensors" in err


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_a_backbone_file_of_another_model(offline, tmp_path):
    path = _save(timm.create_model("resnet50").state_dict(), tmp_path / "resnet50.safetensors")
    with pytest.raises(ValueError) as caught:
        timm.create_model("msrn_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=path), **SMALL)
    message = str(caught.value)
    assert len(message) < SHORT + 200 and "does not hold the weights of timm's resnet18" in message
    assert "missing from the file: " not in message  # resnet50 has every name of resnet18
    assert "not in resnet18: 198 tensors (first: " in message


def test_a_backbone_file_with_other_shapes(offline, tmp_path):
    state = timm.create_model("resnet18").state_dict()
    state.update({k: torch.zeros(1) for k in state if k.startswith("layer1.") and k.endswith("weight")})
    path = _save(state, tmp_path / "resnet18.safetensors")
    with pytest.raises(ValueError) as caught:
        timm.create_model("msrn_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=path), **SMALL)
    message = str(caught.value)
    assert len(message) < SHORT and "does not fit backbone 'resnet18" in message, message
    assert "size mismatch for" in message and "more lines)" in message
