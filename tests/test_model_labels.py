"""One argument gives the paper's model: labels= sets the label side from a built-in label set; the
default variant trains; a model without a label graph says so."""

import logging

import pytest
import timm
import torch

import msrn
import msrn.engine
import msrn.labels

SMALL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12)


@pytest.mark.parametrize(
    "labels, name, num_classes, edges",
    [
        ("voc2007", "voc2007", 20, 6),
        ("voc", "voc2007", 20, 6),
        ("coco2014", "coco2014", 80, 111),
        ("coco", "coco2014", 80, 111),
        ("nuswide", "nuswide", 81, 2),
        ("apparel", "apparel", 11, 6),
    ],
)
def test_labels_argument_sets_names_features_and_graph(labels, name, num_classes, edges, caplog):
    label_set = msrn.labels.load(name)
    with caplog.at_level(logging.WARNING, logger="msrn"):
        model = timm.create_model("msrn_resnet18", labels=labels, **SMALL)
    assert "no label graph" not in caplog.text
    assert model.num_classes == num_classes and model.label_names == list(label_set.names)
    assert model.get_label_names() == list(label_set.names)
    assert "label_features" in dict(model.named_buffers())  # fixed, as in the paper
    assert torch.equal(model.label_features, label_set.features)
    assert torch.equal(model.label_graph, label_set.graph(0.4))
    assert int(model.label_graph.sum()) - num_classes == edges
    assert model.variant == "official"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, num_classes)


def test_labels_round_trip_through_save_pretrained(tmp_path):
    model = timm.create_model("msrn_resnet18", labels="coco2014", **SMALL).eval()
    msrn.save_pretrained(model, tmp_path / "coco")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'coco'}").eval()
    assert loaded.label_names == model.label_names and loaded.variant == "official"
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_labels_argument_errors():
    with pytest.raises(ValueError, match=r"Unknown label set 'imagenet'.*voc2007 \(or voc\)"):
        timm.create_model("msrn_resnet18", labels="imagenet", **SMALL)
    with pytest.raises(ValueError, match=r"labels='voc2007' has 20 labels but num_classes=5"):
        timm.create_model("msrn_resnet18", labels="voc", num_classes=5, **SMALL)
    with pytest.raises(ValueError, match=r"labels='voc2007' sets label_graph: pass either"):
        timm.create_model("msrn_resnet18", labels="voc", label_graph=torch.eye(20, dtype=torch.bool), **SMALL)
    # A LabelSet object works too, e.g. a subset of a built-in set.
    subset = msrn.labels.load("voc2007").select(["person", "dog", "chair"])
    model = timm.create_model("msrn_resnet18", labels=subset, **SMALL)
    assert model.label_names == ["person", "dog", "chair"] and model.label_features.shape == (3, 300)


def test_find_and_select():
    found = msrn.labels.find(["dog", "person"])
    voc = msrn.labels.load("voc2007")
    assert found.name == "voc2007" and found.names == ("dog", "person")
    rows = [voc.names.index("dog"), voc.names.index("person")]
    assert torch.equal(found.features, voc.features[rows])
    assert found.cooccurrence[0, 1] == voc.cooccurrence[rows[0], rows[1]]
    assert msrn.labels.find(["dog", "teddy bear"]).name == "coco2014"
    assert msrn.labels.find(["dog", "unicorn"]) is None
    with pytest.raises(ValueError, match=r"no label \['unicorn'\]"):
        voc.select(["unicorn"])


def test_model_without_graph_logs_once(caplog):
    with caplog.at_level(logging.WARNING, logger="msrn"):
        model = timm.create_model("msrn_resnet18", num_classes=4, **SMALL)
        model(torch.randn(1, 3, 64, 64))
        model(torch.randn(1, 3, 64, 64))
    messages = [r.getMessage() for r in caplog.records if "no label graph" in r.getMessage()]
    assert len(messages) == 1
    assert "labels='voc2007'" in messages[0] and "label_graph_from_targets" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="msrn"):
        timm.create_model(
            "msrn_resnet18", num_classes=4, label_graph=torch.ones(4, 4, dtype=torch.bool), **SMALL
        )
    assert "no label graph" not in caplog.text


def test_default_variant_is_official_everywhere():
    assert timm.create_model("msrn_resnet18", num_classes=3, **SMALL).variant == "official"
    assert msrn.MSRN(num_classes=3, backbone="resnet18", **SMALL).variant == "official"
    assert msrn.engine.TrainConfig().variant == "official"


def test_converter_names_cover_the_four_sets():
    from msrn.cli import build_parser
    from msrn.convert import resolve_label_names

    for key, name in (
        ("voc", "voc2007"),
        ("coco", "coco2014"),
        ("nuswide", "nuswide"),
        ("apparel", "apparel"),
    ):
        names = list(msrn.labels.load(name).names)
        assert resolve_label_names(key, len(names)) == names
        assert resolve_label_names(None, len(names)) == names  # the authors' order, by label count
    args = build_parser().parse_args(
        ["convert-official", "c.pth", "--glove", "g", "--adj", "a", "--out", "o", "--names", "apparel"]
    )
    assert args.names == "apparel"
