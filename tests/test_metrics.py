import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from msrn.metrics import average_precision, mean_average_precision, multilabel_metrics


def _random_problem(seed, n_images=60, n_classes=5, ties=False):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n_images, n_classes)) < 0.3).astype(int)
    targets[0] = 1  # every class has a positive
    scores = rng.random((n_images, n_classes))
    if ties:
        scores = np.round(scores * 4) / 4  # only five distinct values: many ties
    return scores, targets


def _reference_ap_without_ties(scores, positives):
    """ML-GCN's definition: mean over positives of the precision at each positive's rank."""
    order = np.argsort(-scores)
    hits, precisions = 0, []
    for rank, index in enumerate(order, start=1):
        if positives[index]:
            hits += 1
            precisions.append(hits / rank)
    return 100 * float(np.mean(precisions))


def test_ap_matches_sklearn_without_ties():
    scores, targets = _random_problem(0)
    ap = average_precision(scores, targets)
    for c in range(targets.shape[1]):
        assert ap[c] == pytest.approx(100 * average_precision_score(targets[:, c], scores[:, c]), abs=1e-9)
        assert ap[c] == pytest.approx(_reference_ap_without_ties(scores[:, c], targets[:, c]), abs=1e-9)


def test_ap_matches_sklearn_with_ties_and_ignores_tie_order():
    scores, targets = _random_problem(1, ties=True)
    ap = average_precision(scores, targets)
    for c in range(targets.shape[1]):
        assert ap[c] == pytest.approx(100 * average_precision_score(targets[:, c], scores[:, c]), abs=1e-9)
    permutation = np.random.default_rng(2).permutation(len(scores))
    np.testing.assert_allclose(average_precision(scores[permutation], targets[permutation]), ap)


def test_ignored_entries_are_dropped_from_the_ranking():
    scores, targets = _random_problem(3)
    ignore = np.random.default_rng(4).random(scores.shape) < 0.2
    ignore[0] = False
    ap = average_precision(torch.from_numpy(scores), torch.from_numpy(targets), torch.from_numpy(ignore))
    for c in range(targets.shape[1]):
        keep = ~ignore[:, c]
        expected = 100 * average_precision_score(targets[keep, c], scores[keep, c])
        assert ap[c] == pytest.approx(expected, abs=1e-9)


def test_class_without_positive_or_all_ignored_is_nan_and_left_out_of_map():
    scores = np.array([[0.9, 0.2, 0.3], [0.1, 0.8, 0.6], [0.4, 0.3, 0.9]])
    targets = np.array([[1, 0, 1], [0, 0, 0], [0, 0, 1]])
    ignore = np.zeros_like(targets, dtype=bool)
    ignore[:, 2] = True  # class 2: every entry ignored
    ap = average_precision(scores, targets, ignore)
    assert ap[0] == pytest.approx(100.0)
    assert math.isnan(ap[1]) and math.isnan(ap[2])
    assert mean_average_precision(scores, targets, ignore) == pytest.approx(100.0)
    assert math.isnan(mean_average_precision(scores, np.zeros_like(targets)))


def test_perfect_and_reversed_rankings():
    targets = np.array([[1], [1], [0], [0]])
    assert average_precision(np.array([[0.9], [0.8], [0.2], [0.1]]), targets)[0] == pytest.approx(100)
    # positives ranked last: precisions 1/3 and 2/4
    assert average_precision(np.array([[0.1], [0.2], [0.8], [0.9]]), targets)[0] == pytest.approx(
        100 * (1 / 3 + 2 / 4) / 2
    )


def _reference_threshold_metrics(scores, targets, ignore, threshold, top_k=None):
    n_images, n_classes = scores.shape
    nc, np_, ng = np.zeros(n_classes), np.zeros(n_classes), np.zeros(n_classes)
    for i in range(n_images):
        best = sorted(range(n_classes), key=lambda c: -scores[i, c])[:top_k] if top_k else range(n_classes)
        for c in range(n_classes):
            predicted = scores[i, c] >= threshold and c in best
            truth = targets[i, c] == 1 and not ignore[i, c]
            nc[c] += predicted and truth
            np_[c] += predicted
            ng[c] += truth
    cp = np.mean([nc[c] / (np_[c] if np_[c] else 1) for c in range(n_classes)])
    cr = np.mean([nc[c] / ng[c] for c in range(n_classes) if ng[c]])
    op, orr = nc.sum() / np_.sum(), nc.sum() / ng.sum()
    return {
        "CP": 100 * cp,
        "CR": 100 * cr,
        "CF1": 200 * cp * cr / (cp + cr),
        "OP": 100 * op,
        "OR": 100 * orr,
        "OF1": 200 * op * orr / (op + orr),
    }


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_threshold_metrics_against_reference(threshold):
    scores, targets = _random_problem(5, n_images=40, n_classes=6)
    ignore = np.random.default_rng(6).random(scores.shape) < 0.1
    ignore[0] = False
    result = multilabel_metrics(scores, targets, ignore, threshold=threshold, top_k=3)
    expected = _reference_threshold_metrics(scores, targets, ignore, threshold)
    expected_top3 = _reference_threshold_metrics(scores, targets, ignore, threshold, top_k=3)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name
        assert result[f"{name}_top3"] == pytest.approx(expected_top3[name], abs=1e-9), name
    assert result["mAP"] == pytest.approx(mean_average_precision(scores, targets, ignore))


def test_class_never_predicted_counts_as_precision_zero():
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    targets = np.array([[1, 1], [0, 0]])
    result = multilabel_metrics(scores, targets)
    assert result["CP"] == pytest.approx(100 * (0.5 + 0.0) / 2)
    assert result["CR"] == pytest.approx(100 * (1.0 + 0.0) / 2)
    assert result["OP"] == pytest.approx(50.0) and result["OR"] == pytest.approx(50.0)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same shape|shape of scores"):
        average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"only 1 \(present\), 0 \(absent\) and -1 \(unknown"):
        average_precision(np.zeros((2, 2)), np.array([[1, 0.5], [0, 1]]))
    with pytest.raises(ValueError, match="got 2"):
        average_precision(np.zeros((2, 2)), np.array([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([[np.nan]]), np.array([[1]]))
    with pytest.raises(ValueError, match="top_k"):
        multilabel_metrics(np.zeros((2, 2)), np.ones((2, 2)), top_k=3)


# ------------------------------------------------------------------ large label sets: lean and exact
def _tied_scores_and_targets(rng, images=300, classes=40):
    """float32 scores on a grid of 50 values (many ties), targets 1 / 0 / -1."""
    scores = (rng.integers(0, 50, size=(images, classes)) / 49).astype(np.float32)
    targets = rng.choice(np.array([1, 0, 0, -1], dtype=np.int8), size=(images, classes))
    return scores, targets


@pytest.mark.parametrize("threshold", [0.5, 0.3, "per-class", "on-scores"])
def test_float32_scores_give_the_float64_results_exactly(threshold):
    """float32 scores are not copied to float64 (9.6 GB at Open Images' test size); thresholds are
    still compared in float64, also where a float32 score lies just below a float64 threshold."""
    from msrn.metrics import fit_thresholds

    rng = np.random.default_rng(0)
    scores, targets = _tied_scores_and_targets(rng)
    if threshold == "per-class":
        threshold = fit_thresholds(scores, targets)  # midpoints between float32 scores
    elif threshold == "on-scores":
        # Just above a score that occurs: in float32 the two would be equal.
        threshold = float(scores[0, 1]) + 1e-9
        assert np.float32(threshold) == scores[0, 1]
    as_float64 = scores.astype(np.float64)
    for name in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "CF1_top3", "OF1_top3"):
        got = multilabel_metrics(scores, targets, threshold=threshold, top_k=3)[name]
        want = multilabel_metrics(as_float64, targets, threshold=threshold, top_k=3)[name]
        assert got == want or (math.isnan(got) and math.isnan(want)), name
    if np.ndim(threshold) == 0:  # and against the plain loops, in float64
        result = multilabel_metrics(scores, targets, threshold=threshold, top_k=3)
        for top_k, suffix in ((None, ""), (3, "_top3")):
            expected = _reference_threshold_metrics(as_float64, targets, targets < 0, threshold, top_k)
            for name, value in expected.items():
                assert result[name + suffix] == pytest.approx(value, abs=1e-9), name + suffix
    np.testing.assert_array_equal(fit_thresholds(scores, targets), fit_thresholds(as_float64, targets))
    np.testing.assert_array_equal(
        fit_thresholds(scores, targets, default=0.3), fit_thresholds(as_float64, targets, default=0.3)
    )


def test_blocks_of_rows_and_columns_give_the_results_of_whole_matrices(monkeypatch):
    import msrn.metrics
    from msrn.metrics import fit_thresholds

    rng = np.random.default_rng(1)
    scores, targets = _tied_scores_and_targets(rng, images=97)
    whole = multilabel_metrics(scores, targets, top_k=3)
    per_class = average_precision(scores, targets), fit_thresholds(scores, targets)
    # top-k: 14 blocks of 7 rows, the last short; per class: 20 blocks of 2 columns
    monkeypatch.setattr(msrn.metrics, "_BLOCK_ELEMENTS", 7 * scores.shape[1])
    assert multilabel_metrics(scores, targets, top_k=3) == whole
    monkeypatch.setattr(msrn.metrics, "_BLOCK_ELEMENTS", 2 * len(scores))
    np.testing.assert_array_equal(average_precision(scores, targets), per_class[0])
    np.testing.assert_array_equal(fit_thresholds(scores, targets), per_class[1])


def test_targets_are_checked_in_blocks():
    targets = np.zeros((5000, 1000), dtype=np.int8)  # 2 blocks of 2**22 entries: the odd value in the last
    targets[4999, 999] = 2
    with pytest.raises(ValueError, match="got 2"):
        multilabel_metrics(np.zeros(targets.shape, np.float32), targets)
