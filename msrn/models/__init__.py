"""MSRN architectures, registered in timm's model registry on import."""
from .msrn import EMBEDDING_MODES, MSRN, VARIANTS

__all__ = ["MSRN", "VARIANTS", "EMBEDDING_MODES"]
