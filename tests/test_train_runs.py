"""Runs a user can trust: used folders refused, one writer, resume with changes, kill and resume,
consistent checkpoint folders, bad test data found first, strict JSON, results independent of --workers."""

import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_training import TINY_ARGS, one_thread, subprocess_env, torchrun
from tiny_training import tiny_config as _config

import msrn.engine.epoch as epoch_steps
from msrn._io import atomic_write, remove_partial_writes, replace_folder
from msrn.cli import main as cli_main
from msrn.data import BadImageError, generate_synthetic_voc
from msrn.engine import (
    LRSchedule,
    NonFiniteLossError,
    RunFolderError,
    evaluate_checkpoint,
    resume_config,
    train,
)
from msrn.engine.loop import train_one_epoch

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

REPO = pathlib.Path(__file__).resolve().parents[1]


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    return cache


def _snapshot(folder: pathlib.Path, but: tuple = ()) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".train") and p.name not in but
    }


def _weights(folder: pathlib.Path) -> dict:
    return load_file(folder / "last" / "model.safetensors")


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------------------- used folders, writers
def test_a_folder_holding_a_run_is_refused_and_overwrite_replaces_it(cache_dir, tmp_path, capsys):
    output = tmp_path / "run"
    train(_config(cache_dir, output, epochs=1))
    before = _snapshot(output)
    with pytest.raises(RunFolderError, match=f"--resume {output}, or replace it with --overwrite"):
        train(_config(cache_dir, output, epochs=1, seed=1))
    assert _snapshot(output) == before  # nothing touched

    argv = ["train", "--cache-dir", str(cache_dir), "--output-dir", str(output), "--epochs", "1"] + TINY_ARGS
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert _snapshot(output) == before

    (output / "notes.txt").write_text("mine")
    assert cli_main(argv + ["--overwrite", "--seed", "1"]) == 0
    assert len((output / "log.jsonl").read_text().splitlines()) == 1  # the old run's line is gone
    assert json.loads((output / "train_config.json").read_text())["seed"] == 1
    assert (output / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert cli_main(argv + ["--overwrite", "--resume", str(output)]) == 2
    assert "contradict" in capsys.readouterr().err


_HOLD_LOCK = """
import sys
from msrn.engine.run_folder import RunFolderLock
lock = RunFolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_two_writers_are_refused_and_a_killed_writers_lock_is_taken_over(cache_dir, tmp_path):
    output = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(output)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = f"being written by another training process \\(pid {holder.pid} "
        with pytest.raises(RunFolderError, match=busy):
            train(_config(cache_dir, output, epochs=1))
        assert not (output / "train_state.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without releasing its lock: the next run takes the folder over.
    record = train(_config(cache_dir, output, epochs=1))
    assert record["epoch"] == 1 and not (output / ".train-owner.json").exists()


# --------------------------------------------------------------------------------------------- resume
def test_resume_applies_epochs_and_lr_and_refuses_fixed_settings(cache_dir, tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["train", "--cache-dir", str(cache_dir), "--output-dir", str(output), "--epochs", "3"] + TINY_ARGS
    assert cli_main(argv) == 0
    capsys.readouterr()

    # A finished run: more epochs are needed to go on; settings that define the run cannot change.
    assert cli_main(["train", "--resume", str(output)]) == 2
    assert "finished its 3 epochs; pass --epochs" in capsys.readouterr().err
    resume = ["train", "--resume", str(output)]
    assert cli_main(resume + ["--epochs", "5", "--batch-size", "4", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch-size 8 -> 4" in err and "--image-size 64 -> 32" in err
    assert "cannot change in the middle of a run" in err
    assert cli_main(["train", "--resume", str(output), "--output-dir", str(tmp_path / "elsewhere")]) == 2
    assert "drop --output-dir" in capsys.readouterr().err
    assert cli_main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no train_state.pt" in capsys.readouterr().err

    # Only --resume and the changes: data, model and recipe come from the run's saved settings.
    assert cli_main(resume + ["--epochs", "5", "--lr", "0.001", "--workers", "1"]) == 0
    assert "epoch 5/5" in capsys.readouterr().out
    records = [_strict_json(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["test_images"] == 13 for r in records)
    lrs = [r["lr"] for r in records]
    # warm-up, then cosine over 3 epochs at base 2e-3; epochs 4-5 continue the decay at base 1e-3.
    assert lrs[:3] == pytest.approx([1e-3, 2e-3, 1e-3])
    assert lrs[3:] == pytest.approx([1e-3 * 0.375, 1e-3 * 0.125])
    saved = json.loads((output / "train_config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["workers"], saved["batch_size"]) == (5, 0.001, 1, 8)
    assert resume_config(output).epochs == 5


def test_lengthened_schedules_never_rise_or_reach_zero():
    cosine = LRSchedule(4, "cosine", warmup=1)
    assert [round(cosine(e), 4) for e in range(4)] == [0.5, 1.0, 0.75, 0.25]
    longer = cosine.lengthened(6, finished=4)
    rates = [longer(e) for e in range(3, 6)]
    assert rates[0] == cosine(3)  # the decay goes on from the last trained epoch's rate
    assert all(b < a for a, b in zip(rates, rates[1:], strict=False)) and min(rates) > 0
    assert longer.lengthened(8, finished=6)(6) < longer(5)
    step = LRSchedule(3, "step", steps=[1], gamma=0.1)
    assert [step.lengthened(5, 3)(e) for e in range(5)] == pytest.approx([1, 0.1, 0.1, 0.1, 0.1])
    assert cosine.lengthened(6, finished=1).anchor == (1, 1.0)  # still warming up: the plain curve


def test_non_finite_loss_advice_works(cache_dir, tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"
    argv = [
        "train",
        "--cache-dir",
        str(cache_dir),
        "--output-dir",
        str(output),
        "--epochs",
        "2",
        "--stop-after-epoch",
        "1",
    ] + TINY_ARGS
    assert cli_main(argv) == 0
    before = _snapshot(output, but=("train_config.json",))  # a resume records its settings there

    def diverging_above_1e3(model, criterion, loader, optimizer, *args, **kwargs):
        # What a too-high learning rate does: the loss explodes (here: above lr 1e-3).
        if optimizer.param_groups[0]["lr"] > 1e-3:
            raise NonFiniteLossError(
                "The training loss became non-finite (nan on rank 0) at epoch 2, "
                "step 1. The weights were not updated by this step."
            )
        return train_one_epoch(model, criterion, loader, optimizer, *args, **kwargs)

    monkeypatch.setattr(epoch_steps, "train_one_epoch", diverging_above_1e3)
    assert cli_main(["train", "--resume", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "The checkpoints of epoch 1 stay" in err
    assert _snapshot(output, but=("train_config.json",)) == before
    advice = re.search(r"(--resume \S+ --lr \S+)\.$", err.strip()).group(1)
    assert cli_main(["train"] + advice.split()) == 0  # doing what the message says works
    record = _strict_json((output / "log.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 2 and record["lr"] == pytest.approx(2e-4)


def test_sigkill_then_resume_is_byte_identical_and_cleans_up(cache_dir, tmp_path):
    straight = tmp_path / "straight"
    train(_config(cache_dir, straight, epochs=3))
    killed = tmp_path / "killed"
    command = [
        sys.executable,
        str(REPO / "examples" / "train_voc.py"),
        "--cache-dir",
        str(cache_dir),
        "--output-dir",
        str(killed),
        "--epochs",
        "3",
        "--threads",
        "1",
    ] + TINY_ARGS
    process = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not (killed / "log.jsonl").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "train_state.pt").is_file(), process.stderr.read().decode()[-2000:]
    # What a kill in the middle of replacing last/ leaves: a half-written folder and the old one aside.
    (killed / ".last.abcd1234.tmp").mkdir(exist_ok=True)
    (killed / ".last.abcd1234.tmp" / "model.safetensors").write_bytes(b"half")
    if (killed / "last").is_dir() and not (killed / ".last.old").exists():
        os.rename(killed / "last", killed / ".last.old")
    (killed / ".train_state.pt.0000.tmp").write_bytes(b"half")

    assert cli_main(["train", "--resume", str(killed)]) == 0
    hidden = [p.name for p in killed.iterdir() if p.name.startswith(".")]
    assert hidden == [".train.lock"]  # the lock file stays (unlocked); nothing half-written
    _assert_same_weights(_weights(straight), _weights(killed))
    records = [_strict_json(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["mAP"] for r in records] == [
        _strict_json(line)["mAP"] for line in (straight / "log.jsonl").read_text().splitlines()
    ]


_EXAMPLE = (str(REPO / "examples" / "train_voc.py"),)


def test_torchrun_resume_is_exact_and_only_rank_0_reports(cache_dir, tmp_path):
    straight = torchrun(cache_dir, tmp_path / "straight", "--epochs", "2", entry=_EXAMPLE)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert straight.stdout.count("finished:") == 1 and straight.stdout.count("epoch 2/2") == 1
    assert straight.stderr.count("best/ is chosen on the test split") == 1  # rank 0's warning only
    # Each test image is scored once (7 + 6 images: no padding duplicate, none dropped), with the
    # model that is saved.
    record = _strict_json((tmp_path / "straight" / "log.jsonl").read_text().splitlines()[-1])
    assert record["test_images"] == 13
    metrics, _, _ = evaluate_checkpoint(
        tmp_path / "straight" / "last", cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", workers=0
    )
    assert record["mAP"] == pytest.approx(metrics["mAP"], abs=1e-3)
    first = torchrun(
        cache_dir, tmp_path / "split", "--epochs", "2", "--stop-after-epoch", "1", entry=_EXAMPLE
    )
    assert first.returncode == 0, first.stderr[-3000:]
    refused = torchrun(cache_dir, tmp_path / "split", "--epochs", "2", entry=_EXAMPLE)
    assert refused.returncode != 0, refused.stderr[-3000:]
    assert refused.stderr.count("already holds a training run") == 1, refused.stderr[-3000:]
    assert "rank      : 0" in refused.stderr and "exitcode  : 2" in refused.stderr  # the root cause
    resumed = torchrun(
        cache_dir, tmp_path / "split", "--resume", str(tmp_path / "split")
    )  # the documented form
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(_weights(tmp_path / "straight"), _weights(tmp_path / "split"))


def test_torchrun_diverged_loss_is_reported_once_by_rank_0(cache_dir, tmp_path):
    # Every process stops at once; the followers end with 0 so that torchrun does not kill rank 0
    # before it has printed why the job failed.
    diverged = torchrun(cache_dir, tmp_path / "run", "--epochs", "2", "--lr", "1e12")
    assert diverged.returncode != 0
    assert diverged.stderr.count("msrn train: stopped: The training loss became non-finite") == 1, (
        diverged.stderr[-3000:]
    )
    assert "rank      : 0" in diverged.stderr  # torchrun names rank 0 as the failure


# ------------------------------------------------------------------------------ checkpoints and files
def test_checkpoint_folders_are_whole_and_readable(cache_dir, tmp_path):
    output = tmp_path / "run"
    train(_config(cache_dir, output, epochs=2))
    umask = os.umask(0)
    os.umask(umask)
    for path in [
        output / "train_state.pt",
        output / "log.jsonl",
        output / "last" / "model.safetensors",
        output / "best" / "checkpoint.json",
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((output / "last").stat().st_mode) == 0o777 & ~umask
    info = json.loads((output / "last" / "checkpoint.json").read_text())
    last_record = _strict_json((output / "log.jsonl").read_text().splitlines()[-1])
    assert info["epoch"] == 2 and info["mAP"] == last_record["mAP"]

    # A write that fails leaves the old folder whole; a kill between the renames is undone.
    folder = tmp_path / "folder"
    replace_folder(folder, lambda new: (new / "a").write_text("1"))

    def crash(new):
        (new / "a").write_text("2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_folder(folder, crash)
    assert (folder / "a").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    os.rename(folder, tmp_path / ".folder.old")
    atomic_write(tmp_path / "x", lambda path: pathlib.Path(path).write_text("x"))
    assert remove_partial_writes(tmp_path) == [".folder.old"] and (folder / "a").read_text() == "1"


# ---------------------------------------------------------------------------------- evaluation data
def test_unreadable_test_image_is_found_before_training(cache_dir, tmp_path, monkeypatch):
    devkit = tmp_path / "VOCdevkit"
    shutil.copytree(cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", devkit)
    test_id = (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()[-1]
    broken = devkit / "VOC2007" / "JPEGImages" / f"{test_id}.jpg"
    broken.write_bytes(b"this is not a JPEG")

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the test images were checked")

    monkeypatch.setattr(epoch_steps, "train_one_epoch", no_training)
    with pytest.raises(BadImageError, match=re.escape(str(broken))):
        train(_config(cache_dir, tmp_path / "run", data=str(devkit)))
    assert not (tmp_path / "run" / "train_state.pt").exists()


def test_classes_without_positives_are_named_and_outputs_are_strict_json(cache_dir, tmp_path, caplog, capsys):
    output = tmp_path / "run"
    with caplog.at_level("WARNING"):
        record = train(_config(cache_dir, output, epochs=1))
    # The 13-image test set has no bus, horse or tvmonitor.
    assert "left out of the test mAP: bus, horse, tvmonitor" in caplog.text
    assert np.isfinite(record["mAP"]) and np.isnan(record["class_ap"]["bus"])
    for line in (output / "log.jsonl").read_text().splitlines():
        _strict_json(line)
    devkit = cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit"
    evaluate = ["evaluate", str(output / "best"), "--data", str(devkit), "--workers", "0", "--json"]
    assert cli_main(evaluate) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["class_ap"]["bus"] is None and result["metrics"]["mAP"] == pytest.approx(record["mAP"])


# ------------------------------------------------------------------------------------------ determinism
def test_results_do_not_depend_on_the_number_of_workers(cache_dir, tmp_path):
    train(_config(cache_dir, tmp_path / "w0", epochs=1, workers=0))
    train(_config(cache_dir, tmp_path / "w2", epochs=1, workers=2))
    _assert_same_weights(_weights(tmp_path / "w0"), _weights(tmp_path / "w2"))
