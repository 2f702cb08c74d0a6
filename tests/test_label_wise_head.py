"""head="label_wise": the read-out against a direct computation, bounded attention rows and a constant
cost per label, and timm's contract (reset_classifier, num_classes=0, pre-logits), save/load and
local-dir:, load_model, ONNX export and msrn.Predictor, on a small model and small inputs."""

import math

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import msrn
from msrn.layers import LabelWiseHead, LabelWiseLinear
from msrn.models import infer_model_args, load_model

NAMES = ["cat", "dog", "person", "car", "tree"]
SMALL = dict(
    embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2, num_query_groups=6
)
SIZE = 64


def small_model(num_classes=5, **overrides) -> msrn.MSRN:
    torch.manual_seed(0)
    kwargs = {**SMALL, "label_names": NAMES if num_classes == 5 else None, **overrides}
    return timm.create_model("msrn_resnet18", num_classes=num_classes, head="label_wise", **kwargs)


def images(batch=2):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------ layer
def test_read_out_matches_a_direct_computation():
    torch.manual_seed(0)
    head = LabelWiseHead(row_dim=12, label_dim=6, num_classes=4, dim=10, attention_dim=8, num_heads=2)
    rows, labels = torch.randn(3, 5, 12), torch.randn(4, 6)
    t = torch.tanh(rows)
    q, k, v = head.query(labels), head.key(t), head.value(t)
    expected, expected_z = torch.empty(3, 4), torch.empty(3, 4, 10)
    for b in range(3):
        for i in range(4):
            parts = []
            for h in range(2):
                s, c = slice(4 * h, 4 * h + 4), slice(5 * h, 5 * h + 5)
                beta = torch.softmax(k[b, :, s] @ q[i, s] / math.sqrt(4), dim=0)
                parts.append(beta @ v[b, :, c])
            expected_z[b, i] = torch.cat(parts)
            expected[b, i] = head.classifier.weight[i] @ expected_z[b, i] + head.classifier.bias[i]
    torch.testing.assert_close(head(rows, labels), expected, rtol=1e-5, atol=1e-5)
    pre_logits = head(rows, labels, pre_logits=True)
    torch.testing.assert_close(pre_logits, expected_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.classifier(pre_logits), expected, rtol=1e-5, atol=1e-5)
    weights = head.read_out_weights(rows, labels)
    assert weights.shape == (3, 2, 4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 4))


def test_layer_errors():
    with pytest.raises(ValueError, match="divide dim"):
        LabelWiseHead(12, 6, 4, dim=8, num_heads=3)
    with pytest.raises(ValueError, match="attention_dim=6"):
        LabelWiseHead(12, 6, 4, dim=8, attention_dim=6, num_heads=4)
    head = LabelWiseHead(12, 6, 4, dim=8, num_heads=2)
    with pytest.raises(ValueError, match=r"rows \[N, R, 12\]"):
        head(torch.randn(3, 5, 11), torch.randn(4, 6))
    with pytest.raises(ValueError, match="classifier for 4 labels but got 3"):
        head(torch.randn(3, 5, 12), torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"\[N, 4, 8\]"):
        LabelWiseLinear(8, 4)(torch.randn(2, 3, 8))


# ------------------------------------------------------------------------------------------ model
def test_rows_are_bounded_and_each_label_costs_the_same():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    sizes = {n: small_model(num_classes=n) for n in (5, 50, 500)}
    assert {model.num_rows for model in sizes.values()} == {6 + 2}  # K query groups + m groups
    per_label = SMALL["hidden_dim"] + 1 + SMALL["label_feature_dim"]  # u_i, c_i, learnable features
    assert count(sizes[50]) - count(sizes[5]) == 45 * per_label
    assert count(sizes[500]) - count(sizes[50]) == 450 * per_label
    paper = timm.create_model("msrn_resnet18", num_classes=50, **{**SMALL, "num_query_groups": 32})
    assert paper.num_rows == 52 and "query_groups" not in dict(paper.named_parameters())


@pytest.mark.parametrize("embeddings, rows", [("both", 8), ("label", 6), ("group", 2), ("none", 6)])
def test_embedding_modes_train(embeddings, rows):
    model = small_model(embeddings=embeddings)
    assert model.num_rows == rows
    out = model(images())
    out.mean().backward()
    assert out.shape == (2, 5)
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_groups_are_means_and_the_compactness_a_mean_over_labels():
    model = small_model()
    assert model.lge.diffpool.pooling == "mean"
    labels, groups, assignment = model.label_group_embeddings()
    expected = msrn.layers.compactness_loss(labels, groups, assignment, squared=False).detach() / 5
    torch.testing.assert_close(model.compactness_loss(weighted=False).detach(), expected)
    assert timm.create_model("msrn_resnet18", num_classes=5, **SMALL).lge.diffpool.pooling == "sum"


def test_timm_contract():
    model = small_model().eval()
    assert (
        model.head_hidden_size == SMALL["hidden_dim"]
        and model.pretrained_cfg["classifier"] == "head.classifier"
    )
    assert "head.classifier.weight" in model.state_dict() and model.get_classifier() is model.head.classifier
    assert model.no_weight_decay() == {"label_features", "query_groups"}
    x = images()
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, model.num_rows, model.num_features)
        pre_logits = model.forward_head(tokens, pre_logits=True)
        assert pre_logits.shape == (2, 5, model.head_hidden_size)  # one representation per label
        logits = model(x)
        torch.testing.assert_close(model.forward_head(tokens), logits)
        torch.testing.assert_close(model.get_classifier()(pre_logits), logits, rtol=1e-5, atol=1e-5)

        kept = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.classifier.")}
        model.reset_classifier(0)
        assert model.num_classes == 0 and model.num_labels == 5 and model.pretrained_cfg["num_classes"] == 0
        after = model.state_dict()
        assert set(after) == set(kept) and all(torch.equal(after[k], kept[k]) for k in kept)
        torch.testing.assert_close(model(x), pre_logits)

        model.reset_classifier(3)  # new labels: a new classifier, the shared read-out stays
        assert model(x).shape == (2, 3) and model.head.classifier.weight.shape == (3, SMALL["hidden_dim"])
        assert torch.equal(model.head.query.weight, kept["head.query.weight"])
        assert torch.equal(model.query_groups, kept["query_groups"])

    headless = timm.create_model("msrn_resnet18", num_classes=0, num_labels=5, head="label_wise", **SMALL)
    assert headless.head is None and headless(x).shape == (2, headless.num_features)


def test_attention_maps_mix_the_rows_maps_per_label():
    model = small_model().eval()
    maps = msrn.visualize.label_attention_maps(model, images())
    assert [m.shape[:2] for m in maps] == [(2, 5)] * 3
    for m in maps:
        torch.testing.assert_close(m.sum(dim=(-2, -1)), torch.ones(2, 5))


def test_save_load_local_dir_and_load_model(tmp_path):
    model = small_model().eval()
    msrn.save_pretrained(model, tmp_path / "saved")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.head_type == "label_wise" and loaded.num_query_groups == 6
    assert loaded.get_label_names() == NAMES

    # Other labels: only the per-label parts start from their init.
    other = timm.create_model(f"local-dir:{tmp_path / 'saved'}", num_classes=3)
    assert torch.equal(other.head.key.weight, model.head.key.weight)
    assert torch.equal(other.query_groups, model.query_groups)
    assert other.head.classifier.weight.shape == (3, SMALL["hidden_dim"])

    # A bare safetensors state dict, sized from its tensors.
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "sd.safetensors"))
    args = infer_model_args(model.state_dict())
    assert args["head"] == "label_wise" and args["num_query_groups"] == 6 and args["embeddings"] == "both"
    bare = load_model("msrn_resnet18", str(tmp_path / "sd.safetensors"))
    with torch.no_grad():
        assert torch.equal(bare(x), model(x))


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from msrn.export import export_onnx, run_onnx

    model = small_model().eval()
    with torch.no_grad():  # larger logits than the init gives, so a 1e-4 match means something
        model.head.classifier.weight.mul_(50.0)
    path = export_onnx(model, tmp_path / "model.onnx", img_size=SIZE)
    for batch in (1, 3):
        x = images(batch)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(run_onnx(path, x), expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 1e-3


def test_predictor(tmp_path):
    from PIL import Image

    model = small_model().eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}
    msrn.save_pretrained(model, tmp_path / "saved")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8))
    predictor = msrn.Predictor(f"local-dir:{tmp_path / 'saved'}")
    probabilities = predictor.probabilities([image, image])
    assert probabilities.shape == (2, 5) and ((probabilities > 0) & (probabilities < 1)).all()
    assert list(predictor.predict([image])[0]) == NAMES
    assert set(predictor.labels([image])[0]) <= set(NAMES)
    batch = next(predictor.iter_batches([image]))
    with torch.no_grad():
        expected = torch.sigmoid(model(batch.inputs))
    torch.testing.assert_close(batch.probabilities, expected, rtol=1e-5, atol=1e-6)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="head must be one of"):
        timm.create_model("msrn_resnet18", num_classes=3, head="mlp")
    with pytest.raises(ValueError, match="num_query_groups"):
        timm.create_model("msrn_resnet18", num_classes=3, head="label_wise", num_query_groups=0)


def test_paper_head_configs_do_not_change():
    model = timm.create_model("msrn_resnet18", num_classes=3, **{**SMALL, "num_query_groups": 32})
    assert "head" not in model.model_args and model.pretrained_cfg["classifier"] == "head.fc2"
    assert small_model().model_args["head"] == "label_wise"


def test_open_images_size_builds_trains_a_step_and_saves(tmp_path):
    n = 9605  # Open Images' trainable labels; narrow layers keep the test cheap (n is what is tested)
    narrow = dict(embed_dim=64, hidden_dim=256, gat_hidden_dim=64, label_feature_dim=64)
    model = timm.create_model("msrn_resnet18", num_classes=n, head="label_wise", **narrow)
    assert model.label_graph.shape == (2, n) and model.num_rows == 32 + 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = msrn.MSRNLoss(model)
    targets = (torch.rand(2, n, generator=torch.Generator().manual_seed(0)) < 0.001).float()
    loss = criterion(model(images()), targets)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    msrn.save_pretrained(model.eval(), tmp_path / "big")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'big'}").eval()
    with torch.no_grad():
        assert torch.equal(loaded(images(1)), model(images(1)))
