"""The label graph at scale: the graph attention on an edge list equals the dense mask (forward and
gradients, to 1e-5), DiffPool and the compactness loss run at Open Images' 9,605 labels, MSRN keeps a
large graph as an edge list, and co-occurrence counts come from sparse per-image label lists."""

import warnings

import numpy as np
import pytest
import timm
import torch

import msrn
import msrn.graph as graph_module
from msrn.graph import (
    cooccurrence_from_label_lists,
    cooccurrence_statistics,
    count_label_edges,
    known_pair_counts,
    label_edges_from_label_lists,
    label_graph_from_targets,
)
from msrn.layers import DiffPool, GATLayer, LabelGroupEmbedding, compactness_loss, edge_index_from_mask
from msrn.models.msrn import DENSE_GRAPH_MAX_LABELS


def random_mask(n, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g) < p


def grads(module, inputs, output):
    return torch.autograd.grad(output, [*module.parameters(), *inputs])


@pytest.mark.parametrize("with_loops", [True, False])
def test_gat_on_an_edge_list_equals_the_dense_mask_forward_and_backward(with_loops):
    torch.manual_seed(0)
    layer = GATLayer(6, 5)
    mask = random_mask(9)
    mask[4] = False  # a node with no neighbour but itself
    edges = edge_index_from_mask(mask)
    if not with_loops:  # self-loops are added when the list lacks them
        edges = edges[:, edges[0] != edges[1]]
    x = torch.randn(9, 6, requires_grad=True)
    dense, sparse = layer(x, mask), layer(x, edges)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(dense)
    for a, b in zip(
        grads(layer, [x], (dense * weights).sum()), grads(layer, [x], (sparse * weights).sum()), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    alpha = layer.attention(x, edge_index_from_mask(mask))
    full = layer.with_self_loops(edge_index_from_mask(mask), 9)
    torch.testing.assert_close(alpha, layer.attention(x, mask)[full[0], full[1]])


def test_edge_index_from_mask_is_the_masks_nonzero_with_self_loops():
    mask = random_mask(7, seed=3)
    expected = (mask | torch.eye(7, dtype=torch.bool)).nonzero().t()
    assert torch.equal(edge_index_from_mask(mask), expected)


def test_gat_refuses_bad_edge_lists():
    layer = GATLayer(4, 3)
    with pytest.raises(ValueError, match=r"edge_index must be \[2, E\]"):
        layer(torch.randn(5, 4), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        layer(torch.randn(5, 4), torch.tensor([[0, 1], [2, 5]]))


def test_lge_diffpool_and_compactness_on_edges_equal_the_dense_path():
    # float64: the compactness loss sums large distances, whose float32 gradients round at ~1e-5.
    torch.manual_seed(1)
    lge = LabelGroupEmbedding(6, gat_dims=(5, 8), num_groups=3, input_proj_dim=4).double()
    features = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    mask = random_mask(11, seed=2)
    outputs = {}
    for kind, graph in (("dense", mask), ("edges", edge_index_from_mask(mask))):
        labels, groups, assignment = lge(features, graph)
        loss = compactness_loss(labels, groups, assignment, squared=False) + labels.square().mean()
        outputs[kind] = (labels, groups, assignment, grads(lge, [features], loss))
    for a, b in zip(outputs["dense"][:3], outputs["edges"][:3], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for a, b in zip(outputs["dense"][3], outputs["edges"][3], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_mean_pooling_and_mean_compactness():
    torch.manual_seed(2)
    pool = DiffPool(8, 3, pooling="mean")
    x, mask = torch.randn(6, 8), random_mask(6, seed=5)
    groups, assignment = pool(x, mask)
    z = pool.embed(x, mask)
    torch.testing.assert_close(groups, (assignment.T @ z) / assignment.sum(dim=0, keepdim=True).T)
    labels = torch.randn(6, 8)
    for squared in (True, False):
        total = compactness_loss(labels, groups, assignment, squared)
        torch.testing.assert_close(compactness_loss(labels, groups, assignment, squared, "mean"), total / 6)
    with pytest.raises(ValueError, match="pooling"):
        DiffPool(8, 3, pooling="max")
    with pytest.raises(ValueError, match="reduction"):
        compactness_loss(labels, groups, assignment, reduction="none")


def test_diffpool_and_compactness_run_at_open_images_size():
    n, k = 9605, 8
    g = torch.Generator().manual_seed(0)
    neighbours = torch.randint(0, n, (n * k,), generator=g)
    edges = torch.stack([torch.arange(n).repeat_interleave(k), neighbours])
    lge = LabelGroupEmbedding(16, gat_dims=(16, 16), num_groups=4, group_pooling="mean")
    features = torch.randn(n, 16)
    labels, groups, assignment = lge(features, edges)
    loss = compactness_loss(labels, groups, assignment, reduction="mean") + labels.mean()
    loss.backward()
    assert labels.shape == (n, 16) and groups.shape == (4, 16) and assignment.shape == (n, 4)
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in lge.parameters())
    # Groups as means keep the scale of the labels (eq. 5's sums would be about n / m times larger).
    assert groups.abs().max() <= labels.abs().max() + 1
    assert isinstance(lge.diffpool, DiffPool)


SMALL = dict(backbone="resnet18", embed_dim=16, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)


@pytest.mark.parametrize("head", ["paper", "label_wise"])
def test_msrn_with_an_edge_list_gives_the_dense_graphs_logits(head):
    mask = random_mask(6, seed=4)
    edges = edge_index_from_mask(mask)
    edges = edges[:, torch.randperm(edges.shape[1], generator=torch.Generator().manual_seed(0))]
    models = {}
    for kind, graph in (("dense", mask), ("edges", edges)):
        torch.manual_seed(0)
        models[kind] = timm.create_model(
            "msrn_custom", num_classes=6, hidden_dim=32, label_graph=graph, head=head, **SMALL
        )
    dense, sparse = models["dense"], models["edges"]
    assert dense.label_graph.dtype == torch.bool and sparse.label_graph.dtype == torch.int64
    assert torch.equal(sparse.label_graph, edge_index_from_mask(mask))  # canonical: sorted, self-loops
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse.compactness_loss(), dense.compactness_loss(), rtol=1e-5, atol=1e-5)


def test_large_label_sets_keep_their_graph_as_an_edge_list():
    n = DENSE_GRAPH_MAX_LABELS + 1
    small = dict(SMALL, embed_dim=8, gat_hidden_dim=8)
    with pytest.warns(msrn.MSRNWarning, match=f"MSRN with {n} labels and no label graph"):
        model = timm.create_model(
            "msrn_custom", num_classes=n, head="label_wise", num_query_groups=4, **small
        )
    assert model.label_graph.shape == (2, n) and model.label_graph.dtype == torch.int64  # self-loops
    assert count_label_edges(model.label_graph) == 0
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[0, 1] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", msrn.MSRNWarning)  # one edge: no warning of an empty graph
        model.reset_classifier(n, label_graph=mask)
    assert model.label_graph.shape == (2, n + 1)
    logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, n) and torch.isfinite(logits).all()


def test_a_model_of_many_labels_builds_on_the_meta_device():
    with torch.device("meta"):  # e.g. to count parameters without allocating them
        model = timm.create_model(
            "msrn_custom", num_classes=DENSE_GRAPH_MAX_LABELS + 1, head="label_wise", **SMALL
        )
    assert model.label_graph.is_meta and sum(p.numel() for p in model.parameters()) > 0


def test_msrn_refuses_bad_edge_lists():
    with pytest.raises(ValueError, match=r"label indices in \[0, 4\)"):
        timm.create_model("msrn_custom", num_classes=4, label_graph=torch.tensor([[0, 1], [2, 4]]), **SMALL)
    with pytest.raises(ValueError, match=r"\[2, E\] integer edge list"):
        timm.create_model(
            "msrn_custom", num_classes=4, label_graph=torch.ones(3, 4, dtype=torch.bool), **SMALL
        )


# ------------------------------------------------------------------------------ sparse counts
def _label_matrix(num_images=300, num_labels=12, seed=0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((num_images, num_labels)) < 0.25).astype(np.float32)
    targets[:, 3] = np.maximum(targets[:, 3], targets[:, 1])  # label 1 brings label 3
    unknown = (rng.random(targets.shape) < 0.2) & (targets == 0)
    return targets, unknown


def _csr(mask):
    rows = [np.nonzero(row)[0] for row in mask]
    return np.concatenate([[0], np.cumsum([len(r) for r in rows])]), np.concatenate(rows)


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.6])
def test_edges_from_label_lists_equal_the_dense_graph(threshold):
    targets, unknown = _label_matrix()
    positives = _csr(targets > 0)
    expected = label_graph_from_targets(targets, threshold).nonzero().t()
    assert torch.equal(label_edges_from_label_lists(positives, 12, threshold), expected)
    partial = label_graph_from_targets(targets, threshold, unknown=unknown).nonzero().t()
    negatives = _csr((targets == 0) & ~unknown)
    assert torch.equal(label_edges_from_label_lists(positives, 12, threshold, negatives=negatives), partial)
    assert not torch.equal(expected, partial)


def test_sparse_statistics_equal_the_dense_ones_in_chunks_and_with_repeats(monkeypatch):
    targets, unknown = _label_matrix(num_images=50, num_labels=7, seed=1)
    co, counts = cooccurrence_statistics(targets)
    known = known_pair_counts(targets, unknown)
    indptr, indices = _csr(targets > 0)
    # A label listed twice for an image counts once, and lists need not be sorted.
    assert indptr[2] > indptr[1]
    indices = np.insert(indices, indptr[2], indices[indptr[1]])  # image 1 lists its first label again
    indptr = indptr + (np.arange(len(indptr)) >= 2)
    indices[indptr[0] : indptr[1]] = indices[indptr[0] : indptr[1]][::-1].copy()
    monkeypatch.setattr(graph_module, "_PAIRS_PER_CHUNK", 5)  # many chunks, merged at the end
    stats = cooccurrence_from_label_lists((indptr, indices), 7, negatives=_csr((targets == 0) & ~unknown))
    i, j = stats.pairs
    assert (i != j).all() and np.array_equal(stats.counts, counts)
    assert np.array_equal(stats.cooccurrence, co[i, j]) and np.array_equal(stats.known, known[i, j])
    off_diagonal = co.copy()
    np.fill_diagonal(off_diagonal, 0)
    assert len(i) == np.count_nonzero(off_diagonal)  # every pair seen together, and only those


def test_sparse_counts_refuse_bad_lists():
    with pytest.raises(ValueError, match="pair"):
        cooccurrence_from_label_lists(np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="end at len"):
        cooccurrence_from_label_lists((np.array([0, 2]), np.array([1])), 3)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        cooccurrence_from_label_lists((np.array([0, 1]), np.array([3])), 3)
    with pytest.raises(ValueError, match="both as present and as absent"):
        cooccurrence_from_label_lists(
            (np.array([0, 1]), np.array([2])), 3, negatives=(np.array([0, 2]), np.array([0, 2]))
        )
    with pytest.raises(ValueError, match="same images"):
        cooccurrence_from_label_lists((np.array([0, 1]), np.array([2])), 3, negatives=(np.array([0]), []))
    with pytest.raises(ValueError, match="threshold"):
        label_edges_from_label_lists((np.array([0, 1]), np.array([2])), 3, threshold=0.0)


def test_trainer_builds_a_sparse_sets_graph_from_its_label_lists(monkeypatch):
    import msrn.engine.builders as builders
    from msrn.engine.builders import _label_graph

    targets, unknown = _label_matrix(num_images=80, num_labels=9, seed=2)
    targets = np.where(unknown, -1, targets).astype(np.int64)  # 1 present, 0 absent, -1 unknown

    class SparseSet:  # what msrn.data.OpenImagesDataset offers: classes and label_lists()
        classes = [f"c{i}" for i in range(9)]

        def label_lists(self):
            return _csr(targets == 1), _csr(targets == 0)

    class DenseSet:
        classes = SparseSet.classes

    DenseSet.targets = targets
    dense = _label_graph(DenseSet(), 0.4)
    # up to DENSE_GRAPH_MAX_LABELS a mask, as MSRN stores it (and as checkpoints of few labels hold it)
    assert dense.dtype == torch.bool and torch.equal(_label_graph(SparseSet(), 0.4), dense)
    monkeypatch.setattr(builders, "DENSE_GRAPH_MAX_LABELS", 8)
    sparse = _label_graph(SparseSet(), 0.4)
    assert sparse.dtype == torch.int64 and torch.equal(sparse, dense.nonzero().t())
    assert count_label_edges(sparse) == count_label_edges(dense) == int(dense.sum()) - 9 > 0
