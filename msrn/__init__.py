"""msrn: MSRN (Multi-layered Semantic Representation Network) for multi-label image classification.

Importing the package registers the ``msrn_*`` architectures in timm's model registry, so
``timm.create_model("msrn_resnet101", labels="voc2007")`` works after ``import msrn``.
"""
import logging as _logging

from . import hub, labels, layers, models
from .hub import push_to_hub, save_pretrained
from .loss import MSRNLoss
from .models import MSRN, create_model, list_models, load_model
from .optim import param_groups
from .version import __version__

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "MSRN", "MSRNLoss", "create_model", "list_models", "load_model", "param_groups", "labels", "layers",
    "models", "hub", "save_pretrained", "push_to_hub", "__version__",
]
