"""timm's model contract for token-output ("non-standard") models, as timm's own tests/test_models.py
checks it, for every registered ``msrn*`` name: defaults build, every parameter gets a gradient, the
``num_features`` / ``head_hidden_size`` / ``reset_classifier(0)`` / ``num_classes=0`` conventions, and
default-cfg entries that name real weights.

The cfg checks run at each model's default input size (448 px); the backward pass runs at timm's
backward-test size (the default size capped at 128 px, as timm's test_model_backward does).
"""

import pytest
import timm
import torch

import msrn  # noqa: F401  (registers the msrn_* models)

NAMES = timm.list_models("msrn*")
TIMM_BACKWARD_SIZE = 128


def test_every_msrn_architecture_is_covered():
    assert {"msrn_resnet101", "msrn_resnet50", "msrn_resnet18", "msrn_custom"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_timm_contract_for_token_output_models(name):
    model = timm.create_model(name, pretrained=False)  # every registered name builds with defaults
    cfg = dict(model.pretrained_cfg)
    assert model.num_classes == cfg["num_classes"] > 0 and model.num_labels == model.num_classes
    assert model.num_features == model.num_branches * model.embed_dim
    assert model.head_hidden_size == model.hidden_dim and model.output_fmt == "NLC"
    state_dict = model.state_dict()
    assert f"{cfg['classifier']}.weight" in state_dict
    assert cfg["first_conv"] and f"{cfg['first_conv']}.weight" in state_dict

    # Forward and backward: every parameter gets a gradient.
    model.train()
    size = min(cfg["input_size"][-1], TIMM_BACKWARD_SIZE)
    outputs = model(torch.randn(2, 3, size, size))
    outputs.mean().backward()
    assert outputs.shape == (2, model.num_classes) and not torch.isnan(outputs).any()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"

    model.eval()
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (1, model.num_rows, model.num_features)  # NLC: [N, n + m, B * d]
        pre_logits = model.forward_head(tokens, pre_logits=True)
        assert pre_logits.shape == (1, model.head_hidden_size)

        # reset_classifier(0) removes only fc2: labels, embeddings, attention and fc1 stay.
        kept = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.fc2.")}
        model.reset_classifier(0)
        assert model.num_classes == 0 and model.num_labels == cfg["num_classes"]
        assert model.pretrained_cfg["num_classes"] == 0  # timm's: classifier outputs
        after = model.state_dict()
        assert set(after) == set(kept) and all(torch.equal(after[k], kept[k]) for k in kept)
        torch.testing.assert_close(model(x), pre_logits)  # forward returns the pre-logits

        # Built without a classifier: pooled features of width num_features, labels from the cfg.
        features = timm.create_model(name, pretrained=False, num_classes=0).eval()
        assert features.num_classes == 0 and features.num_labels == cfg["num_classes"]
        features.load_state_dict({k: v for k, v in kept.items() if not k.startswith("head.")})
        pooled = features(x)
        assert pooled.shape == (1, features.num_features)
        torch.testing.assert_close(pooled, tokens.mean(dim=1))
    assert f"{features.pretrained_cfg['first_conv']}.weight" in features.state_dict()


def test_msrn_custom_finds_the_first_conv_of_any_backbone():
    for backbone, first_conv in [
        ("convnext_atto", "backbone.trunk.stem_0"),
        ("efficientnet_b0", "backbone.trunk.conv_stem"),
        ("vit_tiny_patch16_224", "backbone.trunk.model.patch_embed.proj"),
    ]:
        model = timm.create_model("msrn_custom", backbone=backbone, num_classes=3, embed_dim=8, hidden_dim=8)
        assert model.pretrained_cfg["first_conv"] == first_conv
        assert f"{first_conv}.weight" in model.state_dict()


def test_num_classes_zero_keeps_given_labels_and_round_trips(tmp_path):
    small = dict(embed_dim=8, hidden_dim=16, gat_hidden_dim=8, label_feature_dim=6)
    features = timm.create_model("msrn_resnet18", num_classes=0, label_names=["a", "b", "c"], **small)
    assert features.num_labels == 3 and features.get_label_names() == ["a", "b", "c"]
    assert features.head is None and isinstance(features.get_classifier(), torch.nn.Identity)
    features.reset_classifier(5)
    assert (features.num_classes, features.num_labels) == (5, 5)
    assert features(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="num_labels=4 but num_classes=3"):
        timm.create_model("msrn_resnet18", num_classes=3, num_labels=4, **small)
    with pytest.raises(ValueError, match="removes only the classifier"):
        features.reset_classifier(0, label_names=["x"])
    with pytest.raises(ValueError, match="no classifier"):
        features.reset_classifier(0)
        msrn.save_pretrained(features, tmp_path / "headless")
