"""Reusable MSRN building blocks: pure PyTorch, no knowledge of datasets or files."""

from .backbone import MultiBranchBackbone
from .diffpool import DiffPool, compactness_loss
from .gat import GATLayer
from .label_group_embedding import LabelGroupEmbedding
from .semantic_head import SemanticHead
from .sga import SemanticGuidedAttention, semantic_guided_attention

__all__ = [
    "GATLayer",
    "DiffPool",
    "compactness_loss",
    "LabelGroupEmbedding",
    "SemanticGuidedAttention",
    "semantic_guided_attention",
    "MultiBranchBackbone",
    "SemanticHead",
]
