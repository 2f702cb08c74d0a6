"""The built-in label sets: the authors' names, GloVe vectors and statistics, shipped in the package."""

import csv

import numpy as np
import pytest
import torch

import msrn.labels
from msrn.graph import cooccurrence_statistics, label_graph_from_statistics

SHARED_FILES = {"voc2007": "voc", "coco2014": "coco", "nuswide": "nuswide", "apparel": "apparel"}


def test_available_sets_and_aliases():
    assert msrn.labels.available() == ("voc2007", "coco2014", "nuswide", "apparel")
    assert msrn.labels.load("voc").name == "voc2007" and msrn.labels.load("COCO").name == "coco2014"
    sizes = {name: msrn.labels.load(name).num_classes for name in msrn.labels.available()}
    assert sizes == {"voc2007": 20, "coco2014": 80, "nuswide": 81, "apparel": 11}


def test_unknown_name_lists_the_available_sets():
    with pytest.raises(
        ValueError, match=r"Unknown label set 'imagenet'.*voc2007 \(or voc\).*nuswide, apparel"
    ):
        msrn.labels.load("imagenet")


@pytest.mark.parametrize("name, edges", [("voc2007", 6), ("coco2014", 111), ("nuswide", 2), ("apparel", 6)])
def test_graph_is_msrn_graph_at_threshold(name, edges):
    labels = msrn.labels.load(name)
    graph = labels.graph()
    assert graph.dtype == torch.bool and graph.shape == (labels.num_classes,) * 2
    assert graph.diagonal().all() and int(graph.sum()) - labels.num_classes == edges == labels.num_edges()
    assert torch.equal(graph, label_graph_from_statistics(labels.cooccurrence, labels.counts, 0.4))
    assert labels.num_edges(0.2) > edges  # the threshold reaches the graph
    features = labels.features
    assert features.dtype == torch.float32 and features.shape == (labels.num_classes, 300)
    assert torch.isfinite(features).all()


def test_voc_edges_point_into_person():
    voc = msrn.labels.load("voc2007")
    graph, names = voc.graph(), voc.names
    person, chair = names.index("person"), names.index("chair")
    attended = {
        (names[i], names[j]) for i, j in (graph & ~torch.eye(20, dtype=torch.bool)).nonzero().tolist()
    }
    assert attended == {("person", n) for n in ("bicycle", "bottle", "diningtable", "horse", "motorbike")} | {
        ("chair", "diningtable")
    }
    assert graph[person, person] and graph[chair, chair]


@pytest.mark.parametrize("name", ["voc2007", "coco2014", "nuswide", "apparel"])
def test_shipped_sets_equal_the_authors_files(shared_dir, name):
    labels = msrn.labels.load(name)
    with np.load(shared_dir / "data" / "official" / f"{SHARED_FILES[name]}_label_graph.npz") as authors:
        assert labels.names == tuple(str(n) for n in authors["names"])
        np.testing.assert_array_equal(labels.features.numpy(), authors["glove"])
        if name != "apparel":
            np.testing.assert_array_equal(labels.counts, authors["label_counts"])
            np.testing.assert_array_equal(labels.cooccurrence, authors["cooccurrence"])


def test_apparel_statistics_count_the_authors_training_half(shared_dir):
    """The authors' Apparel statistics count each colour once; ours count the trainval labels."""
    labels = msrn.labels.load("apparel")
    with open(shared_dir / "data" / "official" / "apparel_labels.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "trainval"]
    targets = np.array([[name in row["labels"].split() for name in labels.names] for row in rows])
    cooccurrence, counts = cooccurrence_statistics(targets)
    np.testing.assert_array_equal(labels.counts, counts)
    np.testing.assert_array_equal(labels.cooccurrence, cooccurrence)
    assert labels.counts.sum() == 2 * len(rows) == 2 * 5692


def test_each_load_returns_fresh_tensors():
    first = msrn.labels.load("voc2007")
    first.features.zero_()
    assert msrn.labels.load("voc2007").features.abs().sum() > 0
