"""msrn: MSRN (Multi-layered Semantic Representation Network) for multi-label image classification.

Importing the package registers the ``msrn_*`` architectures in timm's model registry, so
``timm.create_model("msrn_resnet101", num_classes=20)`` works after ``import msrn``.
"""
__version__ = "0.1.0"

import logging as _logging
from typing import Any as _Any, List as _List

import timm as _timm

from . import hub, layers, models
from .hub import push_to_hub, save_pretrained
from .loss import MSRNLoss
from .models import MSRN
from .optim import param_groups

_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def create_model(model_name: str, pretrained: bool = False, **kwargs: _Any) -> MSRN:
    """Same as ``timm.create_model``; accepts ``msrn_*`` names, ``hf-hub:`` and ``local-dir:``."""
    hub._check_model_source(model_name, kwargs.get("cache_dir"))  # clear errors for bad checkpoint sources
    return _timm.create_model(model_name, pretrained=pretrained, **kwargs)


def list_models(pattern: str = "msrn*", pretrained: bool = False) -> _List[str]:
    """The registered MSRN architectures (``timm.list_models("msrn*")``)."""
    return _timm.list_models(pattern, pretrained=pretrained)


__all__ = ["MSRN", "MSRNLoss", "create_model", "list_models", "param_groups", "layers", "models", "hub",
           "save_pretrained", "push_to_hub", "__version__"]
