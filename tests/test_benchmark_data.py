"""NUS-WIDE and Apparel readers on small trees written in the real on-disk layouts."""

import csv
import logging
import pathlib

import numpy as np
import pytest
from PIL import Image

import msrn.labels
from msrn.data import ApparelDataset, NUSWIDEDataset, apparel_authors_split, eval_transform

NUSWIDE = msrn.labels.load("nuswide").names
APPAREL = msrn.labels.load("apparel").names


def _image(path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (200, 40, 40)).save(path)


# ----------------------------------------------------------------------------------------- NUS-WIDE
NUSWIDE_SPLITS = {
    "Train": [
        ("actor\\0001_11.jpg", ["clouds", "sky"]),
        ("airport\\0002_22.jpg", ["airport", "plane"]),
        ("zebra\\0003_33.jpg", []),
        ("C:\\ImageData\\Flickr\\zebra\\0004_44.jpg", ["zebra", "animal"]),
    ],
    "Test": [("sky\\0005_55.jpg", ["sky"]), ("map\\0006_66.jpg", ["map", "sign"])],
}


def _write_nuswide(root: pathlib.Path, missing=(), concepts_file=True) -> pathlib.Path:
    (root / "ImageList").mkdir(parents=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    if concepts_file:  # alphabetical, as distributed; not the authors' label order
        (root / "Concepts81.txt").write_text("".join(f"{name}\r\n" for name in sorted(NUSWIDE)))
    for split, rows in NUSWIDE_SPLITS.items():
        (root / "ImageList" / f"{split}Imagelist.txt").write_text(
            "".join(f"{image}\r\n" for image, _ in rows)
        )
        for concept in NUSWIDE:
            values = "".join(
                f"{int(concept in names)} \r\n" for _, names in rows
            )  # "0 \r\n" as in the download
            (labels_dir / f"Labels_{concept}_{split}.txt").write_text(values)
        for image, _ in rows:
            if image not in missing:
                _image(root / "Flickr" / image.split("Flickr\\")[-1].replace("\\", "/"))
    return root


def _expected_targets(rows):
    targets = np.zeros((len(rows), len(NUSWIDE)), dtype=np.int64)
    for row, (_, names) in enumerate(rows):
        targets[row, [NUSWIDE.index(name) for name in names]] = 1
    return targets


@pytest.mark.parametrize("concepts_file", [True, False])
def test_nuswide_official_layout_maps_labels_by_name(tmp_path, concepts_file):
    root = _write_nuswide(tmp_path / "NUS-WIDE", concepts_file=concepts_file)
    train = NUSWIDEDataset(root, "train")
    assert train.classes == list(NUSWIDE) and len(train) == 4 and train.missing_images == []
    np.testing.assert_array_equal(train.targets, _expected_targets(NUSWIDE_SPLITS["Train"]))
    assert train.image_paths[0] == str(root / "Flickr" / "actor" / "0001_11.jpg")
    assert train.image_paths[3] == str(root / "Flickr" / "zebra" / "0004_44.jpg")
    test = NUSWIDEDataset(root, "test", transform=eval_transform(16))
    image, target = test[1]
    assert image.shape == (3, 16, 16) and set(target.tolist()) == {0.0, 1.0}
    assert {NUSWIDE[i] for i in target.nonzero().flatten().tolist()} == {"map", "sign"}


def test_nuswide_missing_images_counted_refused_or_left_out(tmp_path, caplog):
    root = _write_nuswide(tmp_path, missing={"airport\\0002_22.jpg", "zebra\\0003_33.jpg"})
    with pytest.raises(
        FileNotFoundError,
        match=r"NUS-WIDE train: 2 of 4 listed images are not on disk.*"
        r"0002_22\.jpg.*skip_missing_images=True",
    ):
        NUSWIDEDataset(root, "train")
    with caplog.at_level(logging.WARNING, logger="msrn.data"):
        train = NUSWIDEDataset(root, "train", skip_missing_images=True)
    assert "2 of 4 listed images are not on disk" in caplog.text
    assert len(train) == 2 and [pathlib.Path(p).name for p in train.missing_images] == [
        "0002_22.jpg",
        "0003_33.jpg",
    ]
    kept = [NUSWIDE_SPLITS["Train"][0], NUSWIDE_SPLITS["Train"][3]]
    np.testing.assert_array_equal(train.targets, _expected_targets(kept))
    assert len(NUSWIDEDataset(root, "train", skip_bad_images=True)) == 2


def test_nuswide_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No NUS-WIDE tree.*TrainImagelist\.txt"):
        NUSWIDEDataset(tmp_path, "train")
    root = _write_nuswide(tmp_path / "n")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        NUSWIDEDataset(root, "val")
    (root / "Groundtruth/TrainTestLabels/Labels_sky_Train.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"Labels_sky_Train\.txt must hold one 0 or 1 per line.*4 images"):
        NUSWIDEDataset(root, "train")
    (root / "Groundtruth/TrainTestLabels/Labels_sky_Train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Labels_sky_Train\.txt"):
        NUSWIDEDataset(root, "train")


def test_nuswide_authors_csv(tmp_path):
    images = tmp_path / "images"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(images / name)
    csv_file = tmp_path / "nus_wide.csv"
    csv_file.write_text(  # pandas-style: an index column and a header
        ",image,label,split_name\n0,a.jpg,\"['clouds', 'sky']\",train\n1,b.jpg,[],train\n"
        "2,c.jpg,\"['zebra']\",val\n3,gone.jpg,\"['sky']\",train\n"
    )
    with pytest.raises(FileNotFoundError, match=r"1 of 3 listed images.*gone\.jpg"):
        NUSWIDEDataset(images, "train", csv_file=csv_file)
    train = NUSWIDEDataset(images, "train", csv_file=csv_file, skip_missing_images=True)
    np.testing.assert_array_equal(train.targets, _expected_targets([("a", ["clouds", "sky"]), ("b", [])]))
    assert len(NUSWIDEDataset(images, "val", csv_file=csv_file)) == 1
    with pytest.raises(ValueError, match=r"no row of split 'test'; its splits: \['train', 'val'\]"):
        NUSWIDEDataset(images, "test", csv_file=csv_file)
    csv_file.write_text("image,labels,split\na.jpg,clouds sky,train\n")
    with pytest.raises(ValueError, match=r"line 2: the labels must be a Python-style list"):
        NUSWIDEDataset(images, "train", csv_file=csv_file)
    csv_file.write_text("a.jpg,\"['unicorn']\",train\n")
    with pytest.raises(ValueError, match=r"line 1: unknown label\(s\) \['unicorn'\]"):
        NUSWIDEDataset(images, "train", csv_file=csv_file)


# ------------------------------------------------------------------------------------------ Apparel
def test_apparel_split_is_the_authors(shared_dir):
    with open(shared_dir / "data" / "official" / "apparel_labels.csv", newline="") as handle:
        expected = [
            (row["image"], tuple(row["labels"].split()), row["split"]) for row in csv.DictReader(handle)
        ]
    assert apparel_authors_split() == expected
    assert len(expected) == 11384


@pytest.fixture(scope="module")
def authors_split():
    table = apparel_authors_split()
    return {
        split: [(image, labels) for image, labels, s in table if s == split] for split in ("trainval", "test")
    }


def _pick(rows, wanted):
    """The first image of each wanted (colour, item) pair."""
    return [next(row for row in rows if row[1] == pair) for pair in wanted]


def test_apparel_public_layout(tmp_path, authors_split, caplog):
    train_rows = _pick(authors_split["trainval"], [("black", "dress"), ("red", "shoes"), ("blue", "pants")])
    test_rows = _pick(authors_split["test"], [("white", "shorts")])
    for image, (colour, item) in train_rows + test_rows:
        _image(tmp_path / f"{colour}_{item}" / image)
    _image(tmp_path / "black_dress" / "not-in-the-table.jpg")
    _image(tmp_path / "silver_shoes" / "x.jpg")  # a pair outside the 11 labels
    (tmp_path / "black_dress" / "notes.txt").write_text("not an image")
    with pytest.raises(
        FileNotFoundError, match=r"Apparel trainval: 5689 of 5692 listed images are not on disk"
    ):
        ApparelDataset(tmp_path, "trainval")
    with caplog.at_level(logging.INFO, logger="msrn.data"):
        train = ApparelDataset(tmp_path, "trainval", skip_missing_images=True)
    assert "silver_shoes" in caplog.text and "1 image(s) under" in caplog.text
    assert len(train) == 3 and len(train.missing_images) == 5689 and train.classes == list(APPAREL)
    order = [image for image, _ in authors_split["trainval"]]
    assert [pathlib.Path(p).name for p in train.image_paths] == sorted(
        (r[0] for r in train_rows), key=order.index
    )
    for path, target in zip(train.image_paths, train.targets, strict=True):
        colour, item = pathlib.Path(path).parent.name.split("_")
        assert {APPAREL[i] for i in np.flatnonzero(target)} == {colour, item}
    test = ApparelDataset(tmp_path, "test", skip_missing_images=True, transform=eval_transform(16))
    image, target = test[0]
    assert len(test) == 1 and image.shape == (3, 16, 16) and target.sum() == 2
    assert target[APPAREL.index("white")] == 1 and target[APPAREL.index("shorts")] == 1


def test_apparel_file_in_two_folders_keeps_the_later_folder(tmp_path, authors_split):
    image, labels = _pick(authors_split["trainval"], [("red", "shoes")])[0]
    _image(tmp_path / "red_dress" / image)
    _image(tmp_path / "red_shoes" / image)
    train = ApparelDataset(tmp_path, "trainval", skip_missing_images=True)
    assert len(train) == 1 and pathlib.Path(train.image_paths[0]).parent.name == "red_shoes"


def test_apparel_flat_folder_with_and_without_labels_table(tmp_path, authors_split):
    rows = _pick(authors_split["test"], [("green", "shirt"), ("brown", "shoes")])
    for image, _ in rows:
        _image(tmp_path / "images" / image)
    test = ApparelDataset(tmp_path / "images", "test", skip_missing_images=True)  # the authors' labels
    assert sorted(pathlib.Path(p).name for p in test.image_paths) == sorted(image for image, _ in rows)
    assert {tuple(APPAREL[i] for i in np.flatnonzero(t)) for t in test.targets} == {
        ("green", "shirt"),
        ("brown", "shoes"),
    }
    table = tmp_path / "labels.csv"
    table.write_text(
        "image,labels,split\n" + "".join(f"{image},{' '.join(labels)},whatever\n" for image, labels in rows)
    )
    relabelled = ApparelDataset(tmp_path / "images", "test", labels_file=table, skip_missing_images=True)
    np.testing.assert_array_equal(relabelled.targets, test.targets)
    table.write_text("file,tags\n")
    with pytest.raises(ValueError, match="needs the columns 'image' and 'labels'"):
        ApparelDataset(tmp_path / "images", "test", labels_file=table)


def test_apparel_errors(tmp_path):
    with pytest.raises(ValueError, match="split must be 'trainval' or 'test'"):
        ApparelDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="Apparel folder not found"):
        ApparelDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"No Apparel images under .*<colour>_<item>"):
        ApparelDataset(tmp_path)
