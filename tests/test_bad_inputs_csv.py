"""Partial-label CSV files, round three (docs/reliability.md, docs/training.md "Partial labels"): name
spellings (NFC / NFD, a Unicode minus), markers in the wrong place (``?`` in the list layout, ``-``
inside a cell written with another separator), duplicate rows, classes and sets without a known label,
and files that are not what they seem (a NUL byte, ``/dev/zero``).

Each test failed before the rule it checks was written."""

import logging
import unicodedata
import warnings

import numpy as np
import pytest
from PIL import Image
from tiny_training import TINY_ARGS, one_thread, tiny_config

from msrn.cli import main
from msrn.data import CSVDataset
from msrn.engine import train

CAFE_NFC = unicodedata.normalize("NFC", "caf\u00e9")
CAFE_NFD = unicodedata.normalize("NFD", "caf\u00e9")


def _images(folder, count: int, seed: int = 0) -> list[str]:
    """``count`` small JPEG files of coloured noise, named relative to ``folder``."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
            folder / f"img/{seed}_{index}.jpg"
        )
        names.append(f"img/{seed}_{index}.jpg")
    return names


def _list_csv(folder, cells: list[str], name: str = "set.csv", seed: int = 0):
    names = _images(folder, len(cells), seed)
    rows = "".join(f"{image},{cell}\n" for image, cell in zip(names, cells, strict=True))
    (folder / name).write_text("image,labels\n" + rows, encoding="utf-8")
    return folder / name


def _positives(dataset: CSVDataset, name: str) -> list[int]:
    column = dataset.classes.index(name)
    return [int(t == 1) for t in dataset.targets[:, column]]


# ------------------------------------------------------------------------------------ spellings
def test_nfc_and_nfd_spellings_are_one_class(tmp_path):
    path = _list_csv(tmp_path, [CAFE_NFC, f"{CAFE_NFD};dog", f"-{CAFE_NFD}"])
    dataset = CSVDataset(path)
    assert dataset.classes == [CAFE_NFC, "dog"]
    assert _positives(dataset, CAFE_NFC) == [1, 1, 0]
    assert dataset.unknown[:, 0].tolist() == [False, False, True]
    # one-hot header in NFD, classes given in NFC
    names = _images(tmp_path, 1, seed=1)
    (tmp_path / "hot.csv").write_text(f"image,{CAFE_NFD},dog\n{names[0]},1,0\n", encoding="utf-8")
    assert CSVDataset(tmp_path / "hot.csv", classes=[CAFE_NFC, "dog"]).classes == [CAFE_NFC, "dog"]


def test_unicode_minus_marks_an_unknown_label_like_a_hyphen(tmp_path):
    path = _list_csv(tmp_path, ["dog;\u2212cat", "cat", "dog;\u2013cat"])  # minus sign, en dash
    dataset = CSVDataset(path)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.unknown[:, 0].tolist() == [True, False, True]


@pytest.mark.parametrize("cell", ["dog;?", "?", "dog;?cat"])
def test_question_mark_in_the_list_layout_is_refused(tmp_path, cell):
    path = _list_csv(tmp_path, [cell, "cat;dog"])
    with pytest.raises(ValueError, match=r"line 2: .*'\?'.*'-cat'"):
        CSVDataset(path)


@pytest.mark.parametrize(
    "cell, fixed",
    [
        ("person|-dog", "'person;-dog'"),
        ("-person -dog", "'-person;-dog'"),
        ('"person, -dog"', "'person;-dog'"),
    ],
)
def test_a_minus_inside_a_cell_with_another_separator_is_refused(tmp_path, cell, fixed):
    path = _list_csv(tmp_path, [cell, "person;dog"])
    with pytest.raises(ValueError, match=f"line 2: .*e\\.g\\. {fixed}"):
        CSVDataset(path)


# ---------------------------------------------------------------------------------- duplicates
def test_contradicting_duplicate_rows_name_both_lines(tmp_path):
    names = _images(tmp_path, 2)
    text = f"image,labels\n{names[0]},dog\n{names[1]},cat\n{names[0]},-dog\n"
    (tmp_path / "set.csv").write_text(text)
    with pytest.raises(ValueError, match=rf"lines 2 and 4 .*{names[0]}"):
        CSVDataset(tmp_path / "set.csv")
    # the same image with other spellings of its path is the same image
    (tmp_path / "set.csv").write_text(f"image,labels\n{names[0]},dog\n./{names[0]},cat\n")
    with pytest.raises(ValueError, match="lines 2 and 3"):
        CSVDataset(tmp_path / "set.csv")


def test_identical_duplicate_rows_are_used_once_with_a_warning(tmp_path, caplog):
    names = _images(tmp_path, 2)
    (tmp_path / "set.csv").write_text(f"image,labels\n{names[0]},dog\n{names[1]},cat\n{names[0]},dog\n")
    with caplog.at_level(logging.WARNING, logger="msrn"), pytest.warns(UserWarning, match="lines 2 and 4"):
        dataset = CSVDataset(tmp_path / "set.csv")
    assert len(dataset) == 2 and "used once" in caplog.text


# ------------------------------------------------------------------------- no known label
@pytest.mark.parametrize("layout", ["list", "one-hot"])
def test_a_training_set_without_any_known_label_is_refused(tmp_path, capsys, layout):
    if layout == "list":
        train_csv = _list_csv(tmp_path, ["-cat;-dog", "-cat;-dog", "-dog;-cat"], "train.csv")
    else:
        names = _images(tmp_path, 3)
        train_csv = tmp_path / "train.csv"
        train_csv.write_text("image,cat,dog\n" + "".join(f"{n},,\n" for n in names))
    test_csv = _list_csv(tmp_path, ["cat", "dog"], "test.csv", seed=1)
    argv = ["train", "--dataset", "csv", "--data", str(train_csv), "--test-split", str(test_csv)]
    small = ["--model", "msrn_resnet18", "--no-pretrained", "--epochs", "1", "--cache-dir", str(tmp_path)]
    argv += [*small, "--backbone-kwargs", '{"channels": [16, 32, 64, 128], "stem_width": 16}', *TINY_ARGS]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no known label" in err and str(train_csv) in err
    assert not (tmp_path / "out" / "train_state.pt").exists()


@pytest.mark.usefixtures(one_thread.__name__)
def test_a_class_without_a_known_positive_is_named_with_its_counts(tmp_path):
    # cat: unknown everywhere; dog: absent or unknown; person: fine
    cells = ["-cat;person", "-cat;-dog", "-cat;person", "-cat;person;-dog", "-cat", "-cat;person"]
    train_csv = _list_csv(tmp_path, cells, "train.csv")
    test_csv = _list_csv(tmp_path, ["cat;person", "dog", "person;dog"], "test.csv", seed=1)
    csv = dict(dataset="csv", data=str(train_csv), test_split=str(test_csv))
    config = tiny_config(tmp_path / "cache", tmp_path / "out", epochs=1, max_steps_per_epoch=1, **csv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    messages = [str(w.message) for w in caught if "no positive training label" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert "cat (6 unknown)" in messages[0] and "dog (4 absent, 2 unknown)" in messages[0]
    assert "person" not in messages[0].split(":", 1)[1]


# ------------------------------------------------------------------------ not what they seem
def test_a_nul_byte_in_a_utf8_csv_is_not_called_utf16(tmp_path):
    names = _images(tmp_path, 2)
    (tmp_path / "set.csv").write_bytes(f"image,labels\n{names[0]},dog\n{names[1]},c\0at\n".encode())
    with pytest.raises(ValueError, match=r"NUL byte on line 3") as error:
        CSVDataset(tmp_path / "set.csv")
    assert "UTF-16" not in str(error.value)
    # a real UTF-16 file is still named as one
    (tmp_path / "u16.csv").write_bytes(f"image,labels\n{names[0]},dog\n".encode("utf-16-le"))
    with pytest.raises(ValueError, match="UTF-16"):
        CSVDataset(tmp_path / "u16.csv")


def test_a_device_is_not_an_image_or_a_csv_file(tmp_path):
    names = _images(tmp_path, 1)
    (tmp_path / "set.csv").write_text(f"image,labels\n{names[0]},dog\n/dev/zero,cat\n")
    with pytest.raises(FileNotFoundError, match="/dev/zero is a device.*not a regular file"):
        CSVDataset(tmp_path / "set.csv")
    dataset = CSVDataset(tmp_path / "set.csv", skip_bad_images=True)
    assert len(dataset) == 1 and "not a regular file" in dataset.skipped_images[0][1]
    with pytest.raises(FileNotFoundError, match="CSV file /dev/zero is a device.*not a regular file"):
        CSVDataset("/dev/zero")
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        CSVDataset(tmp_path / "missing.csv")
