"""The MSRN model: composition, timm conventions, ablations, errors."""

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import msrn
from msrn.layers import compactness_loss

SMALL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, label_feature_dim=10)


def small_model(num_classes=5, **kwargs):
    return timm.create_model("msrn_resnet18", num_classes=num_classes, **{**SMALL, **kwargs})


def test_registry_and_factory():
    names = timm.list_models("msrn*")
    assert {"msrn_resnet101", "msrn_resnet50", "msrn_resnet18", "msrn_custom"} <= set(names)
    assert msrn.list_models() == names
    model = msrn.create_model("msrn_resnet18", num_classes=3, **SMALL)
    assert isinstance(model, msrn.MSRN) and model.num_classes == 3


def test_forward_returns_logits_only():
    model = small_model()
    out = model(torch.randn(2, 3, 96, 96))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_forward_composes_the_layers():
    model = small_model(num_classes=4, label_graph=torch.rand(4, 4) > 0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    labels, groups, _ = model.lge(model.label_features, model.label_graph)
    queries = torch.cat([labels, groups])
    branches = model.backbone(x)
    rows = torch.cat([model.sga(f, queries) for f in branches], dim=2)
    assert rows.shape == (2, 4 + 4, 3 * 16)
    expected = model.head.fc2(F.leaky_relu(model.head.fc1(torch.tanh(rows).flatten(1)), 0.01))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("msrn_resnet18", dict(num_classes=1)),
        ("msrn_resnet18", dict(num_classes=7, num_branches=1)),
        ("msrn_resnet18", dict(num_classes=7, num_branches=4, num_groups=2)),
        ("msrn_custom", dict(num_classes=6, backbone="convnext_atto")),
        ("msrn_custom", dict(num_classes=3, backbone="efficientnet_b0", num_branches=2)),
    ],
)
def test_shapes_for_backbones_and_label_counts(name, kwargs):
    model = timm.create_model(name, **{**SMALL, **kwargs})
    out = model(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, kwargs["num_classes"])
    assert model.forward_features(torch.randn(1, 3, 96, 96)).shape == (
        1,
        kwargs["num_classes"] + model.num_groups,
        model.num_branches * 16,
    )


@pytest.mark.parametrize("mode,rows", [("both", 5 + 4), ("label", 5), ("group", 4), ("none", 5)])
def test_embedding_ablations_table_5(mode, rows):
    model = small_model(embeddings=mode)
    assert model.num_rows == rows
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, rows, 3 * 16)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert (model.lge is None) == (mode == "none")
    if mode in ("label", "none"):
        assert model.compactness_loss().item() == 0.0


def test_every_parameter_receives_a_gradient():
    model = small_model(num_classes=4, label_graph=torch.ones(4, 4, dtype=torch.bool))
    criterion = msrn.MSRNLoss(model)
    loss = criterion(model(torch.randn(2, 3, 64, 64)), torch.randint(0, 2, (2, 4)).float())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_official_parameter_count():
    glove = torch.randn(20, 300)
    model = timm.create_model(
        "msrn_resnet101", num_classes=20, num_groups=4, variant="official", label_features=glove
    )
    assert sum(p.numel() for p in model.parameters()) == 121_763_764
    assert "label_features" in dict(model.named_buffers())
    assert isinstance(model.lge.input_proj, nn.Linear) and model.lge.input_proj.out_features == 256


def test_variants_differ_as_specified():
    paper = small_model(variant="paper")
    official = small_model()
    assert official.variant == "official"  # the default: the authors' code, which trains at lr 0.01
    assert isinstance(paper.lge.input_proj, nn.Identity)
    assert (paper.compactness_weight, paper.compactness_squared) == (1e-3, True)
    assert (official.compactness_weight, official.compactness_squared) == (1e-4, False)
    assert [g.in_dim for g in paper.lge.gats] == [10, 12]
    assert [g.in_dim for g in official.lge.gats] == [256, 12]


def test_msrn_loss_is_bce_plus_weighted_compactness():
    model = small_model(compactness_weight=0.5)
    logits = torch.randn(3, 5)
    targets = torch.randint(0, 2, (3, 5)).float()
    labels, groups, assignment = model.lge(model.label_features, model.label_graph)
    compactness = compactness_loss(labels, groups, assignment, squared=False)  # the official variant's
    expected = nn.MultiLabelSoftMarginLoss()(logits, targets) + 0.5 * compactness
    torch.testing.assert_close(msrn.MSRNLoss(model)(logits, targets), expected)
    torch.testing.assert_close(
        msrn.MSRNLoss(model, compactness_weight=0.0)(logits, targets),
        nn.MultiLabelSoftMarginLoss()(logits, targets),
    )
    with pytest.raises(ValueError, match="must have the logits' shape"):
        msrn.MSRNLoss(model)(logits, targets[:, :3])
    assert "_model" not in dict(msrn.MSRNLoss(model).named_modules())


def test_buffers_make_a_self_contained_checkpoint():
    features = torch.randn(5, 10)
    graph = torch.rand(5, 5) > 0.5
    model = small_model(label_features=features, label_graph=graph)
    state = model.state_dict()
    torch.testing.assert_close(state["label_features"], features)
    assert state["label_graph"].dtype == torch.bool
    assert torch.equal(state["label_graph"], graph | torch.eye(5, dtype=torch.bool))
    clone = small_model()
    clone.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))


def test_eval_caches_embeddings_and_gives_the_same_outputs(monkeypatch):
    model = small_model().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.enable_grad():
        fresh = model(x)
    calls = []
    original = model._compute_embeddings
    monkeypatch.setattr(model, "_compute_embeddings", lambda: calls.append(1) or original())
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert len(calls) == 1
    torch.testing.assert_close(first, fresh)
    torch.testing.assert_close(second, fresh)
    with torch.no_grad():  # an in-place weight change invalidates the cache
        model.lge.gats[0].weight.mul_(2.0)
        changed = model(x)
    assert len(calls) == 2 and not torch.allclose(changed, fresh)
    model.train()
    model.eval()
    with torch.no_grad():
        model(x)
    assert len(calls) == 3


def test_training_mode_recomputes_every_step():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(2, 3, 64, 64), torch.ones(2, 5)
    before = model.label_group_embeddings()[0].detach().clone()
    loss = msrn.MSRNLoss(model)(model(x), y)
    loss.backward()
    optimizer.step()
    assert not torch.allclose(model.label_group_embeddings()[0], before)


def test_reset_classifier_rebuilds_label_sized_parts():
    model = small_model(label_features=torch.randn(5, 10))
    trunk_weight = model.backbone.trunk.conv1.weight.clone()
    gat_weight = model.lge.gats[0].weight.clone()
    model.reset_classifier(8)
    assert model.num_classes == 8 and model.get_classifier().out_features == 8
    assert model.label_features.shape == (8, 10) and isinstance(model.label_features, nn.Parameter)
    assert torch.equal(model.label_graph, torch.eye(8, dtype=torch.bool))
    assert model.head.fc1.in_features == (8 + 4) * 3 * 16
    assert torch.equal(model.backbone.trunk.conv1.weight, trunk_weight)
    assert torch.equal(model.lge.gats[0].weight, gat_weight)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 8)
    model.reset_classifier(3, label_features=torch.zeros(3, 10), label_graph=torch.ones(3, 3))
    assert "label_features" in dict(model.named_buffers())
    with pytest.raises(ValueError, match="width F=10"):
        model.reset_classifier(3, label_features=torch.zeros(3, 300))


def test_timm_conventions():
    model = small_model()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 448, 448) and cfg["crop_pct"] == 1.0
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["std"] == timm.data.IMAGENET_DEFAULT_STD
    state = model.state_dict()
    classifiers = cfg["classifier"] if isinstance(cfg["classifier"], (list, tuple)) else [cfg["classifier"]]
    for name in classifiers:
        assert f"{name}.weight" in state
    assert f"{cfg['first_conv']}.weight" in state
    assert model.get_classifier() is model.head.fc2
    features = model.forward_features(torch.randn(2, 3, 64, 64))
    assert model.forward_head(features, pre_logits=True).shape == (2, 32)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (3, 448, 448)


def test_group_matcher_and_param_groups():
    model = small_model()
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) == 2
    backbone_names = set(groups[0])
    assert backbone_names and all(n.startswith("backbone.trunk.") for n in backbone_names)
    assert "backbone.projections.0.weight" in groups[1] and "label_features" in groups[1]
    param_groups = msrn.param_groups(model, lr=0.1, backbone_lr_scale=0.1, weight_decay=1e-4)
    by_name = {g["name"]: g for g in param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.01) and by_name["msrn"]["lr"] == 0.1
    assert by_name["msrn_no_decay"]["weight_decay"] == 0.0
    total = sum(p.numel() for g in param_groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_grad_checkpointing_gives_the_same_gradients():
    model = small_model()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    reference = model.backbone.trunk.layer1[0].conv1.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    torch.testing.assert_close(model.backbone.trunk.layer1[0].conv1.weight.grad, reference)


def test_channels_last_and_bf16_autocast():
    model = small_model().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        channels_last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-4)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), reference, rtol=0.1, atol=0.1)


def test_double_precision_and_dtype_move():
    model = small_model().double().eval()
    assert model.label_graph.dtype == torch.bool
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(label_features=torch.randn(4, 10)), r"\[num_classes, F\] = \[5, F\]"),
        (dict(label_features=torch.full((5, 10), float("nan"))), "NaN"),
        (dict(label_graph=torch.ones(5, 4)), "square"),
        (dict(label_graph=torch.ones(4, 4)), "num_classes=5"),
        (dict(label_graph=torch.full((5, 5), float("nan"))), "NaN"),
        (dict(num_groups=0), "num_groups"),
        (dict(variant="authors"), "variant must be one of"),
        (dict(embeddings="labels"), "embeddings must be one of"),
        (dict(label_names=["a"]), "label_names has 1 names"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_model(**kwargs)


def test_bad_num_classes_and_backbones():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        small_model(num_classes=-1)
    with pytest.raises(ValueError, match="not a timm model"):
        timm.create_model("msrn_custom", backbone="no_such_net", num_classes=3)
    # timm drops None arguments: msrn_custom falls back to its default backbone (the paper's ResNet-101).
    assert timm.create_model("msrn_custom", backbone=None, num_classes=3, **SMALL).model_args["backbone"] == (
        "resnet101.tv_in1k"
    )


def test_featureless_backbone_is_refused():
    @timm.models.register_model
    def _msrn_test_featureless_net(pretrained=False, **kwargs):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))

    with pytest.raises(ValueError, match="features_only"):
        timm.create_model("msrn_custom", backbone="_msrn_test_featureless_net", num_classes=3)


def test_input_errors():
    model = small_model()
    with pytest.raises(ValueError, match="at least 64 px"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="Expected 3 input channels, got 4"):
        model(torch.randn(1, 4, 64, 64))
