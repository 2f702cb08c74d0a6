"""Reusable MSRN building blocks: pure PyTorch, no knowledge of datasets or files."""

from .backbone import MultiBranchBackbone
from .diffpool import DiffPool, compactness_loss
from .gat import GATLayer, edge_index_from_mask
from .label_group_embedding import LabelGroupEmbedding
from .label_wise_head import LabelWiseHead, LabelWiseLinear
from .semantic_head import SemanticHead
from .sga import SemanticGuidedAttention, semantic_guided_attention

__all__ = [
    "GATLayer",
    "edge_index_from_mask",
    "DiffPool",
    "compactness_loss",
    "LabelGroupEmbedding",
    "LabelWiseHead",
    "LabelWiseLinear",
    "SemanticGuidedAttention",
    "semantic_guided_attention",
    "MultiBranchBackbone",
    "SemanticHead",
]
