"""The trainer with --ema and a validation split: exact resume, best/ chosen on validation, fitted
thresholds saved with best/, what --resume refuses, and both under torchrun."""

import json
import pathlib

import pytest
import timm
import torch
from safetensors.torch import load_file
from tiny_training import TINY_ARGS, one_thread, torchrun
from tiny_training import tiny_config as _config

import msrn
import msrn.engine.epoch as epoch_steps
from msrn.cli import main as cli_main
from msrn.data import VOCDataset, generate_synthetic_voc, stratified_holdout
from msrn.engine import train
from msrn.graph import label_graph_from_targets

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

VAL_EMA = dict(val_fraction=0.25, ema=0.9)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    return cache


def _records(folder: pathlib.Path) -> list:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_ema_and_validation_resume_exactly_and_best_is_chosen_on_validation(cache_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_config(cache_dir, straight, epochs=2, **VAL_EMA))
    train(_config(cache_dir, split, epochs=2, stop_after_epoch=1, **VAL_EMA))
    train(_config(cache_dir, split, epochs=2, resume=str(split), **VAL_EMA))

    # The raw weights, the EMA (weights and update count) and the saved folders are the same.
    state_straight = torch.load(straight / "train_state.pt", weights_only=True)
    state_split = torch.load(split / "train_state.pt", weights_only=True)
    _assert_same_tensors(state_straight["model"], state_split["model"])
    _assert_same_tensors(state_straight["ema"]["weights"], state_split["ema"]["weights"])
    assert state_straight["ema"]["updates"] == state_split["ema"]["updates"] == 4  # 2 epochs x 2 steps
    for folder in ("last", "best"):
        _assert_same_tensors(
            load_file(straight / folder / "model.safetensors"),
            load_file(split / folder / "model.safetensors"),
        )
        assert (straight / folder / "config.json").read_text() == (split / folder / "config.json").read_text()
    timing = ("images_per_s", "train_time_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in _records(straight)] == [
        {k: v for k, v in r.items() if k not in timing} for r in _records(split)
    ]

    # last/ holds the EMA weights (what was evaluated), train_state.pt the raw ones too.
    last = load_file(straight / "last" / "model.safetensors")
    _assert_same_tensors(last, state_straight["ema"]["weights"])
    assert not torch.equal(last["head.fc2.weight"], state_straight["model"]["head.fc2.weight"])

    # 6 of the 24 training images are held out: not trained on, not in the label graph.
    records = _records(straight)
    assert all(r["val_images"] == 6 and r["test_images"] == 13 for r in records)
    for key in ("val_mAP", "val_CF1", "val_OF1", "fitted_CF1", "fitted_OF1", "fitted_CP", "fitted_OR", "mAP"):
        assert key in records[-1], key
    best_epoch = max(records, key=lambda r: r["val_mAP"])["epoch"]  # the first of equal maxima
    info = json.loads((straight / "best" / "checkpoint.json").read_text())
    assert info["epoch"] == best_epoch == records[-1]["best_epoch"]
    assert info["val_mAP"] == records[-1]["best_val_mAP"] == records[best_epoch - 1]["val_mAP"]
    assert info["mAP"] == records[-1]["best_mAP"] == records[best_epoch - 1]["mAP"]
    trainval = VOCDataset(cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", "trainval")
    held = stratified_holdout(trainval.targets, 0.25, 0, ignore=trainval.difficult)
    kept = [i for i in range(len(trainval)) if i not in set(held.tolist())]
    best = timm.create_model(f"local-dir:{straight / 'best'}")
    assert torch.equal(best.label_graph, label_graph_from_targets(trainval.targets[kept]))
    thresholds = best.pretrained_cfg["label_thresholds"]
    assert len(thresholds) == 20 and all(0.0 < t < 1.0 for t in thresholds)
    assert "label_thresholds" not in timm.create_model(f"local-dir:{straight / 'last'}").pretrained_cfg


def test_best_follows_validation_not_test(cache_dir, tmp_path, monkeypatch):
    """Validation mAP falling while test mAP rises: best/ stays at epoch 1."""
    real = epoch_steps.epoch_metrics
    epochs = iter(range(1, 10))

    def rigged(test_predictions, val_predictions):
        metrics, thresholds = real(test_predictions, val_predictions)
        epoch = next(epochs)
        return {**metrics, "val_mAP": 90.0 - epoch, "mAP": 50.0 + epoch}, thresholds

    monkeypatch.setattr(epoch_steps, "epoch_metrics", rigged)
    output = tmp_path / "run"
    train(_config(cache_dir, output, epochs=3, max_steps_per_epoch=1, val_fraction=0.25))
    records = _records(output)
    assert [r["best_epoch"] for r in records] == [1, 1, 1]
    assert [r["best_mAP"] for r in records] == [51.0, 51.0, 51.0]
    assert json.loads((output / "best" / "checkpoint.json").read_text())["epoch"] == 1


def test_val_split_file_and_resume_refusals(cache_dir, tmp_path, capsys):
    split_file = tmp_path / "val.txt"
    split_file.write_text("000000\n000001.jpg\nJPEGImages/000002.jpg\n000003\n000004\n")
    output = tmp_path / "run"
    argv = ["train", "--cache-dir", str(cache_dir), "--output-dir", str(output), "--epochs", "1"]
    assert cli_main(argv + TINY_ARGS + ["--val-split", str(split_file), "--ema", "0.99"]) == 0
    printed = capsys.readouterr().out
    assert "validation mAP" in printed and "fitted on it" in printed and "best/: epoch 1" in printed
    assert _records(output)[0]["val_images"] == 5
    # The validation split, the EMA and its warm-up cannot change in the middle of a run.
    resume = ["train", "--resume", str(output), "--epochs", "2"]
    for option in (["--ema", "0.9"], ["--no-ema-warmup"], ["--val-fraction", "0.5"], ["--val-seed", "1"]):
        assert cli_main(resume + option) == 2
        assert "cannot change in the middle of a run" in capsys.readouterr().err
    # Bad values and bad files: one line, no traceback.
    bad = ["train", "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path / "bad")] + TINY_ARGS
    split_file.write_text("000000\nnot-an-image\n")
    for option, message in [
        (["--val-split", str(split_file)], "line 2: 'not-an-image' is not an image of the training split"),
        (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
        (["--val-fraction", "0.2", "--val-split", str(split_file)], "either --val-fraction or --val-split"),
        (["--ema", "1"], "--ema must be a decay between 0 and 1"),
    ]:
        assert cli_main(bad + option) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_without_validation_a_warning_says_best_is_chosen_on_test(cache_dir, tmp_path, caplog):
    warning = pytest.warns(msrn.MSRNWarning, match="best/ is chosen on the test split")
    with caplog.at_level("INFO", logger="msrn"), warning:
        record = train(_config(cache_dir, tmp_path / "run", epochs=1))
    assert "best/ is chosen on the test split" in caplog.text
    assert "val_mAP" not in record and "fitted_CF1" not in record and record["best_epoch"] == 1


def test_torchrun_with_ema_and_validation_resumes_exactly(cache_dir, tmp_path):
    options = ("--ema", "0.9", "--val-fraction", "0.25")
    straight = torchrun(cache_dir, tmp_path / "straight", "--epochs", "2", *options)
    assert straight.returncode == 0, straight.stderr[-3000:]
    record = _records(tmp_path / "straight")[-1]
    assert record["val_images"] == 6 and record["test_images"] == 13
    first = torchrun(cache_dir, tmp_path / "split", "--epochs", "2", "--stop-after-epoch", "1", *options)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = torchrun(cache_dir, tmp_path / "split", "--resume", str(tmp_path / "split"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("last/model.safetensors", "best/model.safetensors"):
        _assert_same_tensors(load_file(tmp_path / "straight" / name), load_file(tmp_path / "split" / name))
    assert [r["val_mAP"] for r in _records(tmp_path / "straight")] == [
        r["val_mAP"] for r in _records(tmp_path / "split")
    ]


def test_ema_updates_once_per_optimizer_step_with_accumulation(cache_dir, tmp_path):
    # 24 images in batches of 8: 3 batches, which --accum-steps 2 makes 2 optimizer steps (2 + 1).
    train(_config(cache_dir, tmp_path / "run", epochs=1, max_steps_per_epoch=None, accum_steps=2, ema=0.9))
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["ema"]["updates"] == 2
