"""A warning that changes what the user gets is a Python warning (``msrn.MSRNWarning``, pointing at the
user's line) and a log record; the CLI shows it once, in its log."""

import logging
import subprocess
import sys
import warnings

import pytest
import timm
import torch
from tiny_training import TINY_ARGS, subprocess_env

import msrn
from msrn.data import generate_synthetic_voc

TINY = dict(backbone="test_resnet", embed_dim=16, hidden_dim=32, gat_hidden_dim=12, num_groups=2)


def test_msrn_warning_is_a_user_warning_exported_by_the_package():
    assert issubclass(msrn.MSRNWarning, UserWarning) and "MSRNWarning" in msrn.__all__


def test_a_model_without_label_graph_warns_at_the_callers_line(caplog):
    with caplog.at_level(logging.WARNING, logger="msrn"), pytest.warns(msrn.MSRNWarning) as record:
        timm.create_model("msrn_custom", num_classes=3, **TINY)
    (warning,) = [w for w in record if "no label graph" in str(w.message)]
    assert warning.filename == __file__  # not timm's or msrn's own code
    assert "label_graph_from_targets" in str(warning.message)
    assert [r.getMessage() for r in caplog.records] == [str(warning.message)]  # and the log, once


def test_the_warning_can_be_filtered_by_its_category():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=msrn.MSRNWarning)
        msrn.MSRN(num_classes=3, **TINY)
    assert not record


def test_no_warning_with_a_label_graph():
    with warnings.catch_warnings():
        warnings.simplefilter("error", msrn.MSRNWarning)
        msrn.MSRN(num_classes=3, label_graph=torch.ones(3, 3, dtype=torch.bool), **TINY)


def test_saved_thresholds_that_do_not_fit_warn(tmp_path):
    model = timm.create_model(
        "msrn_custom", num_classes=2, label_graph=torch.ones(2, 2, dtype=torch.bool), **TINY
    )
    model.pretrained_cfg = {**model.pretrained_cfg, "label_thresholds": [0.3, 0.7]}
    msrn.save_pretrained(model, tmp_path / "fitted")
    expected = r"fitted for the checkpoint's 2 labels and are not applied to the model's 3"
    with pytest.warns(msrn.MSRNWarning, match=expected):
        loaded = timm.create_model(f"local-dir:{tmp_path / 'fitted'}", num_classes=3)
    assert loaded.get_label_thresholds() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", msrn.MSRNWarning)
        assert timm.create_model(f"local-dir:{tmp_path / 'fitted'}").get_label_thresholds() == [0.3, 0.7]


def test_the_train_command_shows_each_warning_once_among_its_info_lines(tmp_path):
    cache = tmp_path / "cache"
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    command = [sys.executable, "-m", "msrn", "train", *TINY_ARGS, "--epochs", "1", "--cache-dir", str(cache)]
    command += ["--output-dir", str(tmp_path / "run"), "--label-features", "learnable"]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("best/ is chosen on the test split") == 1, result.stderr
    assert result.stderr.count("The label features are learnable, not word vectors") == 1, result.stderr
    assert "MSRNWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert "INFO msrn_resnet18: 20 labels" in result.stderr  # INFO still shown by default


def test_thresholds_next_to_a_checkpoint_given_with_an_architecture_name_warn(tmp_path):
    model = timm.create_model("msrn_resnet18", labels="voc2007", embed_dim=16, hidden_dim=32)
    model.pretrained_cfg = {**model.pretrained_cfg, "label_thresholds": [0.4] * 20}
    folder = msrn.save_pretrained(model, tmp_path / "best")
    with pytest.warns(msrn.MSRNWarning, match=r"thresholds fitted for .*not applied.*local-dir:"):
        loaded = msrn.load_model("msrn_resnet18", checkpoint=str(folder / "model.safetensors"))
    assert loaded.get_label_thresholds() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", msrn.MSRNWarning)
        assert msrn.load_model(f"local-dir:{folder}").get_label_thresholds() == [0.4] * 20
