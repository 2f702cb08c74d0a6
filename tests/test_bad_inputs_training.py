"""Hostile and careless inputs to training and evaluation, round three (docs/reliability.md): the
run folder's files on ``--resume``, a full disk, degenerate validation splits, a changed test split
under ``msrn evaluate RUN/best``, option errors, data sets of one or two classes and the default
number of data-loading workers.

Every case ends in a one-line error (exit 2) or a documented warning; each test failed before the
checks it covers were written. One tiny run (``run``) is shared; the tests that damage its files
work on copies."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_training import TINY_ARGS, one_thread, subprocess_env, tiny_config

from msrn.cli import main
from msrn.data import VOCDataset, generate_synthetic_voc, stratified_holdout
from msrn.engine import TrainConfig, paper_config, train

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

VAL_FRACTION = 0.25


def _train_argv(cache, output, *options):
    return ["train", "--cache-dir", str(cache), "--output-dir", str(output), *TINY_ARGS, *options]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of the tiny run with a validation split: ``(cache, run folder, warnings raised)``."""
    cache = tmp_path_factory.mktemp("cache")
    output = tmp_path_factory.mktemp("runs") / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(tiny_config(cache, output, epochs=1, val_fraction=VAL_FRACTION))
    return cache, output, [str(w.message) for w in caught]


def _copy(run_folder: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    copy = tmp_path / "copy"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns(".train.lock"))
    return copy


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for name in names:
        assert name in err, (name, err)
    return err


# ---------------------------------------------------------------------------- files of the run
def test_broken_train_state_on_resume_is_one_line_naming_the_file(run, tmp_path, capsys):
    copy = _copy(run[1], tmp_path)
    state_file = copy / "train_state.pt"
    whole = state_file.read_bytes()
    for broken in (whole[: len(whole) // 2], b""):
        state_file.write_bytes(broken)
        assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
        _one_line_error(capsys, str(state_file))
    torch.save([1, 2], state_file)  # a readable file that is not a training state
    assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
    _one_line_error(capsys, str(state_file))


@pytest.mark.parametrize(
    "edit, names",
    [
        (lambda text: "[]", ()),
        (lambda text: text[: len(text) // 2], ()),
        (lambda text: json.dumps({**json.loads(text), "epochs": "x"}), ("'epochs'",)),
        (lambda text: json.dumps({**json.loads(text), "crop_scales": "big"}), ("'crop_scales'",)),
        (lambda text: json.dumps({**json.loads(text), "epochs": -3}), ("--epochs must be >= 1",)),
        (lambda text: " " * 2**20 + text, ("more than the 1048576",)),
    ],
    ids=["list", "truncated", "epochs-x", "crop-scales-string", "epochs-negative", "too-large"],
)
def test_broken_train_config_is_one_line_naming_the_file(run, tmp_path, capsys, edit, names):
    copy = _copy(run[1], tmp_path)
    config_file = copy / "train_config.json"
    config_file.write_text(edit(config_file.read_text()))
    assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
    _one_line_error(capsys, str(config_file), *names)
    # msrn evaluate RUN/best reads the same file to find the run's test data.
    assert main(["evaluate", str(copy / "best"), "--workers", "0"]) == 2
    _one_line_error(capsys, str(config_file), *names)


def test_train_config_linked_to_dev_zero_is_refused_without_reading_it(run, tmp_path, capsys):
    copy = _copy(run[1], tmp_path)
    config_file = copy / "train_config.json"
    config_file.unlink()
    config_file.symlink_to("/dev/zero")
    assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
    _one_line_error(capsys, str(config_file), "not a regular file")


_DISK_FULL = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from msrn.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_disk_full_while_saving_the_training_state_is_one_line_and_keeps_the_last_state(run, tmp_path):
    """A real failed write (a file-size limit), not a mock: torch.save reports it as a bare
    RuntimeError ("unexpected pos ..."), which used to escape as a traceback."""
    copy = _copy(run[1], tmp_path)
    state_file = copy / "train_state.pt"
    weights = (copy / "last" / "model.safetensors").stat().st_size
    # last/ (the weights) can still be written, train_state.pt (weights + optimiser) cannot.
    limit = (weights + state_file.stat().st_size) // 2
    assert weights < limit < state_file.stat().st_size
    command = [sys.executable, "-c", _DISK_FULL, str(limit), "train", "--resume", str(copy), "--epochs", "2"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    # the run's own INFO lines, then one error line
    *log, err = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and all(line.startswith(("INFO ", "WARNING ")) for line in log), (
        result.stderr
    )
    assert err.startswith("msrn train: error: "), err
    assert str(state_file) in err and "epoch 1" in err and f"--resume {copy}" in err
    assert torch.load(state_file, weights_only=True)["epoch"] == 1  # the last good state is kept
    assert not [p.name for p in copy.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------- options
def test_option_errors_name_the_option_and_leave_the_run_alone(run, capsys):
    cache, output, _ = run
    files_before = sorted(p.name for p in output.iterdir())
    for options, message in [
        (["--val-fraction", "0.25", "--val-seed", "-5"], "--val-seed must be"),
        (["--seed", "-1"], "--seed must be"),
        (["--val-fraction", "2"], "--val-fraction must be"),
        (["--epochs", "0"], "--epochs must be"),
        (["--batch-size", "0"], "--batch-size must be"),
        (["--accum-steps", "0"], "--accum-steps must be"),
        (["--lr", "0"], "--lr must be"),
        (["--threads", "0"], "--threads must be"),
        (["--workers", "-1"], "--workers must be"),
        (["--ema", "1"], "--ema must be"),
    ]:
        # --overwrite would delete the run; a bad option must stop before that.
        assert main(_train_argv(cache, output, "--overwrite", *options)) == 2, options
        _one_line_error(capsys, f"error: {message}")  # the option, not the field (val_seed)
        assert sorted(p.name for p in output.iterdir()) == files_before


# --------------------------------------------------------------------------- validation split
def test_degenerate_validation_splits_are_refused_and_leave_the_run_alone(run, tmp_path, capsys):
    cache = run[0]
    copy = _copy(run[1], tmp_path)
    state = (copy / "train_state.pt").read_bytes()
    argv = _train_argv(cache, copy, "--epochs", "1", "--overwrite")  # refused before anything is deleted
    # One image held out: its mAP would be 100 and best/ and the thresholds chosen on one image.
    assert main([*argv, "--val-fraction", "0.01"]) == 2
    _one_line_error(capsys, "--val-fraction 0.01", "1 image")
    # Almost every image held out: the model would train on one image.
    assert main([*argv, "--val-fraction", "0.999"]) == 2
    _one_line_error(capsys, "--val-fraction 0.999", "1 training image")
    split_file = tmp_path / "val.txt"
    split_file.write_text("000000\n000001\n")
    assert main([*argv, "--val-split", str(split_file)]) == 2
    _one_line_error(capsys, f"--val-split {split_file}", "2 images")
    assert (copy / "train_state.pt").read_bytes() == state


def test_thresholds_are_fitted_only_for_classes_with_enough_validation_positives(run):
    cache, output, caught = run
    trainval = VOCDataset(cache / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", "trainval")
    held = stratified_holdout(trainval.targets, VAL_FRACTION, 0, ignore=trainval.difficult)
    positives = ((trainval.targets[held] > 0) & ~trainval.difficult[held]).sum(axis=0)
    few = positives < 3
    assert few.any() and not few.all()  # the tiny split has both kinds
    config = json.loads((output / "best" / "config.json").read_text())
    thresholds = np.array(config["pretrained_cfg"]["label_thresholds"])
    np.testing.assert_array_equal(thresholds[few], 0.5)
    # the warning names each class left at 0.5, with its count
    warning = next(message for message in caught if "validation positive" in message)
    for name, count in zip(trainval.classes, positives, strict=True):
        if 0 < count < 3:
            assert f"{name} ({count})" in warning, warning


# ------------------------------------------------------------------------- the run's test data
def test_evaluate_without_data_refuses_a_changed_test_split(run, tmp_path, capsys, caplog):
    cache, output, _ = run
    best = ["evaluate", str(output / "best"), "--workers", "0", "--json"]
    devkit = cache / "synthetic-voc-v2-24-13-s0" / "VOCdevkit"
    main_dir = devkit / "VOC2007"
    assert main(best) == 0
    capsys.readouterr()
    test_ids = sorted((main_dir / "ImageSets" / "Main" / "test.txt").read_text().split())
    image = main_dir / "JPEGImages" / f"{test_ids[0]}.jpg"
    kept = tmp_path / image.name
    shutil.copy2(image, kept)
    try:
        # one test image replaced by another picture
        Image.open(main_dir / "JPEGImages" / f"{test_ids[1]}.jpg").save(image)
        assert main(best) == 2
        _one_line_error(capsys, "test split", "changed", "--data")
        # with --data the user says which data to score: always accepted
        assert main([*best, "--data", str(devkit)]) == 0
        capsys.readouterr()
        # --resume goes on, saying that the figures before and after are not comparable
        copy = _copy(output, tmp_path)
        with caplog.at_level("WARNING", logger="msrn"):
            assert main(["train", "--resume", str(copy), "--epochs", "2", "--max-steps-per-epoch", "1"]) == 0
        assert "The test split differs from the one the run" in caplog.text
        assert "image files of other sizes" in caplog.text
        capsys.readouterr()
        shutil.copy2(kept, image)  # the same bytes and file time again
        assert main(best) == 0
        capsys.readouterr()
        # test.txt cut to 3 ids
        split_file = main_dir / "ImageSets" / "Main" / "test.txt"
        split_file.rename(tmp_path / "test.txt")
        split_file.write_text("\n".join(test_ids[:3]) + "\n")
        assert main(best) == 2
        _one_line_error(capsys, "13 images", "3 now")
    finally:
        shutil.copy2(kept, image)
        if (tmp_path / "test.txt").exists():
            shutil.copy2(tmp_path / "test.txt", main_dir / "ImageSets" / "Main" / "test.txt")
    # The generated set written again (its cache was deleted) is the same data: accepted.
    shutil.rmtree(cache / "synthetic-voc-v2-24-13-s0")
    assert main(best) == 0
    capsys.readouterr()
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda path: path.write_text("[1, 2]"), "not a record of the run's splits"),
        (lambda path: path.write_text('{"test": '), "not valid JSON"),
        (lambda path: (path.unlink(), path.symlink_to("/dev/zero")), "not a regular file"),
    ],
    ids=["list", "truncated", "dev-zero"],
)
def test_damaged_splits_record_is_one_line_naming_the_file(run, tmp_path, capsys, damage, message):
    copy = _copy(run[1], tmp_path)
    damage(copy / "splits.json")
    assert main(["evaluate", str(copy / "best"), "--workers", "0"]) == 2
    _one_line_error(capsys, str(copy / "splits.json"), message, "delete it")


def test_damaged_best_checkpoint_json_on_resume_is_one_line_naming_the_file(run, tmp_path, capsys):
    copy = _copy(run[1], tmp_path)
    info_file = copy / "best" / "checkpoint.json"
    info_file.write_text('{"epoch": ')
    assert main(["train", "--resume", str(copy), "--epochs", "2"]) == 2
    _one_line_error(capsys, str(info_file), "not valid JSON", "fix or delete the file")


# ------------------------------------------------------------------------ found while writing
def _two_class_csvs(folder: pathlib.Path, devkit: pathlib.Path) -> None:
    """Train and test CSVs with the classes person and dog only (list layout)."""
    for split in ("trainval", "test"):
        voc = VOCDataset(devkit, split)
        person, dog = voc.classes.index("person"), voc.classes.index("dog")
        rows = [
            f"{path},{';'.join(name for name, i in (('person', person), ('dog', dog)) if target[i])}"
            for path, target in zip(voc.image_paths, voc.targets, strict=True)
        ]
        (folder / f"{split}.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")


def test_a_data_set_of_two_classes_trains_and_evaluates_without_top3(run, tmp_path, capsys, caplog):
    cache = run[0]
    _two_class_csvs(tmp_path, cache / "synthetic-voc-v2-24-13-s0" / "VOCdevkit")
    output = tmp_path / "two"
    csv = dict(dataset="csv", data=str(tmp_path / "trainval.csv"), test_split=str(tmp_path / "test.csv"))
    with caplog.at_level("INFO", logger="msrn"):
        record = train(tiny_config(cache, output, epochs=1, **csv))
    assert "top-3 metrics are left out" in caplog.text
    assert not [key for key in record if "top3" in key] and np.isfinite(record["mAP"])
    assert main(["evaluate", str(output / "best"), "--workers", "0", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert "mAP" in metrics and not [key for key in metrics if "top3" in key]


def test_default_workers_are_capped_at_the_cores_available(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert TrainConfig().workers == paper_config().workers == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert TrainConfig().workers == 4
    assert TrainConfig(workers=8).workers == 8  # a number given is used as given
