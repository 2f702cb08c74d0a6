"""Broken model folders and Hub repositories: every failure names the file and what was wrong.

``timm.create_model("local-dir:DIR")`` parses DIR/config.json itself before any msrn code runs, so a
config.json that is not a JSON object is reported by timm; ``msrn.create_model``, ``msrn.load_model``
and the commands check the file first. The test marked "guard" held before issue 12 and must keep holding.
"""

import hashlib
import os
import pathlib
import re

import huggingface_hub
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import msrn
from msrn import save_pretrained
from msrn.cli import main

TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)
NAMES = ["cat", "dog", "person"]


def _tiny(**kwargs) -> torch.nn.Module:
    args = dict(backbone="test_resnet", num_classes=3, label_names=NAMES, **TINY)
    args.update(kwargs)
    return timm.create_model("msrn_custom", **args).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("saved") / "model"
    torch.manual_seed(0)
    save_pretrained(_tiny(), folder)
    return folder


def _copy(saved: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((saved / name).read_bytes())
    return folder


def _edit_weights(folder: pathlib.Path, edit) -> pathlib.Path:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    tensors = edit(tensors) or tensors
    save_file(tensors, str(path))
    return path


# --------------------------------------------------------------------- through timm.create_model
def _without_label_graph(tensors):
    del tensors["label_graph"]


def _other_architecture(tensors):
    return {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}


def _nan(tensors):
    tensors["head.fc1.weight"][0, 0] = float("nan")


def _inf(tensors):
    trunk = next(k for k, v in tensors.items() if k.startswith("backbone.trunk") and v.is_floating_point())
    tensors[trunk].view(-1)[0] = float("inf")


WEIGHT_CASES = {
    "no label_graph": (_without_label_graph, r"model\.safetensors lacks the MSRN tensor\(s\) label_graph"),
    "another architecture": (
        _other_architecture,
        r"model\.safetensors is not an MSRN state dict: .* \d+ tensors \(first: ",
    ),
    "NaN weights": (_nan, r"safetensors holds NaN or infinite values in 1 tensor \(head\.fc1\.weight\)"),
    "infinite weights": (_inf, r"safetensors holds NaN or infinite values in 1 tensor \(backbone\.trunk"),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_bad_weights_through_timm_name_the_file(saved, tmp_path, case):
    edit, message = WEIGHT_CASES[case]
    folder = _copy(saved, tmp_path)
    path = _edit_weights(folder, edit)
    with pytest.raises(ValueError, match=message) as caught:
        timm.create_model(f"local-dir:{folder}")
    assert str(path) in str(caught.value)


def test_weights_of_another_msrn_are_summarised(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    bigger = _tiny(embed_dim=24, num_branches=2)  # another width and branch count: most tensors differ
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError) as caught:
        timm.create_model(f"local-dir:{folder}")
    message = str(caught.value)
    assert "do not fit the model built from" in message and str(folder / "config.json") in message
    assert re.search(r"missing from the file: \d+ tensors? \(", message)
    assert re.search(r"shape mismatches: \d+ tensors\.", message)  # only counted: names differ too
    assert len(message) < 700  # counts and the first few keys, not every key


def test_weights_file_that_is_a_folder(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'model.safetensors'))} is a folder"):
        timm.create_model(f"local-dir:{folder}")


def test_truncated_and_pickled_weights(saved, tmp_path):
    """Guard: truncated safetensors and pickles still give clear errors, and nothing is unpickled."""
    folder = _copy(saved, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        timm.create_model(f"local-dir:{folder}")
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin not read"):
        timm.create_model(f"local-dir:{folder}")


# ------------------------------------------------------------- config.json, checked by msrn first
@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: path.mkdir(), r"config\.json is a folder, not a JSON file"),
        (lambda path: path.write_text("{not json"), r"config\.json is not valid JSON"),
        (lambda path: path.write_text("[1, 2]"), r"config\.json must hold a JSON object"),
        (lambda path: path.write_bytes(b'{"a": "\xe9"}'), r"config\.json is not valid JSON .*utf-8"),
    ],
)
def test_bad_config_names_the_file(saved, tmp_path, capsys, write, message):
    folder = _copy(saved, tmp_path)
    (folder / "config.json").unlink()
    write(folder / "config.json")
    for load in (msrn.create_model, msrn.load_model):
        with pytest.raises(ValueError, match=message):
            load(f"local-dir:{folder}")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    code = main(["predict", str(tmp_path / "a.jpg"), "--model", f"local-dir:{folder}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err)


# ------------------------------------------------------------------------------------- hf-hub:
def _add_hub_repo(cache: pathlib.Path, repo_id: str, files: dict) -> None:
    """``files`` as the main revision of ``repo_id`` in a Hugging Face cache (its on-disk layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch) -> pathlib.Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="the HF cache layout needs symlinks")
def test_hub_repository_with_bad_weights(saved, tmp_path, offline_cache):
    folder = _copy(saved, tmp_path)
    _edit_weights(folder, _nan)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    _add_hub_repo(offline_cache, "someone/nan-msrn", files)
    with pytest.raises(ValueError, match=r"snapshots/.*model\.safetensors holds NaN .*head\.fc1\.weight"):
        timm.create_model("hf-hub:someone/nan-msrn")
    folder = _copy(saved, tmp_path / "second")
    _edit_weights(folder, _without_label_graph)
    _add_hub_repo(offline_cache, "someone/no-graph", {p.name: p.read_bytes() for p in folder.iterdir()})
    with pytest.raises(ValueError, match=r"snapshots/.*safetensors lacks the MSRN tensor\(s\) label_graph"):
        msrn.create_model("hf-hub:someone/no-graph")


# ------------------------------------------------------------------- label names in pretrained_cfg
def test_label_names_in_pretrained_cfg(saved, tmp_path):
    unnamed = timm.create_model("msrn_custom", backbone="test_resnet", num_classes=2, **TINY)
    assert unnamed.pretrained_cfg["label_names"] == ["label_0", "label_1"]
    named = timm.create_model(f"local-dir:{saved}")
    assert named.pretrained_cfg["label_names"] == NAMES
    named.reset_classifier(4)
    assert named.pretrained_cfg["label_names"] == [f"label_{i}" for i in range(4)]
    assert named.pretrained_cfg["num_classes"] == 4
    named.reset_classifier(2, label_names=["sky", "sea"])
    assert named.pretrained_cfg["label_names"] == ["sky", "sea"] == named.get_label_names()
