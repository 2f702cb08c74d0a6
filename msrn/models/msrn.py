"""MSRN: Multi-layered Semantic Representation Network (Qu et al.), as a timm model.

The model composes the layers of :mod:`msrn.layers`:

    image -> MultiBranchBackbone -> B maps f_b [N, d, H_b, W_b]
    (label features V, label graph A) -> LabelGroupEmbedding -> E_l [n, d], E_g [m, d]
    for each branch: SemanticGuidedAttention(f_b, [E_l; E_g]) -> [N, n + m, d]
    concatenate branches on channels -> M [N, n + m, B * d] -> SemanticHead -> logits [N, n]

With ``head="label_wise"`` (docs/variants.md) the attention rows are K learned query groups and the
m groups instead, and a LabelWiseHead gives every label its own read-out of them:

    for each branch: SemanticGuidedAttention(f_b, [E_q; E_g]) -> [N, K + m, d]
    M [N, K + m, B * d], E_l [n, d] -> LabelWiseHead -> logits [N, n]

Registered architectures sit at the bottom of this file (timm's layout).
"""

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from .. import labels as label_sets
from .._warnings import warn
from ..graph import count_label_edges
from ..layers import (
    LabelGroupEmbedding,
    LabelWiseHead,
    MultiBranchBackbone,
    SemanticGuidedAttention,
    SemanticHead,
)
from ..layers.diffpool import compactness_loss
from ..layers.gat import edge_index_from_mask
from ._folder import check_label_thresholds
from ._weights import (
    Checkpoint,
    checkpoint_location,
    load_backbone_weights,
    load_checkpoint_into,
    read_checkpoint,
    registry_cfg,
)

__all__ = ["MSRN", "VARIANTS", "EMBEDDING_MODES", "HEADS"]

_logger = logging.getLogger(__name__)

# What differs between the paper's text and the authors' code (docs/design.md sections 2 and 5).
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": dict(input_proj_dim=None, compactness_weight=1e-3, compactness_squared=True),
    "official": dict(input_proj_dim=256, compactness_weight=1e-4, compactness_squared=False),
}

# Paper Table 5: which embeddings guide the attention.
EMBEDDING_MODES = ("both", "label", "group", "none")

# The classifier over the semantic representations: the paper's fc1 over every row ("paper"), or a
# read-out per label over a bounded number of rows ("label_wise", docs/variants.md).
HEADS = ("paper", "label_wise")

# Learnable label features start at about the scale of GloVe entries.
_LEARNABLE_FEATURE_STD = 0.4

# Learned query groups start at the scale of the label embeddings E_l (about 1 at init).
_QUERY_GROUP_STD = 1.0

# Up to this many labels the label graph is kept as a dense [n, n] bool mask; above it, as a [2, E]
# edge list, on which the graph attention's memory grows with the edges instead of n^2.
DENSE_GRAPH_MAX_LABELS = 2048


def _as_label_features(value: Any, num_classes: int) -> torch.Tensor:
    features = torch.as_tensor(value)
    if not torch.is_floating_point(features):
        features = features.float()
    if features.dim() != 2 or features.shape[0] != num_classes:
        raise ValueError(
            f"label_features must be a [num_classes, F] = [{num_classes}, F] matrix (one row per label), "
            f"got shape {list(features.shape)}."
        )
    if not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"label_features contains NaN or infinite values in rows {bad}; fix or drop those labels."
        )
    return features.detach().clone().float()


def _as_edge_list(graph: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A ``[2, E]`` integer edge list checked and made canonical: int64, self-loops added, no
    duplicates, sorted by the attending label then the neighbour (as ``mask.nonzero().t()``)."""
    if graph.numel() and (int(graph.min()) < 0 or int(graph.max()) >= num_classes):
        raise ValueError(
            f"label_graph as an edge list [2, E] must hold label indices in [0, {num_classes}), got values "
            f"from {int(graph.min())} to {int(graph.max())}."
        )
    loops = torch.arange(num_classes).unsqueeze(0).expand(2, -1)
    return torch.unique(torch.cat([graph.detach().long().cpu(), loops], dim=1), dim=1)


def _as_label_graph(value: Any, num_classes: int) -> torch.Tensor:
    """The label graph as stored: a ``[n, n]`` bool mask up to DENSE_GRAPH_MAX_LABELS labels, else a
    ``[2, E]`` int64 edge list (an edge list given as such stays one); self-loops added."""
    dense = num_classes <= DENSE_GRAPH_MAX_LABELS
    if value is None:
        eye = torch.eye(num_classes, dtype=torch.bool) if dense else None
        return eye if dense else torch.arange(num_classes).unsqueeze(0).repeat(2, 1)
    graph = torch.as_tensor(value)
    is_edges = (
        graph.dim() == 2
        and graph.shape[0] == 2
        and graph.shape != (num_classes, num_classes)
        and not (graph.dtype == torch.bool or torch.is_floating_point(graph))
    )
    if is_edges:
        return _as_edge_list(graph, num_classes)
    if graph.dim() != 2 or graph.shape[0] != graph.shape[1]:
        raise ValueError(
            f"label_graph must be a square [n, n] mask or a [2, E] integer edge list, got shape "
            f"{list(graph.shape)} ({graph.dtype})."
        )
    if graph.shape[0] != num_classes:
        raise ValueError(
            f"label_graph is {graph.shape[0]}x{graph.shape[1]} but the model has num_classes={num_classes}; "
            f"build the graph over the same labels, in the same order."
        )
    if torch.is_floating_point(graph) and not torch.isfinite(graph).all():
        raise ValueError("label_graph contains NaN or infinite values; pass a bool mask (True = edge).")
    mask = graph.detach().clone().to(torch.bool) | torch.eye(num_classes, dtype=torch.bool)
    return mask if dense else edge_index_from_mask(mask)


def _resolve_num_labels(
    num_classes: Any, num_labels: int | None, label_features: Any | None, label_names: Sequence[str] | None
) -> int:
    """The number of labels MSRN embeds; it is the number of classifier outputs unless num_classes=0."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"num_classes must be an integer >= 1 (one output per label), or 0 for a model without its "
            f"classifier; got {num_classes!r}."
        )
    if num_classes > 0:
        if num_labels is not None and num_labels != num_classes:
            raise ValueError(
                f"num_labels={num_labels} but num_classes={num_classes}: class i is label i, so the two "
                f"differ only for a model without a classifier (num_classes=0)."
            )
        return num_classes
    if num_labels is None and label_features is not None:
        num_labels = int(torch.as_tensor(label_features).shape[0])
    if num_labels is None and label_names is not None:
        num_labels = len(label_names)
    if num_labels is None:
        raise ValueError(
            "num_classes=0 builds MSRN without its classifier, but it still embeds its labels: give "
            "num_labels=n (or label_features / label_names). timm.create_model(name, num_classes=0) "
            "takes them from the pretrained config."
        )
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}.")
    return num_labels


class MSRN(nn.Module):
    """Multi-layered Semantic Representation Network for multi-label image classification.

    Args:
        num_classes: number of classifier outputs: the number of labels ``n`` (class ``i`` is label
            ``i``), or 0 for a model without its classifier head (``fc1``, ``fc2``), whose forward
            returns the pooled representations ``[N, B * d]`` (timm's feature-extractor convention).
        backbone: name of a timm model with feature maps (optionally with a pretrained tag, e.g.
            ``"resnet101.tv_in1k"``); see ``docs/backbones.md``.
        num_groups: number of label groups ``m`` (paper: 4; Table 7).
        embed_dim: width ``d`` of the embeddings and of every branch (paper: 512).
        num_branches: number of backbone stages used, counted from the deepest (paper: 3; Table 6).
        variant: ``"official"`` (the authors' code, which produced the paper's tables; default) or
            ``"paper"`` (the paper's text): the official one has an input Linear 300->256 before the
            GATs and the compactness loss ``1e-4 * sum ||.||`` instead of ``1e-3 * sum ||.||^2``,
            which makes the paper variant diverge at the paper's lr 0.01. See ``docs/variants.md``.
        label_features: fixed ``[n, F]`` label features (e.g. GloVe), stored as a buffer; ``None``
            makes them a learnable ``[n, label_feature_dim]`` parameter.
        label_graph: ``[n, n]`` bool mask, ``label_graph[i, j]`` = label ``i`` attends to ``j``, or the
            same as a ``[2, E]`` integer edge list (column ``(i, j)``; e.g. from
            :func:`msrn.graph.label_edges_from_label_lists`); self-loops are added; ``None`` means
            self-loops only (logged: the graph attention then sees no neighbours). Stored as a mask
            up to ``DENSE_GRAPH_MAX_LABELS`` (2048) labels, else as an edge list, on which the graph
            attention's memory grows with the edges rather than ``n^2``.
        label_feature_dim: width of learnable label features (ignored when ``label_features`` is given).
        embeddings: ``"both"`` (MSRN), ``"label"`` (label-E), ``"group"`` (group-E) or ``"none"``
            (no LGE: a linear map of the label features guides the attention); paper Table 5.
        compactness_weight: lambda of the loss ``L1 + lambda * L2``; default by variant (Table 7).
        compactness_squared: squared (paper) or plain (official) distances in eq. 6; default by variant.
        gat_hidden_dim: output width of the first GAT (paper: 300).
        hidden_dim: width of ``fc1`` (paper: 2048); with ``head="label_wise"``, the width of each label's
            representation (its weight vector).
        drop_rate: dropout before ``fc2`` (paper: 0).
        in_chans: image channels.
        pretrained_backbone: load the backbone's ImageNet weights through timm.
        label_names: optional names of the ``n`` labels, kept with the model.
        backbone_kwargs: extra arguments for ``timm.create_model`` of the backbone.
        num_labels: number of labels ``n`` when ``num_classes=0`` (default: the rows of
            ``label_features``, or the number of ``label_names``); must equal ``num_classes`` otherwise.
        head: ``"paper"`` (default: ``fc1`` over every attention row, one row per label and group) or
            ``"label_wise"``: the attention runs over ``num_query_groups`` learned query groups and
            the groups, and each label reads its own representation out of them and is scored with
            its own weight vector; its cost per label is small and constant (docs/variants.md).
        num_query_groups: the learned query groups ``K`` of ``head="label_wise"`` (rows of the
            attention that do not grow with the labels; ignored by the paper's head).

    timm attributes: ``num_features = B * d`` is the width of the ``[N, n + m, B * d]`` tokens of
    :meth:`forward_features` (``output_fmt = "NLC"``), ``head_hidden_size = hidden_dim`` the width of
    the pre-logits (``fc1``'s output). With ``head="label_wise"`` the tokens are ``[N, K + m, B * d]``
    and the pre-logits ``[N, n, hidden_dim]``, one representation per label.
    """

    def __init__(
        self,
        num_classes: int = 20,
        backbone: str = "resnet101",
        num_groups: int = 4,
        embed_dim: int = 512,
        num_branches: int = 3,
        variant: str = "official",
        label_features: Any | None = None,
        label_graph: Any | None = None,
        label_feature_dim: int = 300,
        embeddings: str = "both",
        compactness_weight: float | None = None,
        compactness_squared: bool | None = None,
        gat_hidden_dim: int = 300,
        hidden_dim: int = 2048,
        drop_rate: float = 0.0,
        in_chans: int = 3,
        pretrained_backbone: bool = False,
        label_names: Sequence[str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        num_labels: int | None = None,
        head: str = "paper",
        num_query_groups: int = 32,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}.")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        if (
            isinstance(num_query_groups, bool)
            or not isinstance(num_query_groups, int)
            or num_query_groups < 1
        ):
            raise ValueError(f"num_query_groups must be an integer >= 1, got {num_query_groups!r}.")
        if embeddings not in EMBEDDING_MODES:
            raise ValueError(f"embeddings must be one of {EMBEDDING_MODES}, got {embeddings!r}.")
        num_labels = _resolve_num_labels(num_classes, num_labels, label_features, label_names)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be an integer >= 1, got {num_groups!r}.")
        settings = VARIANTS[variant]
        self.num_classes = num_classes
        self.num_labels = num_labels
        self.num_groups = num_groups
        self.embed_dim = embed_dim
        self.num_branches = num_branches
        self.variant = variant
        self.embeddings_mode = embeddings
        self.head_type = head
        self.num_query_groups = num_query_groups if head == "label_wise" else 0
        self.gat_hidden_dim = gat_hidden_dim
        self.hidden_dim = hidden_dim
        self.drop_rate = drop_rate
        self.compactness_weight = float(
            settings["compactness_weight"] if compactness_weight is None else compactness_weight
        )
        self.compactness_squared = bool(
            settings["compactness_squared"] if compactness_squared is None else compactness_squared
        )
        self.label_names = list(label_names) if label_names is not None else None
        if self.label_names is not None and len(self.label_names) != num_labels:
            raise ValueError(
                f"label_names has {len(self.label_names)} names but the model has {num_labels} labels."
            )

        self.backbone = MultiBranchBackbone(
            backbone,
            num_branches=num_branches,
            embed_dim=embed_dim,
            pretrained=pretrained_backbone,
            in_chans=in_chans,
            **(backbone_kwargs or {}),
        )
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=stride, module=f"backbone.projections.{i}")
            for i, stride in enumerate(self.backbone.branch_strides)
        ]
        self._set_label_inputs(label_features, label_graph, label_feature_dim)
        feature_dim = self.label_features.shape[1]
        # The constructor arguments that rebuild this architecture (num_classes and the label inputs
        # are saved beside them): what msrn.save_pretrained writes as config.json's model_args.
        self.model_args: dict[str, Any] = dict(
            backbone=backbone,
            num_groups=num_groups,
            embed_dim=embed_dim,
            num_branches=num_branches,
            variant=variant,
            label_feature_dim=int(feature_dim),
            embeddings=embeddings,
            compactness_weight=self.compactness_weight,
            compactness_squared=self.compactness_squared,
            gat_hidden_dim=gat_hidden_dim,
            hidden_dim=hidden_dim,
            drop_rate=drop_rate,
            in_chans=in_chans,
        )
        if backbone_kwargs:
            self.model_args["backbone_kwargs"] = dict(backbone_kwargs)
        if num_classes == 0:
            self.model_args["num_labels"] = num_labels
        if head != "paper":  # written only when set, so that paper-head configs stay as they were
            self.model_args.update(head=head, num_query_groups=num_query_groups)
        if embeddings == "none":
            self.lge = None
            self.label_projection = nn.Linear(feature_dim, embed_dim)
        else:
            self.lge = LabelGroupEmbedding(
                feature_dim,
                gat_dims=(gat_hidden_dim, embed_dim),
                num_groups=num_groups if embeddings in ("both", "group") else 0,
                input_proj_dim=settings["input_proj_dim"],
                # The label-wise head is made for thousands of labels: groups as means, not sums.
                group_pooling="mean" if head == "label_wise" else "sum",
            )
            self.label_projection = None
        # head="label_wise": K learned rows of the attention stand in for the n label rows.
        self.query_groups = (
            nn.Parameter(torch.randn(num_query_groups, embed_dim) * _QUERY_GROUP_STD)
            if head == "label_wise" and self.uses_label_rows
            else None
        )
        self.sga = SemanticGuidedAttention()
        self.output_fmt = "NLC"
        self.num_features = num_branches * embed_dim
        # Built without a classifier, MSRN pools M over its rows instead of running its head.
        self.head = self._make_head(num_labels) if num_classes > 0 else None
        self.head_hidden_size = self._head_width() if self.head is not None else self.num_features
        self._embedding_cache: tuple[tuple, tuple] | None = None

    # ----------------------------------------------------------------------------------- set-up
    def _set_label_inputs(
        self, label_features: Any | None, label_graph: Any | None, feature_dim: int
    ) -> None:
        if label_features is None:
            features = nn.Parameter(torch.randn(self.num_labels, feature_dim) * _LEARNABLE_FEATURE_STD)
            self.register_parameter("label_features", features)
        else:
            self.register_buffer("label_features", _as_label_features(label_features, self.num_labels))
        self.register_buffer("label_graph", _as_label_graph(label_graph, self.num_labels))
        if self.label_graph.is_meta:  # built on the meta device (e.g. to count parameters): no values
            return
        edges = count_label_edges(self.label_graph)
        complete_graph_edges = self.num_labels * (self.num_labels - 1)
        if edges == 0 and self.embeddings_mode != "none" and self.num_labels > 1:
            graph = "no label graph" if label_graph is None else "a label graph without edges between labels"
            warn(
                _logger,
                f"MSRN with {self.num_labels} labels and {graph}: the graph attention of the label "
                f"embeddings sees no edges (self-loops only). Pass labels="
                f"{'|'.join(repr(name) for name in label_sets.available())} for a built-in label set, or "
                f"label_graph=msrn.graph.label_graph_from_targets(train_targets) (a lower threshold t gives "
                f"more edges; msrn train --graph-threshold).",
            )
        elif label_graph is not None and self.num_labels > 2 and edges == complete_graph_edges:
            _logger.warning(
                "The label graph links each of the %d labels to every other (a complete graph): the graph "
                "attention then mixes all labels alike, without co-occurrence structure. If that is not "
                "meant, build it with msrn.graph.label_graph_from_targets(train_targets).",
                self.num_labels,
            )

    @property
    def uses_label_rows(self) -> bool:
        return self.embeddings_mode in ("both", "label", "none")

    @property
    def uses_group_rows(self) -> bool:
        return self.embeddings_mode in ("both", "group")

    @property
    def num_rows(self) -> int:
        """Rows of ``M``: the labels (``head="label_wise"``: the query groups) and/or the groups."""
        label_rows = self.num_query_groups if self.head_type == "label_wise" else self.num_labels
        return label_rows * self.uses_label_rows + self.num_groups * self.uses_group_rows

    def _head_width(self) -> int:
        return self.hidden_dim

    def _make_head(self, num_classes: int) -> SemanticHead | LabelWiseHead:
        if self.head_type == "label_wise":
            return LabelWiseHead(
                self.num_branches * self.embed_dim,
                self.embed_dim,
                num_classes,
                dim=self.hidden_dim,
                attention_dim=self.embed_dim,
                num_heads=math.gcd(8, math.gcd(self.embed_dim, self.hidden_dim)),
                drop_rate=self.drop_rate,
            )
        return SemanticHead(
            self.num_rows,
            self.num_branches * self.embed_dim,
            num_classes,
            self.hidden_dim,
            drop_rate=self.drop_rate,
        )

    # ------------------------------------------------------------------------- label/group part
    def _cache_key(self) -> tuple:
        module = self.lge if self.lge is not None else self.label_projection
        tensors = list(module.parameters())
        tensors += [self.label_features, self.label_graph]
        autocast = torch.is_autocast_enabled(self.label_features.device.type)
        return (
            tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors),
            autocast,
            torch.get_autocast_dtype(self.label_features.device.type) if autocast else None,
        )

    def _compute_embeddings(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.lge is None:
            return self.label_projection(self.label_features), None, None
        return self.lge(self.label_features, self.label_graph)

    def label_group_embeddings(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(E_l [n, d], E_g [m, d] or None, S [n, m] or None)`` (paper eq. 4-5).

        They do not depend on the image. In eval mode without autograd they are computed once and
        reused until a weight they depend on changes (in place or by loading), or the dtype, device
        or autocast state changes.
        """
        cacheable = (
            not self.training
            and not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )
        if not cacheable:
            self._embedding_cache = None
            return self._compute_embeddings()
        key = self._cache_key()
        if self._embedding_cache is None or self._embedding_cache[0] != key:
            self._embedding_cache = (key, self._compute_embeddings())
        return self._embedding_cache[1]

    def semantic_queries(self) -> torch.Tensor:
        """The ``[num_rows, d]`` rows that guide the attention: ``E_l`` (with ``head="label_wise"``:
        the query groups) then ``E_g`` (as enabled)."""
        return self._rows_of(self.label_group_embeddings())

    def _rows_of(
        self, embeddings: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]
    ) -> torch.Tensor:
        label_embeddings, group_embeddings, _ = embeddings
        rows = []
        if self.uses_label_rows:
            rows.append(self.query_groups if self.query_groups is not None else label_embeddings)
        if self.uses_group_rows:
            rows.append(group_embeddings)
        return torch.cat([row.to(rows[0].dtype) for row in rows], dim=0)

    def compactness_loss(self, weighted: bool = True) -> torch.Tensor:
        """Compactness loss of the group embeddings (eq. 6), times ``compactness_weight`` when
        ``weighted``. Zero when the model has no groups. Computing it runs the LGE module again,
        which costs microseconds next to the backbone."""
        label_embeddings, group_embeddings, assignment = self._compute_embeddings()
        if group_embeddings is None:
            return self.label_features.new_zeros(())
        loss = compactness_loss(
            label_embeddings,
            group_embeddings,
            assignment,
            squared=self.compactness_squared,
            # Label-wise head: a mean over the labels, like the BCE, whatever their number.
            reduction="mean" if self.head_type == "label_wise" else "sum",
        )
        return loss * self.compactness_weight if weighted else loss

    # ------------------------------------------------------------------------------ image part
    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Projected branch maps ``f_b``: a list of ``[N, d, H_b, W_b]``, shallowest first."""
        return self.backbone(x)

    def forward_features(self, x: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Semantic representations ``M = [O || Q]`` before the tanh: ``[N, num_rows, B * d]``.

        ``queries`` replaces :meth:`semantic_queries` (they do not depend on the image; the ONNX
        export passes them in as constants)."""
        branches = self.backbone(x)
        if queries is None:
            queries = self.semantic_queries()
        return torch.cat([self.sga(f, queries.to(f.dtype)) for f in branches], dim=2)

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False, label_embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``fc2(LeakyReLU(fc1(tanh(M))))``; ``pre_logits=True`` stops before ``fc2``
        (``[N, hidden_dim]``). A model built with ``num_classes=0`` has no head: it returns the mean
        of the rows of ``M`` (``[N, B * d]``).

        With ``head="label_wise"``: each label's read-out of ``M`` scored with its own weights
        (:class:`~msrn.layers.LabelWiseHead`); ``pre_logits=True`` gives the per-label
        representations ``[N, n, hidden_dim]``. ``label_embeddings`` (``E_l``, ``[n, d]``) replaces the
        model's own (they do not depend on the image; the ONNX export passes them in as constants)."""
        if self.head is None:
            return x.mean(dim=1)
        if isinstance(self.head, LabelWiseHead):
            if label_embeddings is None:
                label_embeddings = self.label_group_embeddings()[0]
            return self.head(x, label_embeddings, pre_logits=pre_logits)
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, LabelWiseHead):  # E_l guides both the rows and the read-out: once
            embeddings = self.label_group_embeddings()
            features = self.forward_features(x, queries=self._rows_of(embeddings))
            return self.forward_head(features, label_embeddings=embeddings[0])
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def label_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-label attention of every branch (eq. 8 averaged over channels): a list of
        ``[N, n, H_b, W_b]``, shallowest first, each map summing to one over its positions."""
        if not self.uses_label_rows:
            raise ValueError(
                f"This model was built with embeddings={self.embeddings_mode!r}: its attention is guided by "
                f"group embeddings only, so there are no per-label attention maps."
            )
        if self.head_type == "label_wise":
            return self._label_wise_attention_maps(x)
        queries = self.semantic_queries()[: self.num_labels]
        return [self.sga.attention_maps(f, queries.to(f.dtype)) for f in self.forward_branches(x)]

    def _label_wise_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """With ``head="label_wise"`` a label has no attention row of its own: its map is the mixture of
        the rows' maps with its read-out weights (averaged over the read-out's heads), which also
        sums to one."""
        embeddings = self.label_group_embeddings()
        rows = self._rows_of(embeddings)
        branches = self.forward_branches(x)
        features = torch.cat([self.sga(f, rows.to(f.dtype)) for f in branches], dim=2)
        mixing = self.head.read_out_weights(features, embeddings[0].to(features.dtype)).mean(dim=1)
        maps = []
        for f in branches:
            row_maps = self.sga.attention_maps(f, rows.to(f.dtype))  # [N, R, H, W]
            maps.append(torch.einsum("bnr,brhw->bnhw", mixing, row_maps))
        return maps

    # --------------------------------------------------------------------- timm conventions
    def get_label_names(self) -> list[str]:
        """The label names: the model's own, its ``pretrained_cfg``'s, else ``label_0``, ``label_1``..."""
        cfg = getattr(self, "pretrained_cfg", None) or {}
        names = self.label_names or cfg.get("label_names")
        if names and len(names) == self.num_labels:
            return list(names)
        return [f"label_{i}" for i in range(self.num_labels)]

    def get_label_thresholds(self) -> list[float] | None:
        """The per-label decision thresholds saved with the model (``pretrained_cfg["label_thresholds"]``,
        e.g. fitted on a validation split by the trainer), one per label in label order; ``None`` when
        the model has none, and the usual fixed 0.5 applies.

        Raises:
            ValueError: the saved entry is not ``num_classes`` probabilities in [0, 1].
        """
        cfg = getattr(self, "pretrained_cfg", None) or {}
        thresholds = cfg.get("label_thresholds")
        if thresholds is None:
            return None
        return check_label_thresholds(thresholds, self.num_classes, "pretrained_cfg['label_thresholds']")

    def get_classifier(self) -> nn.Module:
        if self.head is None:
            return nn.Identity()
        if isinstance(self.head, LabelWiseHead):
            return self.head.classifier if self.head.classifier is not None else nn.Identity()
        return self.head.fc2

    def reset_classifier(
        self,
        num_classes: int,
        global_pool: str | None = None,
        label_features: Any | None = None,
        label_graph: Any | None = None,
        label_names: Sequence[str] | None = None,
    ) -> None:
        """Give the model a new classifier.

        ``num_classes > 0``: rebuild everything sized by the number of labels for ``num_classes``
        labels: label features (learnable unless given), label graph (self-loops unless given),
        ``fc1`` and ``fc2`` (``head="label_wise"``: the per-label classifier; its shared read-out and
        the query groups keep their weights). The backbone, the GATs and DiffPool keep their weights.

        ``num_classes=0`` (timm's way to drop the classifier): remove ``fc2`` only; the labels, their
        embeddings, the attention and ``fc1`` stay, and :meth:`forward` returns the pre-logits
        ``[N, head_hidden_size]`` (``head="label_wise"``: the per-label classifier goes, and the
        pre-logits are ``[N, n, hidden_dim]``, one representation per label).

        ``global_pool`` is accepted for timm compatibility and must be ``None`` or ``""``."""
        if global_pool not in (None, ""):
            raise ValueError(
                "MSRN has no global pooling; call reset_classifier(num_classes) without global_pool."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}.")
        if num_classes == 0:
            if not (label_features is None and label_graph is None and label_names is None):
                raise ValueError(
                    "reset_classifier(0) removes only the classifier and keeps the labels; to change the "
                    "labels, call reset_classifier(n, label_features=..., label_graph=..., label_names=...)."
                )
            if isinstance(self.head, LabelWiseHead):
                self.head.reset_classifier(0)
            elif self.head is not None:
                self.head.fc2 = nn.Identity()
            self.num_classes = 0
            if isinstance(getattr(self, "pretrained_cfg", None), dict):
                self._record_labels_in_cfg()
            return
        reference = self.backbone.projections[0].weight  # always present, on the model's device and dtype
        device, dtype = reference.device, reference.dtype
        feature_dim = self.label_features.shape[1]
        if label_features is not None and torch.as_tensor(label_features).shape[-1] != feature_dim:
            raise ValueError(
                f"label_features must keep the width F={feature_dim} the label-embedding layers were built "
                f"for, got shape {list(torch.as_tensor(label_features).shape)}."
            )
        self.num_classes = self.num_labels = num_classes
        self.model_args.pop("num_labels", None)
        del self.label_features
        del self.label_graph
        self._set_label_inputs(label_features, label_graph, feature_dim)
        self.label_features.data = self.label_features.data.to(device=device, dtype=dtype)
        self.label_graph = self.label_graph.to(device)
        self.label_names = list(label_names) if label_names is not None else None
        if isinstance(self.head, LabelWiseHead):
            self.head.reset_classifier(num_classes)
        else:
            self.head = self._make_head(num_classes).to(device=device, dtype=dtype)
        self.head_hidden_size = self._head_width()
        self._embedding_cache = None
        if isinstance(getattr(self, "pretrained_cfg", None), dict):
            for key in ("label_descriptions", "label_thresholds"):  # they described the old labels
                self.pretrained_cfg.pop(key, None)
            self._record_labels_in_cfg()

    def _record_labels_in_cfg(self) -> None:
        """Keep ``pretrained_cfg`` (timm's place for them) in step with the labels: ``num_classes`` and
        ``label_names`` (``label_0``, ``label_1``... when the labels have no names)."""
        self.pretrained_cfg["num_classes"] = self.num_classes
        self.pretrained_cfg["label_names"] = (
            list(self.label_names)
            if self.label_names is not None
            else [f"label_{i}" for i in range(self.num_labels)]
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Two parameter groups: the pretrained trunk, then every layer MSRN adds (for layer-wise lr)."""
        return dict(backbone=r"^backbone\.trunk\.", msrn=r"^(?!backbone\.trunk\.)")

    def no_weight_decay(self) -> set:
        names = {"label_features"} if isinstance(self.label_features, nn.Parameter) else set()
        return names | ({"query_groups"} if self.query_groups is not None else set())

    def _apply(self, fn, recurse=True):
        self._embedding_cache = None
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        self._embedding_cache = None
        return super().train(mode)


# ------------------------------------------------------------------------------------------ cfgs
def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 20,
        "input_size": (3, 448, 448),
        "pool_size": None,
        "crop_pct": 1.0,
        "crop_mode": "squash",
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "backbone.trunk.conv1",
        "classifier": "head.fc2",
        "paper_name": "Multi-layered Semantic Representation Network for Multi-label Image Classification",
        "license": "apache-2.0",
        **kwargs,
    }


# Tags follow timm's ``name.tag``. Only weights that exist are listed: the ``tv_in1k`` tags name the
# torchvision ImageNet weights of the backbone (the paper's start, on the Hub as timm/resnet*.tv_in1k);
# ``pretrained=True`` loads them into the backbone and the MSRN layers start from their init. A fully
# trained MSRN gets its own tag with its Hub repository and labels, e.g.
#   "msrn_resnet101.voc2007": _cfg(hf_hub_id="owner/msrn_resnet101.voc2007", num_classes=20,
#                                  label_names=VOC_NAMES),
# and then ``pretrained=True`` loads the whole checkpoint (see msrn/models/_weights.py and docs/weights.md).
default_cfgs = generate_default_cfgs(
    {
        "msrn_resnet101.tv_in1k": _cfg(),
        "msrn_resnet50.tv_in1k": _cfg(),
        "msrn_resnet18.tv_in1k": _cfg(),
        "msrn_custom": _cfg(),
    }
)

# pretrained_cfg entries of MSRN's own, beyond timm's PretrainedCfg fields, kept through save and load:
# label_thresholds, one decision threshold per label (see MSRN.get_label_thresholds).
MSRN_CFG_KEYS = ("label_thresholds",)

# Arguments that fix the number of labels of a model built without a classifier.
_LABEL_ARGS = ("num_labels", "label_features", "label_names")


def _apply_checkpoint(checkpoint: Checkpoint, cfg: dict[str, Any], kwargs: dict[str, Any]) -> list[str]:
    """Fill the unset constructor arguments from ``checkpoint`` (its model_args, label features, graph
    and names); returns the label inputs the caller set, which the checkpoint must not overwrite."""
    for key, value in checkpoint.model_args.items():
        kwargs.setdefault(key, value)
    num_classes = kwargs.get("num_classes", checkpoint.num_classes)
    keep = [key for key in ("label_features", "label_graph") if kwargs.get(key) is not None]
    if num_classes == 0:  # no classifier: the checkpoint's labels, embedded as trained
        kwargs.setdefault("num_labels", checkpoint.num_classes)
    if num_classes in (0, checkpoint.num_classes):
        if checkpoint.fixed_label_features:
            kwargs.setdefault("label_features", checkpoint.state_dict["label_features"])
        kwargs.setdefault("label_graph", checkpoint.state_dict["label_graph"])
        if checkpoint.label_names is not None:
            kwargs.setdefault("label_names", checkpoint.label_names)
    else:
        for key in ("label_names", "label_descriptions"):
            cfg.pop(key, None)
    cfg["num_classes"] = num_classes
    return keep


def _build(architecture: str, cfg: dict[str, Any], kwargs: dict[str, Any]) -> MSRN:
    """The MSRN with its init, carrying ``cfg`` as its pretrained_cfg (timm loads no weights here)."""
    # MSRN's `variant` argument would collide with build_model_with_cfg's own `variant` (the
    # architecture name), so it is bound here.
    model_cls = functools.partial(MSRN, variant=kwargs.pop("variant", "official"), pretrained_backbone=False)
    # Weights are loaded by the caller, not by timm: a full checkpoint and an ImageNet backbone are
    # both MSRN-specific (timm would load a state dict into the whole model).
    return build_model_with_cfg(
        model_cls, architecture, pretrained=False, pretrained_cfg=registry_cfg(cfg), **kwargs
    )


def _apply_label_set(kwargs: dict[str, Any]) -> None:
    """Turn ``labels="voc2007"`` (a built-in set of :mod:`msrn.labels`, or a ``LabelSet``) into
    ``num_classes``, ``label_names``, fixed GloVe ``label_features`` and the label graph at t = 0.4."""
    labels = kwargs.pop("labels", None)
    if labels is None:
        return
    label_set = labels if isinstance(labels, label_sets.LabelSet) else label_sets.load(labels)
    num_classes = kwargs.get("num_classes", label_set.num_classes)
    if num_classes not in (0, label_set.num_classes):  # 0: the set's labels without a classifier
        raise ValueError(
            f"labels={label_set.name!r} has {label_set.num_classes} labels but num_classes={num_classes}; "
            f"leave num_classes out."
        )
    given = [key for key in ("label_names", "label_features", "label_graph") if kwargs.get(key) is not None]
    if given:
        raise ValueError(f"labels={label_set.name!r} sets {', '.join(given)}: pass either labels or those.")
    kwargs.update(
        num_classes=num_classes,
        label_names=list(label_set.names),
        label_features=label_set.features,
        label_graph=label_set.graph(),
    )


def _create_msrn(
    architecture: str, model_args: dict[str, Any], pretrained: bool = False, **kwargs: Any
) -> MSRN:
    """Build an MSRN and fill it with weights.

    Constructor arguments come from, in order: ``kwargs``, the checkpoint being loaded, the
    architecture's ``model_args``. ``labels="voc2007"`` (``"coco2014"``, ``"nuswide"``,
    ``"apparel"``; aliases ``"voc"``, ``"coco"``) stands for the built-in label set's ``num_classes``,
    ``label_names``, GloVe ``label_features`` (fixed) and label graph at t = 0.4.

    - ``hf-hub:`` / ``local-dir:`` names (and ``pretrained=True`` on a tag or ``pretrained_cfg`` with
      weights) load a full MSRN checkpoint written by :func:`msrn.save_pretrained`; with another
      ``num_classes`` the label-sized parts are re-initialised with a warning.
    - ``pretrained=True`` otherwise loads the backbone's ImageNet weights; the MSRN layers use their init.
    """
    _apply_label_set(kwargs)
    cache_dir = kwargs.get("cache_dir")
    given_cfg = kwargs.pop("pretrained_cfg", None)
    msrn_cfg: dict[str, Any] = {}
    if isinstance(given_cfg, dict):  # timm's PretrainedCfg refuses the entries it does not know
        given_cfg = dict(given_cfg)
        msrn_cfg = {key: given_cfg.pop(key) for key in MSRN_CFG_KEYS if key in given_cfg}
    cfg = resolve_pretrained_cfg(
        architecture, given_cfg, kwargs.pop("pretrained_cfg_overlay", None)
    ).to_dict()
    location = checkpoint_location(cfg, pretrained)
    load_backbone = bool(kwargs.pop("pretrained_backbone", False)) or (pretrained and location is None)
    checkpoint = read_checkpoint(*location, cache_dir=cache_dir) if location is not None else None
    keep = _apply_checkpoint(checkpoint, cfg, kwargs) if checkpoint is not None else []
    if kwargs.get("num_classes") == 0 and not any(kwargs.get(k) is not None for k in _LABEL_ARGS):
        kwargs["num_labels"] = cfg.get("num_classes") or 0  # no classifier: the cfg's labels
    for key, value in model_args.items():
        kwargs.setdefault(key, value)
    model = _build(architecture, cfg, kwargs)
    if checkpoint is not None:
        load_checkpoint_into(model, checkpoint, keep=keep)
    elif load_backbone:
        # A weight file given as pretrained_cfg_overlay=dict(file=...) is the backbone's (timm's idiom).
        load_backbone_weights(model, cache_dir=cache_dir, file=cfg.get("file") if pretrained else None)
    first_conv = model.backbone.first_conv
    model.pretrained_cfg["first_conv"] = f"backbone.{first_conv}" if first_conv else None
    if model.head_type == "label_wise":
        model.pretrained_cfg["classifier"] = "head.classifier"
    model._record_labels_in_cfg()
    thresholds = msrn_cfg.get("label_thresholds")
    if thresholds is not None:
        if checkpoint is not None and model.num_classes != checkpoint.num_classes:
            # Fitted for the checkpoint's labels, which the caller replaced (num_classes=...).
            warn(
                _logger,
                f"The saved per-label thresholds were fitted for the checkpoint's {checkpoint.num_classes} "
                f"labels and are not applied to the model's {model.num_classes}: predictions use 0.5 (or a "
                f"threshold you give); fit new ones on a validation split (msrn train --val-fraction).",
            )
        else:  # used as saved, or refused: never silently replaced by 0.5
            where = f"{checkpoint.config_path}: " if checkpoint is not None else ""
            model.pretrained_cfg["label_thresholds"] = check_label_thresholds(
                thresholds, model.num_classes, f"{where}pretrained_cfg['label_thresholds']"
            )
    return model


@register_model
def msrn_resnet101(pretrained: bool = False, **kwargs: Any) -> MSRN:
    """MSRN on ResNet-101, the paper's model (branches on layer2, layer3, layer4)."""
    model_args = dict(backbone="resnet101.tv_in1k")
    return _create_msrn("msrn_resnet101", model_args, pretrained=pretrained, **kwargs)


@register_model
def msrn_resnet50(pretrained: bool = False, **kwargs: Any) -> MSRN:
    """MSRN on ResNet-50."""
    model_args = dict(backbone="resnet50.tv_in1k")
    return _create_msrn("msrn_resnet50", model_args, pretrained=pretrained, **kwargs)


@register_model
def msrn_resnet18(pretrained: bool = False, **kwargs: Any) -> MSRN:
    """MSRN on ResNet-18: a light model for CPUs and quick experiments."""
    model_args = dict(backbone="resnet18.tv_in1k")
    return _create_msrn("msrn_resnet18", model_args, pretrained=pretrained, **kwargs)


@register_model
def msrn_custom(pretrained: bool = False, **kwargs: Any) -> MSRN:
    """MSRN on any timm model with feature maps given as ``backbone=`` (e.g. ``backbone="convnext_tiny"``
    or ``"swin_tiny_patch4_window7_224"``); without one, the paper's ResNet-101."""
    model_args = dict(backbone="resnet101.tv_in1k")
    return _create_msrn("msrn_custom", model_args, pretrained=pretrained, **kwargs)
