"""msrn: MSRN (Multi-layered Semantic Representation Network) for multi-label image classification.

Importing the package registers the ``msrn_*`` architectures in timm's model registry, so
``timm.create_model("msrn_resnet101", labels="voc2007")`` works after ``import msrn``.
"""

import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING

from . import hub, labels, layers, models, targets
from ._warnings import MSRNWarning
from .hub import push_to_hub, save_pretrained
from .loss import MSRNLoss
from .models import MSRN, create_model, list_models, load_model
from .optim import param_groups
from .version import __version__

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

if _TYPE_CHECKING:  # loaded on first use (below); named here for type checkers and IDEs
    from .predictor import Predictor

# The other public modules load on first use (PEP 562), so ``import msrn`` costs what registering the
# models costs, and ``msrn.data``, ``msrn.metrics``, ... work without an import of their own.
_LAZY_SUBMODULES = (
    "backends",
    "cli",
    "convert",
    "data",
    "engine",
    "export",
    "features",
    "graph",
    "metrics",
    "predictor",
    "visualize",
)
# Public classes of those modules, also loaded on first use: ``msrn.Predictor`` is msrn.predictor's.
_LAZY_ATTRIBUTES = {"Predictor": "predictor"}

__all__ = [
    "MSRN",
    "MSRNLoss",
    "MSRNWarning",
    "Predictor",
    "create_model",
    "list_models",
    "load_model",
    "param_groups",
    "labels",
    "layers",
    "models",
    "hub",
    "save_pretrained",
    "push_to_hub",
    "__version__",
    "loss",
    "optim",
    "targets",
    *_LAZY_SUBMODULES,
]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name in _LAZY_ATTRIBUTES:
        value = getattr(__getattr__(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES) | set(_LAZY_ATTRIBUTES))
