import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from msrn.data import (
    VOC_CLASSES,
    BadImageError,
    COCODataset,
    CSVDataset,
    MultiScaleCrop,
    VOCDataset,
    eval_transform,
    generate_synthetic_voc,
    load_rgb_image,
    train_transform,
)
from msrn.graph import label_graph_from_targets


def _xml(objects):
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(hard)}</difficult>"
        f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        for name, hard in objects
    )
    return f"<annotation><size><width>16</width><height>12</height></size>{body}</annotation>"


def _write_voc(root: pathlib.Path, images: dict, splits: dict) -> pathlib.Path:
    voc = root / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        Image.new("RGB", (16, 12), (10, 200, 30)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        (voc / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root / "VOCdevkit"


@pytest.fixture()
def voc_root(tmp_path):
    images = {
        "000001": [("dog", False), ("person", False)],
        "000002": [("cat", True)],  # difficult only
        "000003": [("chair", False), ("chair", True), ("sofa", True)],  # chair easy+difficult
    }
    return _write_voc(tmp_path, images, {"trainval": ["000001", "000002"], "test": ["000003"]})


def test_voc_labels_and_difficult(voc_root):
    train = VOCDataset(voc_root, "trainval")
    assert train.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    expected = np.zeros((2, 20), dtype=int)
    expected[0, [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]] = 1
    expected[1, VOC_CLASSES.index("cat")] = 1
    np.testing.assert_array_equal(train.targets, expected)
    assert train.difficult[1, VOC_CLASSES.index("cat")] and train.difficult.sum() == 1
    test = VOCDataset(
        voc_root / "VOC2007", "test", transform=eval_transform(32)
    )  # the VOC2007 folder works too
    image, target = test[0]  # an evaluation split: a difficult-only label is unknown (-1)
    assert image.shape == (3, 32, 32) and target.dtype == torch.float32
    assert target[VOC_CLASSES.index("chair")] == 1 and not test.difficult[0, VOC_CLASSES.index("chair")]
    assert target[VOC_CLASSES.index("sofa")] == -1 and test.difficult[0, VOC_CLASSES.index("sofa")]


def test_voc_missing_or_empty_split_file(voc_root):
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*Available splits.*test"):
        VOCDataset(voc_root, "val")
    (voc_root / "VOC2007/ImageSets/Main/empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        VOCDataset(voc_root, "empty")
    with pytest.raises(FileNotFoundError, match="No PASCAL VOC 2007 tree"):
        VOCDataset(voc_root / "nowhere")


def test_voc_missing_xml_and_unknown_class(voc_root):
    (voc_root / "VOC2007/Annotations/000002.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"000002\.xml"):
        VOCDataset(voc_root, "trainval")
    (voc_root / "VOC2007/Annotations/000002.xml").write_text(_xml([("unicorn", False)]))
    with pytest.raises(ValueError, match=r"000002\.xml.*unknown class 'unicorn'"):
        VOCDataset(voc_root, "trainval")
    (voc_root / "VOC2007/Annotations/000002.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"000002\.xml is not valid XML"):
        VOCDataset(voc_root, "trainval")


def test_corrupt_and_truncated_images_name_the_file_or_are_skipped(voc_root):
    images = voc_root / "VOC2007/JPEGImages"
    (images / "000001.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(images / "000002.jpg")
    data = (images / "000002.jpg").read_bytes()
    (images / "000002.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    dataset = VOCDataset(voc_root, "trainval")
    for index, name in ((0, "000001.jpg"), (1, "000002.jpg")):
        with pytest.raises(BadImageError, match=name):
            dataset[index]
    with pytest.raises(BadImageError, match="skip_bad_images"):
        dataset[0]
    with pytest.raises(ValueError, match="no usable images"):
        VOCDataset(voc_root, "trainval", skip_bad_images=True)
    (images / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"000003\.jpg"):
        VOCDataset(voc_root, "test")


def test_skip_bad_images_reports_how_many(voc_root):
    (voc_root / "VOC2007/ImageSets/Main/all.txt").write_text("000001\n000002\n000003\n")
    (voc_root / "VOC2007/JPEGImages/000002.jpg").write_bytes(b"\xff\xd8garbage")
    dataset = VOCDataset(voc_root, "all", skip_bad_images=True)
    assert len(dataset) == 2 and len(dataset.skipped_images) == 1
    assert dataset.skipped_images[0][0].endswith("000002.jpg")
    assert dataset.image_ids == ["000001", "000003"]
    assert dataset.targets[1, VOC_CLASSES.index("chair")] == 1  # rows stay aligned with their images


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (8, 6), (200, 100, 50))
    image = rgb.convert(mode) if mode != "I;16" else Image.fromarray(np.full((6, 8), 40000, np.uint16))
    path = tmp_path / ("img.tiff" if mode in ("CMYK", "I;16") else "img.png")
    if mode == "CMYK":
        path = tmp_path / "img.jpg"
    image.save(path)
    loaded = load_rgb_image(path)
    assert loaded.mode == "RGB" and loaded.size == (8, 6)
    if mode == "RGBA":
        transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
        transparent.save(tmp_path / "clear.png")
        assert load_rgb_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def _write_coco(root: pathlib.Path, split="train"):
    (root / "annotations").mkdir(parents=True)
    (root / f"{split}2014").mkdir()
    categories = [
        {"id": 1, "name": "person"},
        {"id": 3, "name": "car"},
        {"id": 18, "name": "dog"},
        {"id": 5, "name": "airplane"},
    ]
    images = [{"id": i, "file_name": f"COCO_{split}2014_{i:012d}.jpg"} for i in (7, 3, 9)]
    for image in images:
        Image.new("RGB", (10, 10)).save(root / f"{split}2014" / image["file_name"])
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1},
        {"id": 2, "image_id": 7, "category_id": 18},
        {"id": 3, "image_id": 3, "category_id": 5},
        {"id": 4, "image_id": 3, "category_id": 5},
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    path = root / "annotations" / f"instances_{split}2014.json"
    path.write_text(json.dumps(data))
    return path, data


def test_coco_class_order_and_empty_images(tmp_path):
    path, data = _write_coco(tmp_path)
    dataset = COCODataset(tmp_path, "train")
    assert dataset.classes == ["airplane", "car", "dog", "person"]  # alphabetical, not id order
    assert dataset.image_ids == [3, 7] and dataset.num_empty_images == 1  # image 9 has no annotation
    np.testing.assert_array_equal(dataset.targets, [[1, 0, 0, 0], [0, 0, 1, 1]])
    kept = COCODataset(tmp_path, "train", keep_empty=True)
    assert kept.image_ids == [3, 7, 9] and kept.targets[2].sum() == 0
    data["annotations"].append({"id": 9, "image_id": 7, "category_id": 99})
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_train2014\.json.*category_id 99"):
        COCODataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json"):
        COCODataset(tmp_path, "val")


def test_coco_order_is_the_authors_order(shared_dir):
    names = [str(n) for n in np.load(shared_dir / "data/official/coco_label_graph.npz")["names"]]
    assert names == sorted(names) and len(names) == 80


def test_csv_list_and_one_hot_layouts(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (10, 10)).save(tmp_path / name)
    (tmp_path / "list.csv").write_text("image,labels\na.jpg,dog;person\nb.jpg,\nc.jpg,baseball bat\n")
    dataset = CSVDataset(tmp_path / "list.csv")
    assert dataset.classes == ["baseball bat", "dog", "person"]
    np.testing.assert_array_equal(dataset.targets, [[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    given = CSVDataset(tmp_path / "list.csv", classes=["person", "dog", "baseball bat", "cat"])
    np.testing.assert_array_equal(given.targets[0], [1, 1, 0, 0])
    (tmp_path / "onehot.csv").write_text("image,person,dog\na.jpg,1,0\nb.jpg,1,1\n")
    onehot = CSVDataset(tmp_path / "onehot.csv", classes=["dog", "person"])
    np.testing.assert_array_equal(onehot.targets, [[0, 1], [1, 1]])
    assert onehot[0][0].size == (10, 10)


def test_csv_errors_name_the_file_and_line(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.jpg")
    (tmp_path / "bad.csv").write_text("image,labels\na.jpg,dog\na.jpg,unicorn\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: label 'unicorn' is not one of the classes"):
        CSVDataset(tmp_path / "bad.csv", classes=["dog"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        CSVDataset(tmp_path / "empty.csv")
    (tmp_path / "values.csv").write_text("image,dog\na.jpg,2\n")
    with pytest.raises(ValueError, match=r"values\.csv, line 2: class columns must hold 0 or 1"):
        CSVDataset(tmp_path / "values.csv")
    (tmp_path / "missing.csv").write_text("image,labels\nnope.jpg,dog\n")
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        CSVDataset(tmp_path / "missing.csv")


def test_multiscale_crop_boxes_follow_the_recipe():
    crop = MultiScaleCrop(48, scales=(1.0, 0.9, 0.8, 0.7, 0.6), max_distort=2)
    torch.manual_seed(0)
    short, width, height = 100, 150, 100
    allowed = [int(short * s) for s in crop.scales]
    seen_positions = set()
    for _ in range(300):
        left, top, right, bottom = crop.crop_box(width, height)
        w, h = right - left, bottom - top
        assert w in allowed and h in allowed and abs(allowed.index(w) - allowed.index(h)) <= 2
        step_w, step_h = (width - w) // 4, (height - h) // 4
        assert (left, top) in {
            (0, 0),
            (4 * step_w, 0),
            (0, 4 * step_h),
            (4 * step_w, 4 * step_h),
            (2 * step_w, 2 * step_h),
        }
        if step_w and step_h:
            seen_positions.add((left // step_w, top // step_h))
    assert len(seen_positions) == 5
    image = Image.new("RGB", (width, height))
    assert crop(image).size == (48, 48)
    assert train_transform(48)(image).shape == (3, 48, 48)


def test_synthetic_voc_is_deterministic_structured_and_reused(tmp_path):
    first = generate_synthetic_voc(tmp_path / "a", num_trainval=60, num_test=10, seed=3)
    second = generate_synthetic_voc(tmp_path / "b", num_trainval=60, num_test=10, seed=3)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    other = generate_synthetic_voc(tmp_path / "c", num_trainval=60, num_test=10, seed=4)
    assert (other / "VOC2007/Annotations/000000.xml").read_text() != (
        first / "VOC2007/Annotations/000000.xml"
    ).read_text()
    stamp = (first / "VOC2007/JPEGImages/000000.jpg").stat().st_mtime_ns
    assert generate_synthetic_voc(tmp_path / "a", num_trainval=60, num_test=10, seed=3) == first
    assert (first / "VOC2007/JPEGImages/000000.jpg").stat().st_mtime_ns == stamp  # reused, not rewritten
    with pytest.raises(FileExistsError, match="different data set"):
        generate_synthetic_voc(tmp_path / "a", num_trainval=61, num_test=10, seed=3)
    train = VOCDataset(first, "trainval")
    assert len(train) == 60 and len(VOCDataset(first, "test")) == 10
    assert train.targets.sum(axis=1).min() >= 1
    # Companions make the graph informative: a dining table always brings its chair edge here.
    graph = label_graph_from_targets(train.targets)
    assert int(graph.sum()) > 20
