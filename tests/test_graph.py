import warnings

import numpy as np
import pytest
import torch

from msrn.graph import (
    conditional_probabilities,
    cooccurrence_statistics,
    edges_from_statistics,
    known_pair_counts,
    label_graph_from_statistics,
    label_graph_from_targets,
)


def _reference_mask(targets: np.ndarray, threshold: float) -> np.ndarray:
    """docs/design.md section 1 written with loops: mask[i, j] = i == j or P(i | j) >= t, where P(i | j)
    counts only the images that say whether i is there (target >= 0)."""
    n = targets.shape[1]
    present, known = targets > 0, targets >= 0
    mask = np.eye(n, dtype=bool)
    for j in range(n):
        for i in range(n):
            count_j = (present[:, j] & known[:, i]).sum()
            if i != j and count_j and (present[:, i] & present[:, j]).sum() / count_j >= threshold:
                mask[i, j] = True
    return mask


def _load(shared_dir, name):
    data = np.load(shared_dir / f"data/official/{name}_label_graph.npz")
    return [str(x) for x in data["names"]], data["cooccurrence"], data["label_counts"]


def test_voc_official_statistics_have_the_six_documented_edges(shared_dir):
    names, cooccurrence, counts = _load(shared_dir, "voc")
    edges = edges_from_statistics(cooccurrence, counts, threshold=0.4)
    found = {(names[i], names[j]) for i, j in zip(*np.nonzero(edges), strict=True)}
    assert found == {
        ("bicycle", "person"),
        ("bottle", "person"),
        ("diningtable", "person"),
        ("horse", "person"),
        ("motorbike", "person"),
        ("diningtable", "chair"),
    }
    # the attention mask is the transpose plus self-loops: person attends to five labels, chair to one
    mask = label_graph_from_statistics(cooccurrence, counts, threshold=0.4)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, torch.from_numpy(edges.T | np.eye(20, dtype=bool)))
    person, chair = names.index("person"), names.index("chair")
    assert sorted(names[j] for j in mask[person].nonzero().flatten().tolist() if j != person) == [
        "bicycle",
        "bottle",
        "diningtable",
        "horse",
        "motorbike",
    ]
    assert [names[j] for j in mask[chair].nonzero().flatten().tolist() if j != chair] == ["diningtable"]


def test_coco_official_statistics_have_111_edges(shared_dir):
    names, cooccurrence, counts = _load(shared_dir, "coco")
    edges = edges_from_statistics(cooccurrence, counts)  # default threshold 0.4
    assert edges.sum() == 111
    assert not edges.diagonal().any()
    # independent computation straight from the definition P(j | i) = co[i, j] / count[i]
    reference = (cooccurrence / counts[:, None].astype(np.float64)) >= 0.4
    np.fill_diagonal(reference, False)
    np.testing.assert_array_equal(edges, reference)
    # a lower threshold only adds edges
    assert edges_from_statistics(cooccurrence, counts, 0.3)[edges].all()


def test_from_targets_matches_statistics_and_reference():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 7)) < [0.5, 0.3, 0.1, 0.6, 0.05, 0.4, 0.2]).astype(np.int64)
    targets[:, 4] = targets[:, 4] | targets[:, 0]  # a label that implies another: a sure edge
    cooccurrence, counts = cooccurrence_statistics(targets)
    assert counts.tolist() == (targets > 0).sum(axis=0).tolist()
    from_targets = label_graph_from_targets(torch.from_numpy(targets).float(), threshold=0.35)
    from_statistics = label_graph_from_statistics(cooccurrence, counts, threshold=0.35)
    assert torch.equal(from_targets, from_statistics)
    np.testing.assert_array_equal(from_targets.numpy(), _reference_mask(targets, 0.35))
    # unknown entries (-1) are neither present nor counted in the denominators
    targets[rng.random(200) < 0.4, 1] = -1
    cooccurrence, _ = cooccurrence_statistics(targets)
    assert cooccurrence[1, 1] == (targets[:, 1] > 0).sum()
    from_targets = label_graph_from_targets(torch.from_numpy(targets).float(), threshold=0.35)
    with_pairs = label_graph_from_statistics(cooccurrence, known_pair_counts(targets), threshold=0.35)
    assert torch.equal(from_targets, with_pairs)
    np.testing.assert_array_equal(from_targets.numpy(), _reference_mask(targets, 0.35))


def test_difficult_positive_counts_as_present():
    targets = np.array([[1, 0.5], [1, 0], [0, 0]])  # any value > 0 counts (difficult kept as positive)
    cooccurrence, counts = cooccurrence_statistics(targets)
    assert counts.tolist() == [2, 1]
    assert cooccurrence[0, 1] == 1


def test_unseen_label_has_no_edges_and_no_warning():
    cooccurrence = np.array([[5, 3, 0], [3, 4, 0], [0, 0, 0]])
    counts = np.array([5, 4, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = conditional_probabilities(cooccurrence, counts)
        mask = label_graph_from_statistics(cooccurrence, counts, threshold=0.4)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[0], [1.0, 0.6, 0.0])
    np.testing.assert_allclose(probabilities[1], [0.75, 1.0, 0.0])
    np.testing.assert_array_equal(probabilities[2], 0.0)
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    targets = np.array([[1, 1, 0], [1, 0, 0]])  # label 2 never occurs
    assert label_graph_from_targets(targets)[2].tolist() == [False, False, True]


def test_threshold_is_inclusive_and_validated():
    cooccurrence = np.array([[10, 4], [4, 8]])
    counts = np.array([10, 8])  # P(1 | 0) = 0.4 exactly, P(0 | 1) = 0.5
    edges = edges_from_statistics(cooccurrence, counts, threshold=0.4)
    assert edges.tolist() == [[False, True], [True, False]]
    edges = edges_from_statistics(cooccurrence, counts, threshold=0.45)
    assert edges.tolist() == [[False, False], [True, False]]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold must be in"):
            edges_from_statistics(cooccurrence, counts, threshold=bad)


@pytest.mark.parametrize(
    "cooccurrence, counts, message",
    [
        (np.ones((2, 3)), np.ones(2), "square"),
        (np.ones((2, 2)), np.ones(3), "counts has 3 entries"),
        (np.array([[1.0, np.nan], [0, 1]]), np.ones(2), "finite"),
        (np.array([[1, -1], [0, 1]]), np.ones(2), "non-negative"),
    ],
)
def test_bad_statistics_are_clear_errors(cooccurrence, counts, message):
    with pytest.raises(ValueError, match=message):
        edges_from_statistics(cooccurrence, counts)


def test_bad_targets_are_clear_errors():
    with pytest.raises(ValueError, match=r"\[N, n\] label matrix"):
        label_graph_from_targets(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        label_graph_from_targets(np.array([[1.0, np.nan]]))
