"""MSRN architectures, registered in timm's model registry on import, and the functions that make them."""

from ._factory import create_model, infer_model_args, list_models, load_model
from .msrn import EMBEDDING_MODES, MSRN, VARIANTS

__all__ = [
    "MSRN",
    "VARIANTS",
    "EMBEDDING_MODES",
    "create_model",
    "list_models",
    "load_model",
    "infer_model_args",
]
