"""Weights: pretrained=True, save_pretrained, local-dir:, hf-hub:, push_to_hub, with no network.

A Hugging Face cache is built in a temporary folder, in the real layout
(``models--owner--name/{refs/main, blobs/<sha256>, snapshots/<commit>/<file> -> blob}``), with
``HF_HUB_OFFLINE=1``; the loading code resolves files through huggingface_hub as it would online.
"""

import hashlib
import inspect
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Iterator
from types import SimpleNamespace

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import msrn

TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, num_groups=2)
LABELS = ["cat", "dog", "person", "sofa"]


# ------------------------------------------------------------------------------------- local HF cache
def add_hub_repo(cache: pathlib.Path, repo_id: str, files: dict) -> pathlib.Path:
    """Put ``files`` ({name: bytes}) into ``cache`` as the main revision of Hub repository ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def snapshot_file(cache: pathlib.Path, repo_id: str, name: str) -> pathlib.Path:
    return next((cache / ("models--" + repo_id.replace("/", "--")) / "snapshots").iterdir()) / name


def add_folder_as_repo(cache: pathlib.Path, repo_id: str, folder: pathlib.Path) -> None:
    add_hub_repo(cache, repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})


def timm_repo_files(architecture: str, tag: str, tmp: pathlib.Path) -> dict:
    """A timm Hub repo (config.json + model.safetensors) for ``architecture``, with random weights
    (batch-norm statistics included, so a skipped tensor would show)."""
    model = timm.create_model(architecture, pretrained=False)
    state = {
        k: (torch.randn_like(v) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    path = tmp / f"{architecture}.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    config = {
        "architecture": architecture,
        "num_classes": 1000,
        "num_features": model.num_features,
        "pretrained_cfg": {
            "tag": tag,
            "custom_load": False,
            "input_size": [3, 224, 224],
            "num_classes": 1000,
            "first_conv": "conv1",
            "classifier": "fc",
        },
    }
    return {"config.json": json.dumps(config).encode(), "model.safetensors": path.read_bytes()}


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> pathlib.Path:
    cache = tmp_path_factory.mktemp("hf_home") / "hub"
    work = tmp_path_factory.mktemp("hub_files")
    add_hub_repo(cache, "timm/resnet18.tv_in1k", timm_repo_files("resnet18", "tv_in1k", work))
    add_hub_repo(cache, "timm/test_convnext.r160_in1k", timm_repo_files("test_convnext", "r160_in1k", work))
    return cache


@pytest.fixture
def offline(hub_cache, monkeypatch) -> Iterator[pathlib.Path]:
    """HF_HOME / HF_HUB_CACHE at the temporary cache, offline; huggingface_hub reads these constants at
    import, so the module attributes are patched as well as the environment."""
    monkeypatch.setenv("HF_HOME", str(hub_cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called: weights must come from safetensors only")

    monkeypatch.setattr(torch, "load", no_unpickling)
    reset_hub_sessions()
    yield hub_cache
    reset_hub_sessions()


def reset_hub_sessions() -> None:
    """Drop huggingface_hub's cached HTTP sessions: before 1.0 a session made in offline mode keeps
    refusing every request after offline mode is turned off, in later tests of the same process."""
    utils = huggingface_hub.utils
    reset = getattr(utils, "reset_sessions", None) or getattr(utils, "close_session", None)
    if reset is not None:
        reset()


def tiny_msrn(num_classes=4, **kwargs):
    args = dict(backbone="test_resnet", label_names=LABELS[:num_classes], **TINY)
    args.update(kwargs)
    return timm.create_model("msrn_custom", num_classes=num_classes, **args).eval()


def perturbed(model):
    """Give every tensor non-init values, so a skipped load cannot pass unnoticed."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    return model


def images(n=2, size=64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_same_state(model, reference: dict):
    state = model.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert state[key].dtype == value.dtype, key
        assert torch.equal(state[key], value), key


# -------------------------------------------------------------------------------- pretrained=True
def test_pretrained_loads_the_imagenet_backbone_from_the_hub_cache(offline, caplog):
    file = load_file(str(snapshot_file(offline, "timm/resnet18.tv_in1k", "model.safetensors")))
    torch.manual_seed(3)
    fresh = timm.create_model("msrn_resnet18", pretrained=False, num_classes=3, **TINY)
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="msrn"):
        model = timm.create_model("msrn_resnet18", pretrained=True, num_classes=3, **TINY)
    trunk = model.backbone.trunk.state_dict()
    assert set(trunk) == {k for k in file if not k.startswith("fc.")}
    for key, value in trunk.items():
        assert torch.equal(value, file[key]), key
    # Every MSRN layer keeps its own init: same values as the same construction without weights.
    fresh_state = fresh.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("backbone.trunk."):
            assert torch.equal(value, fresh_state[key]), key
    assert not torch.equal(fresh.backbone.trunk.conv1.weight, model.backbone.trunk.conv1.weight)
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "timm/resnet18.tv_in1k" in message
    initialised = "backbone.buffer_convs, backbone.projections, head, label_features, lge"
    assert f"initialised from scratch: {initialised}" in message
    assert model(images()).shape == (2, 3)


def test_pretrained_backbone_of_any_timm_cnn(offline):
    # timm's feature wrapper renames stages (stages.0 -> stages_0): loading goes through timm.
    file = load_file(str(snapshot_file(offline, "timm/test_convnext.r160_in1k", "model.safetensors")))
    model = timm.create_model("msrn_custom", backbone="test_convnext", pretrained=True, num_classes=2, **TINY)
    trunk = model.backbone.trunk.state_dict()
    assert len(trunk) > 10
    for key, value in trunk.items():
        assert torch.equal(value, file[key.replace("_", ".", 1)]), key


def test_registry_lists_only_real_weights():
    assert timm.get_pretrained_cfg("msrn_resnet101").tag == "tv_in1k"
    for name in ("msrn_resnet101", "msrn_resnet50", "msrn_resnet18"):
        tag = timm.get_pretrained_cfg(name).tag
        backbone_weights = f"{name.split('_', 1)[1]}.{tag}"
        assert timm.get_pretrained_cfg(backbone_weights).hf_hub_id == f"timm/{backbone_weights}"
        assert not timm.get_pretrained_cfg(name).has_weights  # no trained MSRN weights are claimed


def test_missing_backbone_weights_offline_is_a_clear_error(offline):
    expected = r"'resnet50\.tv_in1k'.*'timm/resnet50\.tv_in1k'.*HF_HUB_OFFLINE=1.*--backbone-weights"
    with pytest.raises(FileNotFoundError, match=expected):
        timm.create_model("msrn_resnet50", pretrained=True, num_classes=2, **TINY)


# --------------------------------------------------------------------------- save_pretrained / local-dir
def test_save_pretrained_writes_config_and_safetensors(tmp_path):
    graph = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    model = perturbed(tiny_msrn(label_graph=graph))
    folder = msrn.save_pretrained(model, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "msrn_custom" and config["num_classes"] == 4
    assert config["label_names"] == LABELS
    assert config["model_args"] == dict(
        backbone="test_resnet",
        num_groups=2,
        embed_dim=16,
        num_branches=3,
        variant="official",
        label_feature_dim=300,
        embeddings="both",
        compactness_weight=1e-4,
        compactness_squared=False,
        gat_hidden_dim=12,
        hidden_dim=32,
        drop_rate=0.0,
        in_chans=3,
    )
    assert config["msrn"] == {"format_version": 1, "label_features": "learnable"}
    assert config["pretrained_cfg"]["input_size"] == [3, 448, 448]
    stored = load_file(str(folder / "model.safetensors"))
    assert_same_state(model, stored)
    expected_graph = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(stored["label_graph"], expected_graph)


@pytest.mark.parametrize("fixed_features", [False, True])
def test_local_dir_rebuilds_the_same_model(tmp_path, fixed_features):
    kwargs = dict(variant="official", num_branches=2, embeddings="both", label_graph=torch.rand(4, 4) > 0.5)
    if fixed_features:
        kwargs["label_features"] = torch.randn(4, 7)
    model = perturbed(tiny_msrn(**kwargs))
    expected = model(images())
    folder = msrn.save_pretrained(model, tmp_path / "msrn")
    stored = load_file(str(folder / "model.safetensors"))

    loaded = timm.create_model(f"local-dir:{folder}").eval()
    assert isinstance(loaded, msrn.MSRN)
    assert_same_state(loaded, stored)
    assert torch.equal(loaded(images()), expected)
    assert loaded.pretrained_cfg["label_names"] == LABELS and loaded.label_names == LABELS
    assert loaded.variant == "official" and loaded.num_branches == 2
    is_buffer = "label_features" in dict(loaded.named_buffers())
    assert is_buffer == fixed_features
    assert loaded.label_features.requires_grad != fixed_features


def test_registered_architecture_round_trip(tmp_path):
    model = perturbed(timm.create_model("msrn_resnet18", num_classes=2, **TINY).eval())
    folder = msrn.save_pretrained(model, tmp_path / "r18")
    loaded = msrn.create_model(f"local-dir:{folder}").eval()
    assert loaded.pretrained_cfg["architecture"] == "msrn_resnet18"
    assert torch.equal(loaded(images()), model(images()))


def test_other_num_classes_reinitialises_the_label_sized_parts(tmp_path, caplog):
    model = perturbed(tiny_msrn(label_features=torch.randn(4, 9)))
    folder = msrn.save_pretrained(model, tmp_path / "msrn")
    stored = load_file(str(folder / "model.safetensors"))
    with caplog.at_level(logging.WARNING, logger="msrn"):
        loaded = timm.create_model(f"local-dir:{folder}", num_classes=6)
    assert "trained for 4 labels but the model has 6" in caplog.text
    assert loaded.num_classes == 6 and loaded.label_names is None
    # the checkpoint's names described its 4 labels: the 6 new ones are unnamed
    assert loaded.pretrained_cfg["label_names"] == [f"label_{i}" for i in range(6)]
    assert loaded.pretrained_cfg["num_classes"] == 6
    label_sized = ("label_features", "label_graph", "head.fc1.", "head.fc2.")
    state = loaded.state_dict()
    for key, value in stored.items():
        if key.startswith(label_sized):
            continue
        assert torch.equal(state[key], value), key
    assert state["label_features"].shape == (6, 9)  # learnable features of the same width
    assert torch.equal(state["label_graph"], torch.eye(6, dtype=torch.bool))
    assert state["head.fc2.weight"].shape == (6, 32)
    assert not torch.equal(state["head.fc1.bias"], stored["head.fc1.bias"])
    assert loaded(images()).shape == (2, 6)


def test_explicit_label_inputs_override_the_checkpoint(tmp_path):
    model = perturbed(tiny_msrn(label_features=torch.randn(4, 9)))
    folder = msrn.save_pretrained(model, tmp_path / "msrn")
    features = torch.randn(4, 9)
    loaded = timm.create_model(f"local-dir:{folder}", label_features=features, label_names=list("wxyz"))
    assert torch.equal(loaded.label_features, features)
    assert loaded.pretrained_cfg["label_names"] == list("wxyz")
    assert torch.equal(loaded.head.fc1.weight, model.head.fc1.weight)


def test_label_names_of_a_fresh_model_reach_pretrained_cfg():
    model = tiny_msrn()
    assert model.pretrained_cfg["label_names"] == LABELS


# ------------------------------------------------------------------------------------------- hf-hub
def test_hf_hub_loads_a_saved_model_through_the_cache(offline, tmp_path):
    model = perturbed(tiny_msrn(label_features=torch.randn(4, 5)))
    folder = msrn.save_pretrained(model, tmp_path / "msrn")
    add_folder_as_repo(offline, "tester/msrn-tiny", folder)
    stored = load_file(str(folder / "model.safetensors"))

    loaded = timm.create_model("hf-hub:tester/msrn-tiny").eval()
    assert_same_state(loaded, stored)
    assert torch.equal(loaded(images()), model(images()))
    assert loaded.pretrained_cfg["label_names"] == LABELS
    assert loaded.pretrained_cfg["hf_hub_id"] == "tester/msrn-tiny"
    at_revision = timm.create_model("hf-hub:tester/msrn-tiny@main").eval()
    assert torch.equal(at_revision(images()), model(images()))

    # A registry tag (or pretrained_cfg) with a Hub repository loads the whole checkpoint with
    # pretrained=True, as a trained VOC / COCO tag will.
    tagged = timm.create_model(
        "msrn_custom", pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="tester/msrn-tiny")
    )
    assert torch.equal(tagged.eval()(images()), model(images()))


def checked_against_real(name, fake):
    """``fake`` in place of ``HfApi.<name>``, refusing calls the real method's signature would refuse."""
    signature = inspect.signature(getattr(huggingface_hub.HfApi, name))

    def method(self, *args, **kwargs):
        signature.bind(self, *args, **kwargs)
        return fake(self, *args, **kwargs)

    return method


@pytest.fixture
def hub_answers(monkeypatch):
    """The Hub answers push_to_hub's first question (whether it can be reached), whose real call is
    not one of HfApi's methods faked below."""
    asked = []
    monkeypatch.setattr("msrn._hub_network.get_hf_file_metadata", lambda url, **kw: asked.append(url))
    return asked


def test_push_to_hub_uploads_safetensors_config_and_model_card(offline, hub_answers, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # pushing needs the network
    monkeypatch.delenv("HF_HUB_OFFLINE")
    uploaded = tmp_path / "uploaded"
    calls = {}

    def create_repo(self, repo_id, private=False, exist_ok=False, **kwargs):
        calls["create_repo"] = (repo_id, private, exist_ok)
        return SimpleNamespace(repo_id=repo_id)

    def file_exists(self, repo_id, filename, revision=None, **kwargs):
        return False

    def upload_folder(self, repo_id, folder_path, commit_message="", **kwargs):
        calls["upload_folder"] = (repo_id, commit_message)
        shutil.copytree(folder_path, uploaded)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")

    fakes = dict(create_repo=create_repo, file_exists=file_exists, upload_folder=upload_folder)
    for name, fake in fakes.items():
        monkeypatch.setattr(huggingface_hub.HfApi, name, checked_against_real(name, fake))

    model = perturbed(tiny_msrn())
    result = msrn.push_to_hub(
        model, "tester/msrn-voc", dataset="VOC2007", metrics={"mAP": 93.456, "OF1": 88.0}, private=True
    )
    assert result.commit_url.endswith("tester/msrn-voc/commit/0")
    assert calls["create_repo"] == ("tester/msrn-voc", True, True)
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (uploaded / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and '- "VOC2007"' in card
    assert "Multi-layered Semantic Representation Network for Multi-label Image Classification" in card
    assert "| mAP | 93.46 |" in card and "| OF1 | 88.00 |" in card
    assert "`person`" in card and 'timm.create_model("hf-hub:tester/msrn-voc")' in card
    assert len(hub_answers) == 1 and "tester/msrn-voc" in hub_answers[0]

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    add_folder_as_repo(offline, "tester/msrn-voc", uploaded)
    loaded = timm.create_model("hf-hub:tester/msrn-voc").eval()
    assert torch.equal(loaded(images()), model(images()))


def test_push_to_hub_keeps_an_existing_model_card(hub_answers, monkeypatch, tmp_path):
    seen = {}
    fakes = dict(
        create_repo=lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id),
        file_exists=lambda self, repo_id, filename, **kw: True,
        upload_folder=lambda self, repo_id, folder_path, **kw: seen.setdefault(
            "files", sorted(os.listdir(folder_path))
        ),
    )
    for name, fake in fakes.items():
        monkeypatch.setattr(huggingface_hub.HfApi, name, checked_against_real(name, fake))
    msrn.push_to_hub(tiny_msrn(), "tester/kept")
    assert seen["files"] == ["config.json", "model.safetensors"]


# --------------------------------------------------------------------------------------- bad input
@pytest.fixture
def saved(tmp_path) -> pathlib.Path:
    return msrn.save_pretrained(tiny_msrn(), tmp_path / "msrn")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights_name_the_file(saved, damage):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    garbage = b"\x13\x00\x00\x00not a safetensors file"
    path.write_bytes(garbage if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{path}.*not a readable safetensors file"):
        timm.create_model(f"local-dir:{saved}")


def edit_config(folder: pathlib.Path, edit) -> pathlib.Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("key", ["architecture", "model_args", "pretrained_cfg", "num_classes"])
def test_config_missing_keys_name_the_file(saved, key):
    path = edit_config(saved, lambda config: config.pop(key))
    with pytest.raises(ValueError, match=rf"{path} is missing the key\(s\) \['{key}'\]"):
        msrn.create_model(f"local-dir:{saved}")


def test_config_missing_model_args_through_timm(saved):
    path = edit_config(saved, lambda config: config.pop("model_args"))
    with pytest.raises(ValueError, match=rf"{path} is missing the key\(s\) \['model_args'\]"):
        timm.create_model(f"local-dir:{saved}")


def test_timm_layout_config_without_msrn_section(tmp_path):
    # Written by another tool: the label features load as fixed inputs, values and logits unchanged.
    model = perturbed(tiny_msrn())
    folder = msrn.save_pretrained(model, tmp_path / "foreign")
    edit_config(folder, lambda config: config.pop("msrn"))
    loaded = timm.create_model(f"local-dir:{folder}").eval()
    assert "label_features" in dict(loaded.named_buffers())
    assert torch.equal(loaded.label_features, model.label_features)
    assert torch.equal(loaded(images()), model(images()))


def test_config_with_unknown_architecture(saved):
    path = edit_config(saved, lambda config: config.update(architecture="msrn_nonexistent"))
    unknown = rf"{path} names the architecture 'msrn_nonexistent'.*msrn_resnet101"
    with pytest.raises(ValueError, match=unknown):
        msrn.create_model(f"local-dir:{saved}")


def test_config_that_is_not_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        msrn.create_model(f"local-dir:{saved}")


def test_config_with_unknown_model_args(saved):
    path = edit_config(saved, lambda config: config["model_args"].update(attention_heads=8))
    with pytest.raises(ValueError, match=rf"{path}: model_args holds \['attention_heads'\]"):
        timm.create_model(f"local-dir:{saved}")


def test_weights_that_do_not_fit_the_config(saved):
    path = edit_config(saved, lambda config: config["model_args"].update(hidden_dim=48))
    fit = rf"model.safetensors .* do not fit the model built from {path}.*head.fc1.weight"
    with pytest.raises(ValueError, match=fit):
        timm.create_model(f"local-dir:{saved}")


def test_in_memory_state_dict_source_is_refused():
    with pytest.raises(ValueError, match=r"pretrained_cfg\['state_dict'\].*load_state_dict"):
        timm.create_model(
            "msrn_custom",
            backbone="test_resnet",
            pretrained=True,
            pretrained_cfg_overlay=dict(state_dict={"x": torch.zeros(1)}),
        )


def test_pickled_weights_are_refused(saved):
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"No model.safetensors.*pytorch_model.bin not read"):
        timm.create_model(f"local-dir:{saved}")


def test_unresolvable_hub_id_offline(offline):
    with pytest.raises(FileNotFoundError, match=r"'nobody/missing'.*HF_HUB_OFFLINE=1"):
        msrn.create_model("hf-hub:nobody/missing")


def test_hub_repo_without_weights_in_the_cache(offline, saved):
    add_hub_repo(offline, "tester/config-only", {"config.json": (saved / "config.json").read_bytes()})
    with pytest.raises(FileNotFoundError, match=r"model.safetensors of Hub repository 'tester/config-only'"):
        timm.create_model("hf-hub:tester/config-only")


def test_missing_folder_and_wrong_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No config.json at .*absent"):
        msrn.create_model(f"local-dir:{tmp_path / 'absent'}")
    with pytest.raises(TypeError, match="expects an msrn.MSRN"):
        msrn.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ValueError, match="JSON values"):
        msrn.save_pretrained(tiny_msrn(backbone_kwargs={"act_layer": torch.nn.ReLU}), tmp_path / "y")


def test_model_built_without_timm_round_trips(tmp_path):
    model = perturbed(msrn.MSRN(num_classes=3, backbone="test_resnet", **TINY).eval())
    # A compiled (or DataParallel) wrapper saves the model inside it.
    folder = msrn.save_pretrained(torch.compile(model), tmp_path / "direct")
    loaded = timm.create_model(f"local-dir:{folder}").eval()
    assert loaded.pretrained_cfg["architecture"] == "msrn_custom"
    assert torch.equal(loaded(images()), model(images()))
