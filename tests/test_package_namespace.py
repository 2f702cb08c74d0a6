"""``import msrn`` gives every public module as an attribute (``msrn.data``, ``msrn.features``, ...),
loading the ones the model registry does not need on first use."""

import subprocess
import sys

import pytest

import msrn

PUBLIC_MODULES = [
    "backends",
    "cli",
    "convert",
    "data",
    "engine",
    "export",
    "features",
    "graph",
    "hub",
    "labels",
    "layers",
    "loss",
    "metrics",
    "models",
    "optim",
    "predictor",
    "visualize",
]


def test_public_modules_are_attributes_of_the_package():
    for name in PUBLIC_MODULES:
        module = getattr(msrn, name)
        assert module.__name__ == f"msrn.{name}"
        assert name in dir(msrn) and name in msrn.__all__
    assert callable(msrn.features.load_label_features) and callable(msrn.metrics.multilabel_metrics)


def test_import_msrn_loads_the_other_modules_only_when_used():
    code = (
        "import sys, msrn; lazy = ['msrn.data', 'msrn.engine', 'msrn.metrics', 'msrn.convert']; "
        "print([m for m in lazy if m in sys.modules]); msrn.graph.label_graph_from_targets; "
        "print('msrn.graph' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_predictor_class_loads_on_first_use():
    code = (
        "import sys, msrn; print('msrn.predictor' in sys.modules); from msrn import Predictor; "
        "print(Predictor is msrn.predictor.Predictor, 'Predictor' in dir(msrn))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["False", "True True"]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_module"):
        msrn.no_such_module  # noqa: B018
