"""Hostile and unusual image files: one decoder for every path, and bad images as clear, skippable errors.

Every test here failed on the code before issue 12 (checked by running this file against it)."""

import json
import os
import pathlib
import re
import struct
import zlib

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import msrn  # noqa: F401  registers the architectures
from msrn import save_pretrained
from msrn.cli import main
from msrn.data import BadImageError, COCODataset, CSVDataset, VOCDataset, eval_transform, load_rgb_image
from msrn.models import MSRN

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "person"]
TINY = dict(num_classes=3, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)
SIZE = 64


def _png_claiming(path: pathlib.Path, width: int, height: int) -> pathlib.Path:
    """A 100-byte PNG whose header claims ``width x height`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def _write_tricky_images(folder: pathlib.Path) -> dict:
    """One file per decoding rule; returns {file name: what the decoder must make of it}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    # 16-bit grayscale that does not span the full range: 8-bit = v * 255 / 65535, not stretched or clipped.
    gray16 = np.tile(np.linspace(10000, 40000, 56), (40, 1)).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "gray16.png")
    # transparent pixels whose hidden colour is red, half-transparent blue elsewhere
    rgba = np.zeros((40, 56, 4), dtype=np.uint8)
    rgba[:, :28] = (255, 0, 0, 0)
    rgba[:, 28:] = (0, 0, 255, 128)
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    # a photo stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(colour).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(colour).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    palette = Image.fromarray(colour).convert("P")
    palette.save(folder / "palette.gif", transparency=int(np.asarray(palette)[0, 0]))
    Image.fromarray(np.linspace(0, 1, 40 * 56, dtype=np.float32).reshape(40, 56)).save(folder / "float.tif")
    Image.fromarray(gray16.astype(np.int32)).save(folder / "int32.tif")
    return {
        "gray16.png": np.round(gray16 * (255 / 65535)).astype(np.uint8),
        "rgba.png": None,
        "rotated.jpg": None,
        "cmyk.jpg": None,
        "palette.gif": None,
        "float.tif": None,
        "int32.tif": np.round(gray16 * (255 / 65535)).astype(np.uint8),
    }


def test_decoding_rules(tmp_path):
    expected = _write_tricky_images(tmp_path)
    for name in ("gray16.png", "int32.tif"):
        image = load_rgb_image(tmp_path / name)
        np.testing.assert_array_equal(np.asarray(image)[..., 0], expected[name])
    rgba = np.asarray(load_rgb_image(tmp_path / "rgba.png"))
    assert (rgba[:, :28] == 255).all()  # transparent: white, not the hidden red
    assert abs(int(rgba[0, 40, 2]) - 255) <= 1 and abs(int(rgba[0, 40, 0]) - 127) <= 1  # half blue on white
    rotated = load_rgb_image(tmp_path / "rotated.jpg")
    with Image.open(tmp_path / "rotated.jpg") as raw:
        assert raw.size == (56, 40) and rotated.size == (40, 56)  # upright as a viewer shows it
        upright = raw.convert("RGB").transpose(Image.ROTATE_270)
        np.testing.assert_array_equal(np.asarray(rotated), np.asarray(upright))
    ramp = np.asarray(load_rgb_image(tmp_path / "float.tif"))[..., 0]
    assert ramp.min() == 0 and ramp.max() == 255 and ramp.dtype == np.uint8  # 0..1 floats to 0..255
    for name in ("cmyk.jpg", "palette.gif"):
        assert load_rgb_image(tmp_path / name).mode == "RGB"


def test_float_image_with_nan_and_huge_integers(tmp_path):
    values = np.array([[np.nan, np.inf, -5.0, 1000.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert np.asarray(load_rgb_image(tmp_path / "f.tif"))[0, :, 0].tolist() == [0, 0, 0, 255]
    Image.fromarray(np.array([[-70000, 0, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    assert np.asarray(load_rgb_image(tmp_path / "i.tif"))[0, :, 0].tolist() == [0, 128, 255]


def test_decompression_bomb_is_a_bad_image_naming_the_file(tmp_path, monkeypatch):
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(BadImageError, match=re.escape(str(bomb))):
        load_rgb_image(bomb)
    # The limit is the decoder's own, whatever Pillow's global says (here: no Pillow limit at all).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    large = _png_claiming(tmp_path / "large.png", 12_000, 8_000)
    with pytest.raises(BadImageError, match=r"large\.png.*96,000,000 pixels.*limit of 80,000,000"):
        load_rgb_image(large)
    with pytest.raises(BadImageError, match=r"limit of 100\b"):
        load_rgb_image(_png_claiming(tmp_path / "small.png", 20, 20), max_pixels=100)


def test_bomb_is_skipped_by_datasets(tmp_path):
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "good.jpg")
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    (tmp_path / "set.csv").write_text("image,labels\ngood.jpg,cat\nbomb.png,dog\n")
    with pytest.raises(BadImageError, match=r"bomb\.png"):
        CSVDataset(tmp_path / "set.csv")[1]
    dataset = CSVDataset(tmp_path / "set.csv", skip_bad_images=True)
    assert len(dataset) == 1 and dataset.skipped_images[0][0].endswith("bomb.png")


# ------------------------------------------------------------------ one file, one tensor, every path
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = timm.create_model("msrn_resnet18", label_names=NAMES, **TINY).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}
    save_pretrained(model, root / "model")
    return model, root / "model"


@pytest.fixture()
def record_inputs(monkeypatch):
    """Every batch MSRN.forward receives, from whichever command runs it."""
    seen = []
    forward = MSRN.forward

    def recording(self, images, *args, **kwargs):
        seen.append(images.detach().clone())
        return forward(self, images, *args, **kwargs)

    monkeypatch.setattr(MSRN, "forward", recording)
    return seen


def _tree(tmp_path):
    """The tricky images as a VOC tree, a COCO file and a CSV file over the same folder."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    images = voc / "JPEGImages"
    names = sorted(_write_tricky_images(images))
    (voc / "Annotations").mkdir()
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    ids = [f"{k:06d}" for k in range(len(names))]
    for image_id, name in zip(ids, names, strict=True):
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{name}</filename><object><name>dog</name></object></annotation>"
        )
    (voc / "ImageSets" / "Main" / "all.txt").write_text("\n".join(ids) + "\n")
    coco = {
        "images": [{"id": k, "file_name": n} for k, n in enumerate(names)],
        "annotations": [{"id": k, "image_id": k, "category_id": 1} for k in range(len(names))],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "person"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (images / "set.csv").write_text("image,labels\n" + "".join(f"{n},dog\n" for n in names))
    return names, images


def test_same_file_same_tensor_through_every_path(tmp_path, saved_model, record_inputs, capsys):
    from timm.data import create_transform, resolve_model_data_config

    from msrn import visualize
    from msrn.engine import evaluate_checkpoint

    model, folder = saved_model
    names, images = _tree(tmp_path)
    transform = eval_transform(SIZE)
    reference = [transform(load_rgb_image(images / name)) for name in names]

    datasets = [
        CSVDataset(images / "set.csv", classes=NAMES, transform=transform),
        VOCDataset(tmp_path / "VOCdevkit", "all", classes=NAMES, transform=transform),
        COCODataset(tmp_path, annotation_file=tmp_path / "coco.json", image_dir=images, transform=transform),
    ]
    for dataset in datasets:
        assert [pathlib.Path(p).name for p in dataset.image_paths] == names
        for index, expected in enumerate(reference):
            assert torch.equal(dataset[index][0], expected), (type(dataset).__name__, names[index])

    # msrn evaluate: what the model is fed (recorded in MSRN.forward, so on the torch backend; every
    # backend gets the same batches)
    evaluate_checkpoint(
        folder, images / "set.csv", dataset="csv", image_size=SIZE, batch_size=1, workers=0, backend="torch"
    )
    assert len(record_inputs) == len(names)
    for got, expected in zip(record_inputs, reference, strict=True):
        assert torch.equal(got[0], expected)

    # msrn predict (its own transform from the model's pretrained_cfg)
    record_inputs.clear()
    predict_transform = create_transform(**resolve_model_data_config(model), is_training=False)
    code = main(
        [
            "predict",
            *[str(images / n) for n in names],
            "--model",
            f"local-dir:{folder}",
            "--batch-size",
            "1",
            "--json",
            "--backend",
            "torch",
        ]
    )
    capsys.readouterr()
    assert code == 0 and len(record_inputs) == len(names)
    for got, name in zip(record_inputs, names, strict=True):
        assert torch.equal(got[0], predict_transform(load_rgb_image(images / name))), name

    # attention pictures drawn from an opened file show what the model saw
    maps = np.random.default_rng(0).random((1, 2, 4, 4))
    for name in names:
        with Image.open(images / name) as opened:
            drawn = visualize.attention_grid(opened, maps, ["dog"], cell_size=32)
        expected = visualize.attention_grid(load_rgb_image(images / name), maps, ["dog"], cell_size=32)
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(expected), err_msg=name)


# --------------------------------------------------------------------------------- msrn predict
def test_predict_one_bad_image_does_not_kill_the_batch(tmp_path, saved_model, capsys):
    _, folder = saved_model
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(images / "a.jpg")
    _png_claiming(images / "b-bomb.png", 100_000, 100_000)
    (images / "c-broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    Image.new("RGB", (30, 20), (10, 200, 10)).save(images / "d.jpg")
    code = main(["predict", str(images), "--model", f"local-dir:{folder}", "--json", "--batch-size", "8"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert sorted(pathlib.Path(json.loads(line)["image"]).name for line in captured.out.splitlines()) == [
        "a.jpg",
        "d.jpg",
    ]
    assert "b-bomb.png" in captured.err and "pixels" in captured.err and "c-broken.jpg" in captured.err


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_predict_searches_symlinked_sub_folders_once(tmp_path, saved_model, capsys):
    _, folder = saved_model
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    images.mkdir()
    elsewhere.mkdir()
    Image.new("RGB", (30, 20)).save(images / "a.jpg")
    Image.new("RGB", (30, 20)).save(elsewhere / "b.jpg")
    (images / "linked").symlink_to(elsewhere, target_is_directory=True)
    (images / "loop").symlink_to(images, target_is_directory=True)  # must not recurse forever
    code = main(["predict", str(images), "--model", f"local-dir:{folder}", "--json"])
    found = [pathlib.Path(json.loads(line)["image"]).name for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and sorted(found) == ["a.jpg", "b.jpg"]


# -------------------------------------------------------------------------------- msrn evaluate
@pytest.mark.parametrize("workers", ["0", "1"])
def test_evaluate_bad_image_is_one_line_or_skipped(tmp_path, saved_model, capsys, workers):
    _, folder = saved_model
    Image.new("RGB", (30, 20), (9, 90, 9)).save(tmp_path / "good.jpg")
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    (tmp_path / "test.csv").write_text("image,labels\ngood.jpg,cat;dog\nbomb.png,dog\n")
    argv = [
        "evaluate",
        str(folder),
        "--data",
        str(tmp_path / "test.csv"),
        "--dataset",
        "csv",
        "--workers",
        workers,
        "--image-size",
        str(SIZE),
        "--json",
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "bomb.png" in err and "--skip-bad-images" in err
    assert main(argv + ["--skip-bad-images"]) == 0
    assert "mAP" in json.loads(capsys.readouterr().out)["metrics"]
