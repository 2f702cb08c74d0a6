"""The validation split (stratified hold-out, split files) and per-class thresholds fitted on it."""

import json

import numpy as np
import pytest
import timm

import msrn
from msrn.data import CSVDataset, read_holdout_file, stratified_holdout
from msrn.metrics import fit_thresholds, multilabel_metrics


# ------------------------------------------------------------------------------------ hold-out split
def _rare_label_targets(num_images=300, seed=3):
    rng = np.random.default_rng(seed)
    frequencies = np.array([0.01, 0.02, 0.05, 0.1, 0.3, 0.6])  # label 0: 3 positives
    return (rng.random((num_images, len(frequencies))) < frequencies).astype(np.int64)


def test_stratified_holdout_is_seeded_sized_and_keeps_label_shares():
    targets = _rare_label_targets()
    held = stratified_holdout(targets, 0.2, seed=0)
    assert len(held) == 60 and np.all(np.diff(held) > 0)
    np.testing.assert_array_equal(held, stratified_holdout(targets.copy(), 0.2, seed=0))
    assert not np.array_equal(held, stratified_holdout(targets, 0.2, seed=1))
    positives, in_val = targets.sum(axis=0), targets[held].sum(axis=0)
    # Each label's share of held-out positives is its fair share, within one image.
    assert np.all(np.abs(in_val - 0.2 * positives) <= 1), (in_val, positives)
    # A label with a handful of positives keeps at least one on each side when it has two or more.
    rare = targets[:, 0].sum()
    assert rare >= 2 and 0 < in_val[0] < rare


def test_stratified_holdout_ignored_entries_and_bounds():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    held = stratified_holdout(targets, 0.5, seed=0)
    assert len(held) == 3
    assert targets[held].sum(axis=0).tolist() == [1, 1]
    assert len(stratified_holdout(targets, 0.01)) == 1 and len(stratified_holdout(targets, 0.99)) == 5
    ignore = np.zeros_like(targets, dtype=bool)
    ignore[:2, 0] = True  # label 0's entries are ignored (VOC difficult): not positives
    assert len(stratified_holdout(targets, 0.5, ignore=ignore)) == 3
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="between 0 and 1"):
            stratified_holdout(targets, fraction)
    with pytest.raises(ValueError, match="at least 2"):
        stratified_holdout(targets[:1], 0.5)


def test_holdout_file_names_images_by_path_file_name_or_id(tmp_path):
    paths = [str(tmp_path / "voc" / "JPEGImages" / f"00000{i}.jpg") for i in range(5)]
    split = tmp_path / "val.txt"
    split.write_text(f"# held out\n000003\n\nJPEGImages/000001.jpg\n{paths[4]}\n")
    assert read_holdout_file(split, paths).tolist() == [1, 3, 4]
    split.write_text("\ufeff000002.jpg\r\n")  # a BOM and Windows line ends are fine
    assert read_holdout_file(split, paths).tolist() == [2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("000001\nnot_there.jpg\n", r"line 2: 'not_there.jpg' is not an image of the training split"),
        ("000001\n000001.jpg\n", r"line 2: '000001.jpg' names the image already listed on line 1"),
        ("a.jpg\n", r"line 1: 'a.jpg' matches 2 training images"),
        ("# nothing\n\n", "lists no image"),
        ("000001\n000002\nx/a.jpg\ny/a.jpg\n", "lists all 4 training images"),
    ],
)
def test_bad_holdout_files_are_refused_naming_the_line(tmp_path, text, message):
    paths = ["d/000001.jpg", "d/000002.jpg", "d/x/a.jpg", "d/y/a.jpg"]
    split = tmp_path / "val.txt"
    split.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_holdout_file(split, paths)


def test_holdout_file_missing_or_not_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match="one training image per line"):
        read_holdout_file(tmp_path / "missing.txt", ["a.jpg"])
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_holdout_file(latin, ["a.jpg", "b.jpg"])


def test_subset_keeps_the_per_image_attributes_and_takes_a_transform(tmp_path):
    from PIL import Image

    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "train.csv").write_text("image,labels\na.png,cat\nb.png,dog\nc.png,cat;dog\n")
    dataset = CSVDataset(tmp_path / "train.csv")
    part = dataset.subset([2, 0], transform=lambda image: image.size)
    assert [p.split("/")[-1] for p in part.image_paths] == ["c.png", "a.png"]
    assert part.targets.tolist() == [[1, 1], [1, 0]] and part.difficult.shape == (2, 2)
    assert part[0][0] == (8, 8) and dataset.transform is None and len(dataset) == 3
    with pytest.raises(IndexError):
        dataset.subset([3])


# --------------------------------------------------------------------------------------- thresholds
def test_fit_thresholds_maximises_each_class_f1_with_the_documented_fallbacks():
    scores = np.array(
        [
            [0.30, 0.9, 0.2, 0.70, 0.6],
            [0.20, 0.8, 0.1, 0.60, 0.4],
            [0.10, 0.3, 0.3, 0.55, 0.9],
            [0.05, 0.2, 0.4, 0.52, 0.7],
        ]
    )
    targets = np.array(
        [
            [1, 1, 0, 1, 1],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    ignore = np.zeros_like(targets, dtype=bool)
    ignore[2, 4] = True  # the highest score of class 4 is left out
    thresholds = fit_thresholds(scores, targets, ignore=ignore)
    # Class 0: both positives score below 0.5 (F1 0 there); the cut under 0.20 gives F1 1: halfway
    # between 0.20 and the next lower score 0.10.
    assert thresholds[0] == pytest.approx(0.15)
    # Class 1: 0.5 already separates the classes (F1 1): nothing beats it, it stays.
    assert thresholds[1] == 0.5
    # Class 2: no positive: the fallback 0.5.
    assert thresholds[2] == 0.5
    # Class 3 (0.70+, 0.60-, 0.55+, 0.52-): at 0.5 all four are predicted (F1 0.67); the cuts give
    # 0.67, 0.5, 0.8, 0.67: the best takes the top three, halfway between 0.55 and 0.52.
    assert thresholds[3] == pytest.approx(0.535)
    # Class 4 without its ignored entry (0.6+, 0.4-, 0.7-): the best cut (top two, F1 0.67) only
    # equals the F1 at 0.5, which therefore stays.
    assert thresholds[4] == 0.5
    assert thresholds.dtype == np.float64 and thresholds.shape == (5,)
    # Fitted thresholds never lower a class's F1 on the scores they were fitted on.
    at_half = multilabel_metrics(scores, targets, ignore=ignore)
    fitted = multilabel_metrics(scores, targets, ignore=ignore, threshold=thresholds)
    assert fitted["CR"] >= at_half["CR"] and fitted["CF1"] >= at_half["CF1"]


def test_fit_thresholds_ties_and_a_class_predicted_everywhere():
    scores = np.array([[0.4], [0.4], [0.3]])
    targets = np.array([[1], [1], [1]])
    # Every image positive: the best cut takes all three (F1 1), halfway between 0.3 and 0.
    assert fit_thresholds(scores, targets)[0] == pytest.approx(0.15)
    # Tied scores form one cut: with one tied positive and one tied negative no cut separates them.
    scores, targets = np.array([[0.3], [0.3], [0.1]]), np.array([[1], [0], [0]])
    assert fit_thresholds(scores, targets)[0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="default"):
        fit_thresholds(scores, targets, default=1.0)


def test_multilabel_metrics_takes_one_threshold_per_class():
    scores = np.array([[0.3, 0.6], [0.1, 0.4]])
    targets = np.array([[1, 0], [0, 1]])
    per_class = multilabel_metrics(scores, targets, threshold=np.array([0.2, 0.35]))
    assert per_class["CR"] == pytest.approx(100.0)
    assert per_class["OP"] == pytest.approx(100 * 2 / 3)
    assert multilabel_metrics(scores, targets, threshold=[0.5, 0.5]) == multilabel_metrics(scores, targets)
    with pytest.raises(ValueError, match="one per class"):
        multilabel_metrics(scores, targets, threshold=[0.5, 0.5, 0.5])


def test_label_thresholds_survive_save_pretrained_and_loading(tmp_path):
    model = timm.create_model(
        "msrn_resnet18", num_classes=3, label_names=["a", "b", "c"], embed_dim=16, hidden_dim=32
    )
    model.pretrained_cfg = {**model.pretrained_cfg, "label_thresholds": [0.25, 0.5, 0.75]}
    msrn.save_pretrained(model, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["pretrained_cfg"]
    assert saved["label_thresholds"] == [0.25, 0.5, 0.75]
    loaded = timm.create_model(f"local-dir:{tmp_path / 'm'}")
    assert loaded.pretrained_cfg["label_thresholds"] == [0.25, 0.5, 0.75]
    # Other labels: the thresholds belonged to the old ones.
    assert (
        "label_thresholds"
        not in timm.create_model(f"local-dir:{tmp_path / 'm'}", num_classes=2).pretrained_cfg
    )
    loaded.reset_classifier(3, label_names=["x", "y", "z"])
    assert "label_thresholds" not in loaded.pretrained_cfg
    saved["label_thresholds"] = [0.5, "high", 0.5]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["pretrained_cfg"] = saved
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    # refused at load, naming the file (issue 22: never silently replaced by 0.5)
    with pytest.raises(
        ValueError, match=r"config\.json: pretrained_cfg\.label_thresholds must be 3 probabilities"
    ):
        timm.create_model(f"local-dir:{tmp_path / 'm'}")
