"""Inference backends (msrn.backends): torch and onnxruntime give the same probabilities and labels
through Predictor, msrn predict and msrn evaluate; the ONNX cache is reused and invalidated by a
weight change; a missing onnxruntime is one clear line; int8 runs and is cached per calibration."""

import builtins
import json
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import msrn
from msrn import Predictor, save_pretrained
from msrn.backends import (
    BackendUnavailableError,
    OnnxRuntimeBackend,
    TorchBackend,
    create_backend,
    inference_copy,
    onnx_cache,
    resolve_backend,
)
from msrn.cli import main
from msrn.engine import evaluate_checkpoint

pytest.importorskip("onnxruntime")

NAMES = ["cat", "dog", "person", "car"]
TINY = dict(num_classes=4, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)
SIZE = 64
CPU = torch.device("cpu")


def _tiny_model(seed: int = 0) -> msrn.MSRN:
    torch.manual_seed(seed)
    model = timm.create_model("msrn_resnet18", label_names=NAMES, **TINY).eval()
    with torch.no_grad():
        for module in model.modules():  # BatchNorm statistics away from the identity, so folding shows
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        model.head.fc2.bias.copy_(torch.tensor([2.0, 0.6, -0.6, -2.0]))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backend-images")
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate([(90, 120), (64, 64), (150, 100), (70, 80), (100, 100), (80, 64)]):
        paths.append(folder / f"{k}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _thresholds_between(probabilities: np.ndarray) -> list[float]:
    """Per label, a threshold between two of its probabilities (so labels differ between images),
    as far as possible from every probability."""
    thresholds = []
    for column in probabilities.T:
        values = np.sort(column)
        gaps = np.diff(values)
        k = int(np.argmax(gaps))
        thresholds.append(float((values[k] + values[k + 1]) / 2))
    return thresholds


def test_torch_and_onnxruntime_agree_on_probabilities_and_labels(images, tmp_path):
    model = _tiny_model()
    torch_predictor = Predictor(model, backend="torch", cache_dir=tmp_path)
    reference = torch_predictor.probabilities(images)
    model.pretrained_cfg["label_thresholds"] = _thresholds_between(reference)
    torch_predictor = Predictor(model, backend="torch", cache_dir=tmp_path)
    onnx_predictor = Predictor(model, backend="onnxruntime", cache_dir=tmp_path)
    assert isinstance(torch_predictor.backend, TorchBackend)
    assert isinstance(onnx_predictor.backend, OnnxRuntimeBackend)
    assert onnx_predictor.threshold_source == torch_predictor.threshold_source == "model"
    assert np.abs(onnx_predictor.probabilities(images) - reference).max() <= 1e-4
    labels = torch_predictor.labels(images)
    assert onnx_predictor.labels(images) == labels
    assert len({tuple(row) for row in labels}) > 1  # the thresholds do separate the images
    # auto picks onnxruntime on the CPU when it is installed, torch with amp.
    assert Predictor(model, cache_dir=tmp_path).backend.name == "onnxruntime"
    assert Predictor(model, amp="bf16", cache_dir=tmp_path).backend.name == "torch"


def test_torch_backend_folds_batchnorm_and_uses_channels_last_on_a_copy():
    model = _tiny_model()
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = model(x)
    fused = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.backbone.trunk.modules())
    assert fused.head is model.head and fused.backbone is not model.backbone
    backend = TorchBackend(model, CPU, channels_last=True, fold_batchnorm=True)
    torch.testing.assert_close(backend(x), expected, rtol=1e-4, atol=1e-5)
    conv = next(
        m.weight for m in backend.network.backbone.modules() if getattr(m, "kernel_size", (1, 1)) != (1, 1)
    )
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    # The caller's model is left as it was: BatchNorm in place, NCHW weights.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.trunk.modules())
    assert all(p.is_contiguous() for p in model.parameters())
    plain = TorchBackend(model, CPU, channels_last=False, fold_batchnorm=False)
    assert plain.network is model
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=0)


def test_torch_backend_bf16_autocast_on_cpu():
    """The CPU twin of CUDA mixed precision: the same backend code path under bf16 autocast."""
    model = _tiny_model()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = torch.sigmoid(model(x))
    logits = TorchBackend(model, CPU, amp="bf16")(x)
    assert torch.isfinite(logits).all()
    assert (torch.sigmoid(logits.float()) - expected).abs().max() < 0.05


def test_a_trunk_torch_fx_cannot_trace_is_kept_unfolded(monkeypatch):
    import torch.fx.experimental.optimization as optimization

    def refuse(module, inplace=False):
        raise torch.fx.proxy.TraceError("cannot trace")

    monkeypatch.setattr(optimization, "fuse", refuse)
    model = _tiny_model()
    kept = inference_copy(model, fold_batchnorm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in kept.backbone.trunk.modules())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(kept(x), model(x))


def test_the_onnx_file_is_reused_and_a_weight_change_invalidates_it(tmp_path, monkeypatch):
    exported = []
    real_export = onnx_cache.export_onnx

    def counting_export(*args, **kwargs):
        exported.append(args[1])
        return real_export(*args, **kwargs)

    monkeypatch.setattr(onnx_cache, "export_onnx", counting_export)
    model = _tiny_model()
    first = create_backend(model, "onnxruntime", cache_dir=tmp_path)
    again = create_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert first.path == again.path and len(exported) == 1
    assert first.path.parent == tmp_path and first.path.name.startswith("msrn_resnet18-")
    # Another input size is another graph.
    other_size = create_backend(model, "onnxruntime", input_size=(3, 96, 96), cache_dir=tmp_path)
    assert other_size.path != first.path and len(exported) == 2
    # A weight changed in place: a new file, whose outputs follow the new weight.
    with torch.no_grad():
        model.head.fc2.bias.add_(1.0)
    changed = create_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert changed.path != first.path and len(exported) == 3
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(changed(x), model(x), rtol=1e-4, atol=1e-4)
    # A damaged file is exported again.
    changed.path.write_bytes(b"not an onnx file")
    repaired = create_backend(model, "onnxruntime", cache_dir=tmp_path)
    assert repaired.path == changed.path and len(exported) == 4
    with torch.inference_mode():
        torch.testing.assert_close(repaired(x), model(x), rtol=1e-4, atol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_default_cache_is_under_msrn_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MSRN_CACHE", str(tmp_path))
    backend = create_backend(_tiny_model(), "onnxruntime")
    assert backend.path.parent == tmp_path / "onnx"


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """Make ``import onnxruntime`` fail, as where it is not installed."""
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ModuleNotFoundError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    for name in [n for n in sys.modules if n == "onnxruntime" or n.startswith("onnxruntime.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", failing_import)


def test_missing_onnxruntime_is_one_clear_line(no_onnxruntime, images, tmp_path, capsys):
    model = _tiny_model()
    assert resolve_backend("auto", CPU) == "torch"  # auto falls back
    assert Predictor(model).backend.name == "torch"
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime") as error:
        Predictor(model, backend="onnxruntime")
    assert "\n" not in str(error.value)
    save_pretrained(model, tmp_path / "model")
    argv = [
        "predict",
        "--model",
        f"local-dir:{tmp_path / 'model'}",
        str(images[0]),
        "--backend",
        "onnxruntime",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("msrn predict: error: backend 'onnxruntime' needs the onnxruntime package")


def test_impossible_combinations_are_refused_before_loading():
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_backend("onnxruntime", torch.device("cuda"))
    with pytest.raises(ValueError, match="amp"):
        resolve_backend("onnxruntime", CPU, amp="bf16")
    with pytest.raises(ValueError, match="int8 runs on the onnxruntime backend"):
        resolve_backend("torch", CPU, precision="int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_backend("auto", CPU, precision="fp16")
    with pytest.raises(ValueError, match="calibration_images"):
        Predictor(_tiny_model(), precision="int8")
    assert resolve_backend("auto", CPU, amp="bf16") == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("auto", CPU, precision="int8") == "onnxruntime"


def test_int8_runs_close_to_fp32_and_is_cached_per_calibration(images, tmp_path):
    model = _tiny_model()
    reference = Predictor(model, backend="torch").probabilities(images)
    int8 = Predictor(model, precision="int8", calibration_images=images[:4], cache_dir=tmp_path)
    assert int8.backend.name == "onnxruntime" and int8.backend.precision == "int8"
    probabilities = int8.probabilities(images)
    assert probabilities.shape == reference.shape
    assert np.abs(probabilities - reference).max() < 0.05
    same = Predictor(model, precision="int8", calibration_images=images[:4], cache_dir=tmp_path)
    other = Predictor(model, precision="int8", calibration_images=images[2:], cache_dir=tmp_path)
    assert same.backend.path == int8.backend.path != other.backend.path
    assert len(list(tmp_path.glob("*.onnx"))) == 3  # fp32 once, int8 per calibration set


def test_predict_and_evaluate_cli_agree_across_backends(images, tmp_path, capsys):
    model = _tiny_model()
    save_pretrained(model, tmp_path / "model")
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        argv = ["predict", "--model", f"local-dir:{tmp_path / 'model'}", *map(str, images)]
        assert main([*argv, "--json", "--threshold", "0.3", "--workers", "0", "--backend", backend]) == 0
        outputs[backend] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(outputs["torch"], outputs["onnxruntime"], strict=True):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        for x, y in zip(a["labels"], b["labels"], strict=True):
            assert abs(x["probability"] - y["probability"]) <= 1e-4
    csv = tmp_path / "test.csv"
    labels = ["cat;person", "dog", "cat", "cat", "car", "dog"]
    csv.write_text(
        "image,labels\n" + "".join(f"{p},{cell}\n" for p, cell in zip(images, labels, strict=True))
    )
    scores = {
        backend: evaluate_checkpoint(
            tmp_path / "model", csv, dataset="csv", image_size=SIZE, workers=0, backend=backend
        ).metrics
        for backend in ("torch", "onnxruntime")
    }
    assert scores["torch"]["mAP"] == pytest.approx(scores["onnxruntime"]["mAP"], abs=1e-6)
    # int8 with evaluate needs calibration images; --calibration without int8 is refused.
    base = ["evaluate", str(tmp_path / "model"), "--data", str(csv), "--dataset", "csv", "--workers", "0"]
    assert main([*base, "--precision", "int8"]) == 2
    assert "--precision int8 needs --calibration" in capsys.readouterr().err
    assert main([*base, "--calibration", str(images[0])]) == 2
    assert "--calibration goes with --precision int8" in capsys.readouterr().err


def test_auto_falls_back_to_torch_with_a_warning_when_the_export_fails(tmp_path, monkeypatch):
    def failing_export(*args, **kwargs):
        raise RuntimeError("this backbone cannot be traced")

    monkeypatch.setattr(onnx_cache, "export_onnx", failing_export)
    model = _tiny_model()
    with pytest.warns(UserWarning, match="running the torch backend instead"):
        backend = create_backend(model, "auto", cache_dir=tmp_path)
    assert backend.name == "torch"
    with pytest.raises(RuntimeError, match="cannot be traced"):
        create_backend(model, "onnxruntime", cache_dir=tmp_path)
