"""Hostile and careless annotation files (COCO, VOC, CSV) and concurrent generation of the default set.

Each case gives an error naming the file and the entry or line, a warning, or is accepted as
documented; tests marked "guard" already held before issue 12 and must keep holding."""

import json
import logging
import multiprocessing
import os
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from msrn.data import COCODataset, CSVDataset, VOCDataset, generate_synthetic_voc

# ---------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: pathlib.Path, edit=None) -> pathlib.Path:
    """A valid three-image COCO file, changed by ``edit(data)``; returns the annotation file."""
    images = tmp_path / "train2014"
    images.mkdir(exist_ok=True)
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in (7, 3, 9)],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1},
            {"id": 2, "image_id": 3, "category_id": 18},
            {"id": 3, "image_id": 9, "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    for image in data["images"]:
        Image.new("RGB", (8, 8)).save(images / image["file_name"])
    if edit is not None:
        edit(data)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / "instances_train2014.json"
    path.write_text(json.dumps(data))
    return path


def _set(entry: dict, **changes):
    entry.update(changes)
    for key, value in list(changes.items()):
        if value is None:
            del entry[key]


COCO_CASES = {
    "image without file_name": (
        lambda d: _set(d["images"][1], file_name=None),
        r"images\[1\] has no 'file_name'",
    ),
    "image without id": (lambda d: _set(d["images"][0], id=None), r"images\[0\] has no 'id'"),
    "category without name": (
        lambda d: _set(d["categories"][1], name=None),
        r"categories\[1\] has no 'name'",
    ),
    "mixed int/str image ids": (
        lambda d: _set(d["images"][2], id="9"),
        r"images ids mix integers and strings",
    ),
    "mixed int/str category ids": (
        lambda d: _set(d["categories"][0], id="1"),
        r"categories ids mix integers and strings",
    ),
    "annotation id of another type": (
        lambda d: _set(d["annotations"][0], image_id="7"),
        r"image_id '7'.*a str while the ids there are ints",
    ),
    "categories as a dict": (
        lambda d: d.update(categories={"1": "person", "18": "dog"}),
        r"'categories' is a dict; it must be a list of objects",
    ),
    "image entry not an object": (
        lambda d: d["images"].append(5),
        r"images\[3\] is 5, not an object like \{\"id\": 1",
    ),
    "duplicate image id": (
        lambda d: d["images"].append({"id": 7, "file_name": "3.jpg"}),
        r"images\[3\] repeats the id 7 of images\[0\]",
    ),
    "duplicate category name": (
        lambda d: d["categories"].append({"id": 2, "name": "dog"}),
        r"categories 18 and 2 are both named 'dog'",
    ),
    "absolute file_name": (
        lambda d: _set(d["images"][0], file_name="/etc/hostname"),
        r"file_name '/etc/hostname' is not a path inside",
    ),
    "escaping file_name": (
        lambda d: _set(d["images"][0], file_name="../annotations/x.jpg"),
        r"file_name '\.\./annotations/x\.jpg' is not a path inside",
    ),
}


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_coco_bad_file_names_the_file_and_entry(tmp_path, case):
    edit, message = COCO_CASES[case]
    path = _coco(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as caught:
        COCODataset(tmp_path, "train")
    assert str(path) in str(caught.value)


def test_coco_utf16_file(tmp_path):
    path = _coco(tmp_path)
    path.write_bytes(path.read_text().encode("utf-16"))
    with pytest.raises(ValueError, match=rf"{path}.*UTF-16.*save it as UTF-8"):
        COCODataset(tmp_path, "train")


def test_coco_string_ids_and_subfolders_are_fine(tmp_path):
    """Guard: string ids (used consistently) and file names in sub-folders are accepted."""

    def edit(data):
        for image in data["images"]:
            image["id"] = f"img{image['id']}"
        for annotation in data["annotations"]:
            annotation["image_id"] = f"img{annotation['image_id']}"
        data["images"][0]["file_name"] = "sub/7.jpg"

    _coco(tmp_path, edit)
    (tmp_path / "train2014" / "sub").mkdir()
    shutil.copy(tmp_path / "train2014" / "7.jpg", tmp_path / "train2014" / "sub" / "7.jpg")
    dataset = COCODataset(tmp_path, "train")
    assert dataset.image_ids == ["img3", "img7", "img9"] and dataset.classes == ["dog", "person"]


# ----------------------------------------------------------------------------------------- VOC
def _voc(tmp_path: pathlib.Path, split_lines=("000001", "000002"), filenames=None) -> pathlib.Path:
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for image_id in ("000001", "000002"):
        Image.new("RGB", (8, 8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
        filename = (filenames or {}).get(image_id, f"{image_id}.jpg")
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{filename}</filename><object><name>dog</name></object></annotation>"
        )
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(split_lines) + "\n")
    return voc


def test_voc_duplicate_split_ids_are_used_once_with_a_warning(tmp_path, caplog):
    voc = _voc(tmp_path, ["000001", "000002", "000001  1"])
    with caplog.at_level(logging.WARNING):
        dataset = VOCDataset(tmp_path / "VOCdevkit")
    assert dataset.image_ids == ["000001", "000002"] and len(dataset) == 2
    assert "trainval.txt" in caplog.text and "000001 on lines 1 and 3" in caplog.text
    assert str(voc) in caplog.text


@pytest.mark.parametrize("filename", ["{outside}", "../../outside.jpg", "sub/../../../outside.jpg"])
def test_voc_filename_outside_the_tree_is_refused(tmp_path, filename):
    outside = tmp_path / "VOCdevkit" / "outside.jpg"
    filename = filename.format(outside=outside)
    voc = _voc(tmp_path, filenames={"000002": filename})
    Image.new("RGB", (8, 8), (255, 0, 0)).save(outside)  # a readable file there: it must not be used
    with pytest.raises(ValueError, match=r"000002\.xml: <filename> .* is not a path inside .*JPEGImages"):
        VOCDataset(voc)


def test_voc_split_id_outside_the_tree_is_refused(tmp_path):
    voc = _voc(tmp_path, ["000001", "../../../../etc/passwd"])
    with pytest.raises(ValueError, match=r"trainval\.txt, line 2: '\.\./.*' is not an image id"):
        VOCDataset(voc)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_voc_symlinked_sub_folder_is_read(tmp_path):
    """Guard: a <filename> in a symlinked sub-folder of JPEGImages is inside the tree."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(elsewhere / "x.jpg")
    voc = _voc(tmp_path, filenames={"000002": "linked/x.jpg"})
    (voc / "JPEGImages" / "linked").symlink_to(elsewhere, target_is_directory=True)
    dataset = VOCDataset(voc)
    assert dataset.image_paths[1].endswith("linked/x.jpg")


@pytest.mark.parametrize(
    "encoding, message", [("latin-1", r"not UTF-8 .*byte 0xe9 on line 2.*Latin-1"), ("utf-16", r"UTF-16")]
)
def test_voc_split_file_in_another_encoding(tmp_path, encoding, message):
    voc = _voc(tmp_path)
    split = voc / "ImageSets" / "Main" / "trainval.txt"
    split.write_bytes("000001\n000002 é\n".encode(encoding))
    with pytest.raises(ValueError, match=rf"{split}.*{message}"):
        VOCDataset(voc)


# ----------------------------------------------------------------------------------------- CSV
@pytest.fixture()
def csv_images(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    return tmp_path


def _write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> pathlib.Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_excel_utf8_with_bom_and_crlf(csv_images):
    path = _write(csv_images / "set.csv", "image,labels\r\na.jpg,caf\u00e9;dog\r\nb.jpg,dog\r\n", "utf-8-sig")
    dataset = CSVDataset(path)
    assert dataset.classes == ["caf\u00e9", "dog"] and dataset.targets.tolist() == [[1, 1], [0, 1]]
    one_hot = _write(csv_images / "hot.csv", "image,cat,dog\r\na.jpg,1,0\r\nb.jpg,0,1\r\n", "utf-8-sig")
    assert CSVDataset(one_hot).classes == ["cat", "dog"]


def test_csv_errors_give_physical_line_numbers(csv_images):
    # blank lines, and a quoted cell over two lines: the error is on the record's first physical line
    text = 'image,labels\n\na.jpg,cat\n\n\n"b.jpg","cat;\nunicorn"\nc.jpg,dog\n'
    path = _write(csv_images / "set.csv", text)
    with pytest.raises(ValueError, match=r"set\.csv, line 6: label 'unicorn' is not one of the classes"):
        CSVDataset(path, classes=["cat", "dog"])
    one_hot = _write(csv_images / "hot.csv", "image,cat,dog\n\n\na.jpg,1,0\nb.jpg,1,2\n")
    with pytest.raises(ValueError, match=r"hot\.csv, line 5: class columns must hold 0 or 1"):
        CSVDataset(one_hot)


@pytest.mark.parametrize(
    "cell, shown", [("person dog", "spaces"), ('"person, dog"', "commas"), ("person|dog", "'|'")]
)
def test_csv_labels_with_another_separator_are_refused(csv_images, cell, shown):
    path = _write(csv_images / "set.csv", f"image,labels\na.jpg,{cell}\nb.jpg,person\nc.jpg,dog\n")
    expected = rf"set\.csv, line 2: .* separated by {shown}; separate labels with ';', e\.g\. 'person;dog'"
    with pytest.raises(ValueError, match=expected):
        CSVDataset(path)  # classes from the file
    with pytest.raises(ValueError, match=expected):
        CSVDataset(path, classes=["dog", "person"])


def test_csv_multi_word_classes_are_accepted(csv_images):
    """Guard: a class whose name has spaces is fine when it exists ('hot dog' next to 'dog')."""
    path = _write(csv_images / "set.csv", "image,labels\na.jpg,hot dog;dog\nb.jpg,traffic light\n")
    assert CSVDataset(path).classes == ["dog", "hot dog", "traffic light"]
    both = _write(csv_images / "both.csv", "image,labels\na.jpg,person dog\nb.jpg,person;dog\n")
    targets = CSVDataset(both, classes=["person", "dog", "person dog"]).targets
    assert targets.tolist() == [[0, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize("delimiter, shown", [(";", "';'"), ("\t", "'tab'")])
def test_csv_with_another_column_delimiter(csv_images, delimiter, shown):
    path = _write(csv_images / "set.csv", f"image{delimiter}labels\na.jpg{delimiter}cat\n")
    with pytest.raises(ValueError, match=rf"set\.csv, line 1: the columns are separated by {shown}"):
        CSVDataset(path)


def test_csv_case_only_duplicate_classes_warn(csv_images, caplog):
    path = _write(csv_images / "set.csv", "image,labels\na.jpg,Person;dog\nb.jpg,person\n")
    with caplog.at_level(logging.WARNING):
        dataset = CSVDataset(path)
    assert dataset.classes == ["Person", "dog", "person"]  # kept apart: labels are case-sensitive
    assert "set.csv" in caplog.text and "'Person' / 'person'" in caplog.text


@pytest.mark.parametrize(
    "encoding, message",
    [
        ("latin-1", r"is not UTF-8 text \(byte 0xe9 on line 2\).*Latin-1.*iconv -f LATIN1"),
        ("utf-16", r"is UTF-16 .*save it as UTF-8"),
    ],
)
def test_csv_in_another_encoding_names_file_and_fix(csv_images, encoding, message):
    path = _write(csv_images / "set.csv", "image,labels\na.jpg,caf\u00e9\n", encoding)
    with pytest.raises(ValueError, match=rf"{path} {message}"):
        CSVDataset(path)


# ------------------------------------------------------------------------ generated default set
def _generate(root: str, barrier) -> None:
    barrier.wait()
    generate_synthetic_voc(root, num_trainval=24, num_test=12, seed=3)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_two_processes_generate_the_default_set_at_once(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    processes = [context.Process(target=_generate, args=(str(tmp_path), barrier)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [p.exitcode for p in processes] == [0, 0]
    dataset = VOCDataset(tmp_path / "VOCdevkit", "trainval")
    assert len(dataset) == 24
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".synthetic-voc-")]  # no staging left


def test_generation_finished_by_another_process_meanwhile(tmp_path, monkeypatch):
    """A writer that could not be locked out (e.g. a file system without locks) finished first."""
    replace = os.replace

    def other_process_wins(source, target):
        if pathlib.Path(target).name == "VOCdevkit" and not pathlib.Path(target).exists():
            shutil.copytree(source, target)
        return replace(source, target)

    monkeypatch.setattr(os, "replace", other_process_wins)
    devkit = generate_synthetic_voc(tmp_path, num_trainval=4, num_test=2)
    assert np.asarray(VOCDataset(devkit, "test").targets).shape[0] == 2


@pytest.mark.parametrize("reader", ["nuswide", "apparel"])
def test_benchmark_tables_in_another_encoding(tmp_path, reader):
    from msrn.data import ApparelDataset, NUSWIDEDataset

    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    table = _write(tmp_path / "table.csv", "image,labels,split\na.jpg,\"['caf\u00e9']\",train\n", "latin-1")
    with pytest.raises(ValueError, match=rf"{table} is not UTF-8 text \(byte 0xe9 on line 2\)"):
        if reader == "nuswide":
            NUSWIDEDataset(tmp_path, "train", csv_file=table)
        else:
            ApparelDataset(tmp_path, "test", labels_file=table)
