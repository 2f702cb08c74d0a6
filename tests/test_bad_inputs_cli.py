"""Every `msrn` command with bad arguments: one line on stderr, a non-zero exit, never a traceback;
a closed pipe ends quietly; a full disk is one line and leaves no half-written file."""

import errno
import json
import os
import pathlib
import sys

import pytest
import timm
import torch
from PIL import Image

import msrn  # noqa: F401  registers the architectures
from msrn import save_pretrained
from msrn.cli import main

TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = timm.create_model(
        "msrn_custom", backbone="test_resnet", num_classes=3, label_names=["cat", "dog", "person"], **TINY
    ).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64)}
    save_pretrained(model, root / "model")
    images = root / "images"
    images.mkdir()
    for k in range(3):
        Image.new("RGB", (40, 30), (80 * k, 40, 200)).save(images / f"{k}.jpg")
    (root / "test.csv").write_text("image,labels\n" + "".join(f"images/{k}.jpg,cat\n" for k in range(3)))
    (root / "a-file").write_text("not a folder")
    return dict(
        root=root,
        model=f"local-dir:{root / 'model'}",
        folder=str(root / "model"),
        images=str(images),
        csv=str(root / "test.csv"),
        file=str(root / "a-file"),
    )


@pytest.fixture()
def no_gpu(monkeypatch):
    """The same answer on a machine with a GPU: none is visible."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _evaluate(f, *extra):
    return ["evaluate", f["folder"], "--data", f["csv"], "--dataset", "csv", "--workers", "0", *extra]


def _export(f, *extra):
    return ["export", "--model", f["model"], "--onnx", str(f["root"] / "out.onnx"), "--no-check", *extra]


def _convert(f, *extra):
    return ["convert-official", f["file"], "--glove", f["file"], "--adj", f["file"], *extra]


# (command line, text the one line must hold)
CASES = {
    "models: unknown option": (lambda f: ["models", "--bogus"], "unrecognized arguments: --bogus"),
    "train: --threads 0": (lambda f: ["train", "--threads", "0"], "threads must be >= 1"),
    "train: --device cuda without a GPU": (lambda f: ["train", "--device", "cuda"], "no CUDA GPU is visible"),
    "train: --workers -1": (lambda f: ["train", "--workers", "-1"], "workers must be >= 0"),
    "train: --epochs not a number": (lambda f: ["train", "--epochs", "two"], "invalid int value: 'two'"),
    "train: unknown backbone": (
        lambda f: ["train", "--backbone", "nosuchnet"],
        "Unknown backbone 'nosuchnet'",
    ),
    "train: missing data": (
        lambda f: ["train", "--data", str(f["root"] / "nowhere")],
        "No PASCAL VOC 2007 tree",
    ),
    "predict: --device cuda without a GPU": (
        lambda f: ["predict", f["images"], "--model", f["model"], "--device", "cuda"],
        "no CUDA GPU is visible",
    ),
    "predict: --device cuda:3 without a GPU": (
        lambda f: ["predict", f["images"], "--model", f["model"], "--device", "cuda:3"],
        "no CUDA GPU is visible",
    ),
    "predict: --threshold 2": (
        lambda f: ["predict", f["images"], "--model", f["model"], "--threshold", "2"],
        "--threshold must be between 0 and 1",
    ),
    "predict: missing image": (
        lambda f: ["predict", str(f["root"] / "gone.jpg"), "--model", f["model"]],
        "does not exist",
    ),
    "predict: no --model": (
        lambda f: ["predict", f["images"]],
        "the following arguments are required: --model",
    ),
    "evaluate: --threshold 2": (
        lambda f: _evaluate(f, "--threshold", "2"),
        "--threshold must be between 0 and 1",
    ),
    "evaluate: --device cuda without a GPU": (
        lambda f: _evaluate(f, "--device", "cuda"),
        "no CUDA GPU is visible",
    ),
    "evaluate: --batch-size 0": (
        lambda f: _evaluate(f, "--batch-size", "0"),
        "--batch-size must be at least 1",
    ),
    "evaluate: --workers -1": (lambda f: _evaluate(f, "--workers", "-1"), "--workers must be 0 or more"),
    "evaluate: --image-size 0": (
        lambda f: _evaluate(f, "--image-size", "0"),
        "--image-size must be a positive",
    ),
    "evaluate: --dataset bogus": (lambda f: _evaluate(f, "--dataset", "bogus"), "invalid choice: 'bogus'"),
    "evaluate: not a model folder": (
        lambda f: ["evaluate", f["images"], "--data", f["csv"]],
        "no saved model in",
    ),
    "export: --opset 99": (lambda f: _export(f, "--opset", "99"), "ONNX opset 99 is not supported"),
    "export: --img-size 0": (lambda f: _export(f, "--img-size", "0"), "--img-size must be a positive"),
    "export: --onnx a folder": (
        lambda f: ["export", "--model", f["model"], "--onnx", f["images"]],
        "is a folder",
    ),
    "convert-official: --out an existing file": (
        lambda f: _convert(f, "--out", f["file"]),
        "is a file; give a folder",
    ),
    "convert-official: --threshold 0": (
        lambda f: _convert(f, "--out", str(f["root"] / "conv"), "--threshold", "0"),
        "--threshold must be in (0, 1]",
    ),
    "convert-official: unreadable checkpoint": (
        lambda f: _convert(f, "--out", str(f["root"] / "conv")),
        "cannot be read with torch.load(weights_only=True)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_arguments_give_one_line(files, capsys, no_gpu, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders (output/...) must not be the user's own runs
    argv_of, expected = CASES[case]
    argv = argv_of(files)
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own exit after its (one-line) usage error
        code = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code not in (0, None), case
    assert len(lines) == 1 and lines[0].startswith(("msrn: error:", f"msrn {argv[0]}: error:")), err
    assert expected in lines[0], (expected, err)
    assert "Traceback" not in err


def test_convert_checks_out_before_converting(files, monkeypatch, capsys):
    import msrn.cli.convert

    def no_work(*args, **kwargs):
        raise AssertionError("the conversion ran before --out was checked")

    monkeypatch.setattr(msrn.cli.convert, "convert_official", no_work)
    assert main(_convert(files, "--out", files["file"])) == 2
    assert "is a file" in capsys.readouterr().err


def test_closed_pipe_ends_quietly(files, monkeypatch, capsys):
    """`msrn predict ... | head -1`: the reader is gone; no BrokenPipeError traceback, no message."""
    for extra in (["--json"], []):  # JSON lines are flushed one by one, the table at the end
        read_end, write_end = os.pipe()
        os.close(read_end)
        with open(write_end, "w") as stdout:
            monkeypatch.setattr(sys, "stdout", stdout)
            code = main(["predict", files["images"], "--model", files["model"], *extra])
            monkeypatch.undo()
        err = capsys.readouterr().err  # only the progress bar
        assert code == 1 and "error" not in err.lower() and "Traceback" not in err, (extra, err)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_exporting(files, monkeypatch, capsys):
    out = files["root"] / "full" / "model.onnx"
    monkeypatch.setattr(torch.onnx, "export", _disk_full)
    code = main(["export", "--model", files["model"], "--onnx", str(out), "--no-check"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"Cannot write {out}: No space left on device" in err
    assert list(out.parent.iterdir()) == []  # no half-written file, no temporary left


def test_disk_full_while_saving_keeps_the_previous_files(files, tmp_path, monkeypatch):
    import msrn.hub

    folder = tmp_path / "model"
    model = timm.create_model(files["model"])
    save_pretrained(model, folder)
    before = (folder / "model.safetensors").read_bytes()
    monkeypatch.setattr(msrn.hub, "save_file", _disk_full)
    with pytest.raises(OSError, match=rf"Cannot write {folder / 'model.safetensors'}: No space left"):
        save_pretrained(model, folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_disk_full_while_training(files, tmp_path, monkeypatch, capsys):
    import msrn.hub

    monkeypatch.setattr(msrn.hub, "save_file", _disk_full)
    code = main(
        [
            "train",
            "--synthetic-trainval",
            "8",
            "--synthetic-test",
            "4",
            "--image-size",
            "64",
            "--embed-dim",
            "16",
            "--hidden-dim",
            "32",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--no-progress",
            "--backbone",
            "test_resnet",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and "model.safetensors" in err


def test_json_output_is_still_valid_after_the_changes(files, capsys):
    """Guard: a normal run prints one JSON object per image and exits 0."""
    assert main(["predict", files["images"], "--model", files["model"], "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(pathlib.Path(r["image"]).name for r in records) == ["0.jpg", "1.jpg", "2.jpg"]


def test_reliability_page_counts_its_table():
    """docs/reliability.md: the counts line matches the table, and every test it names exists."""
    import collections
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "docs" / "reliability.md").read_text()
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(("| Case", "|---"))
    ]
    outcomes = collections.Counter()
    named = set()
    for row in rows:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
        outcomes[cells[1].split()[0].rstrip(":;,")] += 1
        named |= set(re.findall(r"`(test_\w+)`", cells[2]))
    expected = (
        f"{len(rows)} cases tried: {outcomes['error']} error, {outcomes['skipped']} skipped, "
        f"{outcomes['warning']} warning, {outcomes['accepted']} accepted."
    )
    assert set(outcomes) <= {"error", "skipped", "warning", "accepted"}
    assert f"Counts: **{expected}**" in text
    sources = "".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    missing = sorted(name for name in named if f"def {name}(" not in sources)
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
