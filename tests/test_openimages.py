"""Open Images (msrn.data.OpenImagesDataset) on small trees in the official V6 layout: the targets,
the label-file reader, missing images, the errors a user can cause, and `msrn train --dataset
openimages` end to end."""

import json
import logging
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_training import TINY_ARGS, one_thread

from msrn import MSRNWarning
from msrn.cli import main as cli_main
from msrn.data import OpenImagesDataset, create_dataset
from msrn.data import openimages as openimages_module
from msrn.data._oid_labels import read_image_labels
from msrn.engine import load_trained_model, run_test_data

TRAINABLE = ["/m/0cat", "/m/0dog", "/m/0bow1", "/m/0bow2", "/m/0zzz"]  # /m/0zzz: on no image
DESCRIPTIONS = "\n".join(
    [
        "LabelName,DisplayName",
        "/m/0cat,Cat",
        '/m/0dog,"Dog, domestic ""good"""',  # a display name with a comma and quotes
        "/m/0bow1,Bow",
        "/m/0bow2,Bow",  # two labels of one display name
        "/m/0zzz,Zebra",
        "/m/0other,Not trainable",
    ]
)
CLASSES = ["Cat", 'Dog, domestic "good"', "Bow (/m/0bow1)", "Bow (/m/0bow2)", "Zebra"]
HEADER = "ImageID,Source,LabelName,Confidence\n"
SPLITS = {
    "train": """000000000000000b,crowdsource-verification,/m/0dog,1
000000000000000b,verification,/m/0bow1,1
000000000000000a,verification,/m/0cat,1
000000000000000a,verification,/m/0dog,0
000000000000000a,verification,/m/0other,1
000000000000000c,verification,/m/0other,1
000000000000000d,verification,/m/0cat,0
000000000000000e,verification,/m/0cat,1
""",
    "validation": "00000000000000f1,verification,/m/0cat,1\n00000000000000f1,verification,/m/0bow2,0\n",
    "test": """00000000000000f1,verification,/m/0cat,1
00000000000000f1,verification,/m/0dog,0
00000000000000f2,verification,/m/0dog,1
00000000000000f2,verification,/m/0bow2,1
00000000000000f2,verification,/m/0cat,0
""",
}
MISSING = {"train": {"000000000000000e"}}
# Targets of the train images in ImageID order (a, b, c, d; e is missing): 1 / 0 / -1 (unknown).
TRAIN_TARGETS = [
    [1, 0, -1, -1, -1],
    [-1, 1, 1, -1, -1],
    [-1, -1, -1, -1, -1],  # only a non-trainable label
    [0, -1, -1, -1, -1],
]


def write_tree(root: pathlib.Path) -> pathlib.Path:
    """A small Open Images tree with the official file names and formats, and real JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oidv6-classes-trainable.txt").write_text("".join(name + "\n" for name in TRAINABLE))
    (root / "oidv6-class-descriptions.csv").write_text(DESCRIPTIONS)
    for split, rows in SPLITS.items():
        (root / openimages_module.OPENIMAGES_LABEL_FILES[split]).write_text(HEADER + rows)
        for number, image_id in enumerate(sorted({row.split(",")[0] for row in rows.splitlines()})):
            if image_id not in MISSING.get(split, ()):
                (root / split).mkdir(exist_ok=True)
                colour = (40 * number % 256, 90, 200)
                Image.new("RGB", (20, 16), colour).save(root / split / f"{image_id}.jpg", quality=90)
    return root


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "open-images")


def test_targets_classes_and_sparse_labels(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="msrn.data"):
        train = OpenImagesDataset(tree, "train", skip_missing_images=True)
    assert "Open Images train: 1 of 5 listed images are not on disk; leaving them out" in caplog.text
    assert train.classes == CLASSES and train.label_ids == TRAINABLE and train.num_classes == 5
    assert [i.decode() for i in train.image_ids] == [f"00000000000000{c}" for c in "0a 0b 0c 0d".split()]
    assert list(train.missing_images) == [str(tree / "train" / "000000000000000e.jpg")]
    assert train.targets.tolist() == TRAIN_TARGETS
    assert train.unknown.tolist() == (np.array(TRAIN_TARGETS) == -1).tolist() and not train.difficult.any()
    for index, expected in enumerate(TRAIN_TARGETS):
        image, target = train[index]
        assert image.size == (20, 16) and target.dtype == torch.float32 and target.tolist() == expected
    positives, negatives = train.label_lists()
    assert positives[0].tolist() == [0, 1, 3, 3, 3] and positives[1].tolist() == [0, 1, 2]
    assert negatives[0].tolist() == [0, 1, 1, 1, 2] and negatives[1].tolist() == [1, 0]

    as_negative = OpenImagesDataset(tree, "train", skip_missing_images=True, unknown_as_negative=True)
    assert as_negative.targets.tolist() == np.maximum(TRAIN_TARGETS, 0).tolist()
    assert as_negative[1][1].tolist() == [0, 1, 1, 0, 0] and as_negative.label_lists()[1] is None

    test = OpenImagesDataset(tree, "test")
    assert test.targets.tolist() == [[1, 0, -1, -1, -1], [0, 1, -1, 1, -1]] and not test.missing_images
    assert OpenImagesDataset(tree, "validation").targets.tolist() == [[1, -1, -1, 0, -1]]
    part = train.subset([3, 1])
    assert part.targets.tolist() == [TRAIN_TARGETS[3], TRAIN_TARGETS[1]] and part.image_paths[0].endswith(
        "d.jpg"
    )
    assert len(train) == 4  # the original is untouched


def test_missing_images_are_counted_and_refused(tree):
    with pytest.raises(
        FileNotFoundError, match=r"1 of 5 listed images are not on disk .*000e\.jpg.*--skip-missing"
    ):
        OpenImagesDataset(tree, "train")
    unchecked = OpenImagesDataset(tree, "train", check_images=False)
    assert len(unchecked) == 5 and unchecked.targets[4].tolist() == [1, -1, -1, -1, -1]
    with pytest.raises(FileNotFoundError, match="Image file not found"):
        unchecked[4]
    (tree / "train" / "000000000000000a.jpg").write_bytes(b"not a JPEG")
    bad = OpenImagesDataset(tree, "train", skip_bad_images=True)
    assert len(bad) == 3 and len(bad.skipped_images) == 1 and bad.targets.tolist() == TRAIN_TARGETS[1:]


def test_reader_fast_path_equals_the_csv_module_path(tmp_path):
    """Blocks without quotes are split on the bytes, blocks with quotes by the csv module: both must
    give the same labels, across block boundaries, with CRLF, blank lines, a BOM, unsorted ImageIDs,
    repeated and conflicting rows, columns in another order and labels longer than any listed."""
    rng = np.random.default_rng(0)
    labels = ["/m/01", "/m/0abcdefghij", "/g/11bcdefgh9", "/m/02x", "/m/0abcdefghik"]
    names = labels + ["/m/0abcdefghijklmnopqrstuvw", "/m/0", "/m/011"]
    rows = [
        (f"{rng.integers(0, 40):016x}", str(rng.choice(names)), str(rng.integers(0, 2))) for _ in range(600)
    ]
    rows += [("00000000000000ff", "/m/01", "1"), ("00000000000000ff", "/m/01", "1.0")]  # a repeat
    rows += [("00000000000000fe", "/m/02x", "1"), ("00000000000000fe", "/m/02x", "0")]  # a conflict
    plain = "LabelName,Confidence,Source,ImageID\r\n" + "".join(
        f"{name},{conf},verification,{image}\r\n" + ("\r\n" if i % 97 == 0 else "")
        for i, (image, name, conf) in enumerate(rows)
    )
    quoted = plain.replace(",verification,", ',"verification",')
    results = []
    for text in (plain, quoted, "\ufeff" + plain):
        path = tmp_path / "labels.csv"
        path.write_text(text, newline="")
        results.append(read_image_labels(path, labels, block_bytes=333))
    for other in results[1:]:
        for field in ("image_ids", "indptr", "indices", "states"):
            assert np.array_equal(getattr(results[0], field), getattr(other, field)), field
    result = results[0]
    assert result.rows == len(rows)
    expected = {}
    for image, name, conf in rows:
        if name in labels:
            expected.setdefault((image, labels.index(name)), set()).add(int(float(conf)))
    got = {
        (result.image_ids[s].decode(), int(result.indices[k])): {int(result.states[k])}
        for s in range(len(result.image_ids))
        for k in range(result.indptr[s], result.indptr[s + 1])
    }
    assert got == {key: states for key, states in expected.items() if len(states) == 1}
    assert result.conflicts == sum(len(states) == 2 for states in expected.values()) > 0
    assert ("00000000000000fe", 3) not in got and got[("00000000000000ff", 0)] == {1}
    assert [i.decode() for i in result.image_ids] == sorted({image for image, _, _ in rows})
    assert result.other_rows == sum(name not in labels for _, name, _ in rows)


@pytest.mark.parametrize(
    "text, message",
    [
        ("ImageID,LabelName\n", "the first line must be the header ImageID,Source,LabelName,Confidence"),
        (HEADER + "a,verification,/m/0cat,1\nb,verification,/m/0cat\n", "line 3: expected 4 comma-separated"),
        (HEADER + "a,verification,/m/0cat,0.7\n", r"line 2: the Confidence column must be 0 .*machine-gen"),
        (HEADER + ",verification,/m/0cat,1\n", "line 2: the ImageID is empty"),
        (HEADER, "has a header but no label rows"),
    ],
)
def test_bad_label_files_name_the_line(tree, text, message):
    (tree / "validation-annotations-human-imagelabels.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        OpenImagesDataset(tree, "validation")


def test_layout_errors(tree):
    with pytest.raises(
        ValueError, match=r"Open Images split must be one of \('train', 'validation', 'test'\)"
    ):
        OpenImagesDataset(tree, "val")
    (tree / "test").rename(tree / "elsewhere")
    with pytest.raises(FileNotFoundError, match="no image folder .*test; put the images there"):
        OpenImagesDataset(tree, "test")
    (tree / "oidv6-classes-trainable.txt").write_text("/m/0cat\n/m/0dog\n/m/0cat\n")
    with pytest.raises(ValueError, match="line 3: label /m/0cat is listed again"):
        OpenImagesDataset(tree, "validation")
    (tree / "oidv6-classes-trainable.txt").write_text(DESCRIPTIONS)
    with pytest.raises(ValueError, match="line 1: expected one LabelName a line"):
        OpenImagesDataset(tree, "validation")
    (tree / "oidv6-classes-trainable.txt").rename(tree / "classes-trainable.txt")  # an older release's name
    with pytest.raises(
        FileNotFoundError, match=r"has no oidv6-classes-trainable.txt: .*; it holds classes-t"
    ):
        OpenImagesDataset(tree, "validation")
    with pytest.raises(
        FileNotFoundError, match=r"No Open Images folder .*\.csv \(it is a file\): pass the folder"
    ):
        OpenImagesDataset(tree / "test-annotations-human-imagelabels.csv", "test")


def test_descriptions_without_header_and_undescribed_labels(tree):
    (tree / "oidv6-class-descriptions.csv").write_text("/m/0cat,Cat\n/m/0dog,Dog\n")
    with pytest.warns(MSRNWarning, match="3 trainable label.s. have no display name"):
        dataset = OpenImagesDataset(tree, "validation")
    assert dataset.classes == ["Cat", "Dog", "/m/0bow1", "/m/0bow2", "/m/0zzz"]


def test_dense_views_are_refused_when_too_large(tree, monkeypatch):
    dataset = OpenImagesDataset(tree, "test")
    monkeypatch.setattr(openimages_module, "_DENSE_LIMIT", 9)
    with pytest.raises(
        ValueError,
        match=r"dense 2 x 5 matrix .*use label_lists\(\).*for --val-fraction and for the label graph",
    ):
        _ = dataset.targets
    assert dataset[1][1].tolist() == [0, 1, -1, 1, -1]  # samples are built from the sparse rows


def test_create_dataset_defaults(tree):
    train = create_dataset("openimages", tree, is_training=True, skip_missing_images=True)
    assert train.split == "train" and len(train) == 4
    assert create_dataset("openimages", tree).split == "test"
    assert create_dataset("openimages", tree, "validation", unknown_as_negative=True).targets.min() == 0


@pytest.mark.usefixtures(one_thread.__name__)
def test_train_command_runs_and_evaluates(tree, tmp_path, capsys, caplog):
    output = tmp_path / "run"
    small_model = ["--model", "msrn_resnet18", "--no-pretrained", "--device", "cpu", "--threads", "1"]
    small_model += ["--backbone-kwargs", json.dumps({"channels": [16, 32, 64, 128], "stem_width": 16})]
    argv = ["train", "--dataset", "openimages", "--data", str(tree), "--skip-missing-images", "--epochs", "1"]
    argv += small_model + TINY_ARGS + ["--output-dir", str(output)]
    with caplog.at_level(logging.INFO):
        assert cli_main(argv) == 0
    assert "unknown labels (-1): 15 unknown label entries in 4 train images" in caplog.text
    assert (
        "unknown labels (-1): 5 unknown label entries in 2 test images (left out of the metrics)"
        in caplog.text
    )
    assert "left out of the test mAP: Bow (/m/0bow1), Zebra" in caplog.text
    model, _ = load_trained_model(output / "last")
    assert model.label_names == CLASSES
    test_data = run_test_data(output)
    assert test_data.pop("fingerprint")["images"] == 2
    assert test_data == {
        "data": str(tree),
        "dataset": "openimages",
        "split": None,
        "skip_bad_images": False,
        "skip_missing_images": True,
        "unknown_as_negative": False,
    }
    capsys.readouterr()
    assert cli_main(["evaluate", str(output / "last"), "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class_ap"]["Zebra"] is None and result["class_ap"]["Bow (/m/0bow1)"] is None
    assert result["class_ap"]["Cat"] in (50.0, 100.0)  # one positive and one verified negative
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="msrn.data"):
        assert cli_main(["evaluate", str(output / "last"), "--workers", "0", "--unknown-as-negative"]) == 0
    assert (
        "Open Images test: 2 images, 5 labels, 3 positive and 2 verified negative labels (the others "
        in caplog.text
    )
    assert "(the others are negative)" in caplog.text
    labels_file = tree / "test-annotations-human-imagelabels.csv"
    labels_file.write_text(labels_file.read_text().replace("/m/0dog,0", "/m/0dog,1"))
    capsys.readouterr()
    assert cli_main(["evaluate", str(output / "last"), "--workers", "0"]) == 2  # the test labels changed
    assert "other labels" in capsys.readouterr().err

    assert (
        cli_main(["train", "--unknown-as-negative", "--output-dir", str(tmp_path / "voc")] + TINY_ARGS) == 2
    )
    assert "--unknown-as-negative is an Open Images option" in capsys.readouterr().err
