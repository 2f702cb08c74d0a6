"""ONNX export (checked in onnxruntime against PyTorch) and torch.compile on a tiny MSRN."""

import json

import numpy as np
import pytest
import timm
import torch

import msrn  # noqa: F401  registers the architectures
from msrn import save_pretrained
from msrn.cli import main
from msrn.export import export_onnx, run_onnx

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

NAMES = ["cat", "dog", "person"]
TINY = dict(num_classes=3, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)


def _tiny_model(**overrides) -> torch.nn.Module:
    model = timm.create_model("msrn_resnet18", label_names=NAMES, **{**TINY, **overrides})
    with torch.no_grad():  # larger logits than the init gives, so a 1e-4 match means something
        model.head.fc2.weight.mul_(50.0)
    return model.eval()


@pytest.mark.parametrize("overrides", [dict(), dict(variant="official", embeddings="label")])
def test_onnx_matches_pytorch_for_any_batch(tmp_path, overrides):
    model = _tiny_model(**overrides)
    path = export_onnx(model, tmp_path / "out" / "model.onnx", img_size=128)
    for batch in (1, 3):  # exported with batch 2: the batch dimension must be dynamic
        images = torch.randn(batch, 3, 128, 128)
        with torch.no_grad():
            expected = model(images).numpy()
        got = run_onnx(path, images)
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 0.1 and np.ptp(expected, axis=0).max() > 1e-3  # not a constant output


def test_onnx_metadata_and_mode(tmp_path):
    import onnx

    model = _tiny_model().train()
    path = export_onnx(model, tmp_path / "model.onnx", img_size=(128, 96))
    assert model.training  # the caller's mode is restored
    proto = onnx.load(str(path))
    metadata = {entry.key: json.loads(entry.value) for entry in proto.metadata_props}
    assert metadata["label_names"] == NAMES
    assert metadata["input_size"] == [3, 128, 96]
    assert metadata["mean"] == pytest.approx([0.485, 0.456, 0.406])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 128, 96]
    # no graph attention in the file: the label/group embeddings are constants
    assert not any(node.op_type == "EyeLike" for node in proto.graph.node)


def test_export_rejects_small_inputs(tmp_path):
    with pytest.raises(ValueError, match="at least 64 px"):
        export_onnx(_tiny_model(), tmp_path / "m.onnx", img_size=32)


def test_export_command(tmp_path, capsys):
    model = _tiny_model()
    folder = tmp_path / "model"
    save_pretrained(model, folder)
    out = tmp_path / "model.onnx"
    code = main(["export", "--model", f"local-dir:{folder}", "--onnx", str(out), "--img-size", "96"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "logits [batch, 3]" in printed and "max |logit difference|" in printed
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(out, images), model(images).numpy(), atol=1e-4, rtol=0)
    assert main(["export", "--model", f"local-dir:{folder}", "--onnx", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_torch_compile_gives_the_same_logits():
    """fullgraph=True: the whole forward (LGE, SGA, head) compiles without graph breaks. The
    aot_eager backend traces exactly what inductor would receive; inductor's C++ code generation
    alone takes over a minute on two CPU cores, too long for the test suite."""
    model = _tiny_model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        torch.testing.assert_close(compiled(images), expected, atol=1e-5, rtol=1e-5)
    assert expected.std() > 0.1  # distinct logits, so agreement is not trivial
