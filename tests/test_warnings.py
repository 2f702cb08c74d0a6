"""A warning that changes what the user gets is a Python warning (``msrn.MSRNWarning``, pointing at the
user's line) and a log record; the CLI shows it once, in its log."""

import logging
import warnings

import pytest
import timm
import torch

import msrn

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
    with pytest.warns(
        msrn.MSRNWarning, match=r"thresholds \(2\) do not fit the model's 3 labels.*not applied"
    ):
        loaded = timm.create_model(f"local-dir:{tmp_path / 'fitted'}", num_classes=3)
    assert loaded.get_label_thresholds() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", msrn.MSRNWarning)
        assert timm.create_model(f"local-dir:{tmp_path / 'fitted'}").get_label_thresholds() == [0.3, 0.7]
