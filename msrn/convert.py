"""Convert the authors' MSRN checkpoints into ``msrn`` models (docs/design.md section 9).

The authors save ``{'epoch', 'arch', 'state_dict', 'best_score'}`` whose state dict maps onto ours as

=============================================  ===========================================================
official key                                   msrn key
=============================================  ===========================================================
``resnet_101.{conv1,bn1,layer1..4}.*``         ``backbone.trunk.*`` (torchvision names = timm names)
``resnet_101.conv_buffer1.*``, ``...2.*``      ``backbone.buffer_convs.0.*``, ``backbone.buffer_convs.1.*``
``ProjectM.{0,1,2}.*``                         ``backbone.projections.{0,1,2}.*``
``fc_label.*``                                 ``lge.input_proj.*`` (the official variant's Linear 300->256)
``label_embed.layers.{0,1}.W``                 ``lge.gats.{0,1}.weight``, transposed (``W`` is in x out)
``label_embed.layers.{0,1}.a``                 ``lge.gats.{0,1}.att_self`` (first half), ``.att_neighbor``
``group_embed.layers.0.embed.{W,a}``           ``lge.diffpool.embed.*`` (as above)
``group_embed.layers.0.assign_mat.{W,a}``      ``lge.diffpool.assign.*`` (as above)
``fc1.*``, ``fc2.*``                           ``head.fc1.*``, ``head.fc2.*``
``W``, ``B``, ``resnet_101.conv_buffer0.*``    dropped (created but never used by the authors' model)
=============================================  ===========================================================

The label features and the co-occurrence statistics are not in the checkpoint; they come from the
authors' ``*_glove_word2vec.pkl`` and ``*_adj.pkl`` (or our ``.npz``) and are baked into the model with
the label names, so the saved directory rebuilds the model with no other input.
"""

import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import timm
import torch

from . import labels as label_sets
from ._state_dict import summarize_names
from .features import load_label_features, load_label_graph_npz, load_label_statistics
from .graph import label_graph_from_statistics
from .hub import save_pretrained
from .models.msrn import MSRN

__all__ = [
    "OFFICIAL_LABEL_NAMES",
    "load_official_checkpoint",
    "official_model_args",
    "convert_official_state_dict",
    "convert_official",
    "resolve_label_names",
    "save_converted",
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Label orders of the authors' data files, by the name --names takes: those of the built-in label sets.
OFFICIAL_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    key: label_sets.load(key).names for key in ("voc", "coco", "nuswide", "apparel")
}

_TRUNK = "resnet_101."
_DROPPED_KEYS = ("W", "B", "resnet_101.conv_buffer0.weight", "resnet_101.conv_buffer0.bias")
# Blocks per stage -> torchvision/timm ResNet name, by block type (bottleneck blocks have conv3).
_RESNETS = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}
_GAT_MODULES = {
    "lge.gats.0": "label_embed.layers.0",
    "lge.gats.1": "label_embed.layers.1",
    "lge.diffpool.embed": "group_embed.layers.0.embed",
    "lge.diffpool.assign": "group_embed.layers.0.assign_mat",
}
_PLAIN_PREFIXES = (
    ("backbone.buffer_convs.0.", "resnet_101.conv_buffer1."),
    ("backbone.buffer_convs.1.", "resnet_101.conv_buffer2."),
    ("backbone.trunk.", _TRUNK),
    ("backbone.projections.", "ProjectM."),
    ("lge.input_proj.", "fc_label."),
    ("head.fc1.", "fc1."),
    ("head.fc2.", "fc2."),
)
# Baked in from the data files, not read from the checkpoint.
_BAKED_KEYS = ("label_features", "label_graph")


# ------------------------------------------------------------------------------ checkpoint IO
def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    prefix = "module."
    return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


def load_official_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an authors' checkpoint, read with ``torch.load(weights_only=True)``.

    Accepts ``{"state_dict": ...}`` (the authors' format) or a bare state dict; a ``module.`` prefix
    (``nn.DataParallel``) is stripped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path!r} cannot be read with torch.load(weights_only=True): it holds objects other than "
            f"tensors and plain containers, which are not loaded because unpickling them could run code. "
            f"({error})"
        ) from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint ({error}).") from None
    return _unwrap_state_dict(checkpoint, path)


def _unwrap_state_dict(checkpoint: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not checkpoint:
        raise ValueError(
            f"{source}: expected a state dict or {{'state_dict': ...}}, got {type(checkpoint).__name__}."
        )
    not_tensors = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{source}: these state-dict entries are not tensors: {not_tensors}.")
    return _strip_module_prefix(checkpoint)


# --------------------------------------------------------------------------- architecture
def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return tuple(state_dict[key].shape)


def _infer_resnet(state_dict: Mapping[str, torch.Tensor]) -> str:
    blocks = []
    for stage in range(1, 5):
        pattern = re.compile(rf"^{re.escape(_TRUNK)}layer{stage}\.(\d+)\.")
        indices = {int(m.group(1)) for m in map(pattern.match, state_dict) if m}
        blocks.append(max(indices) + 1 if indices else 0)
    if not any(blocks):
        raise ValueError(f"Not an MSRN checkpoint of the authors' layout: missing keys {_TRUNK}layer1..4.*")
    bottleneck = f"{_TRUNK}layer1.0.conv3.weight" in state_dict
    name = _RESNETS.get((bottleneck, tuple(blocks)))
    if name is None:
        raise ValueError(
            f"Cannot tell the backbone from the checkpoint: {_TRUNK}layer1..4 have {blocks} "
            f"{'bottleneck' if bottleneck else 'basic'} blocks, which is no torchvision ResNet. "
            f"Pass backbone= (CLI: --backbone) with the timm name of the trunk."
        )
    return name


def official_model_args(
    state_dict: Mapping[str, torch.Tensor], backbone: str | None = None
) -> dict[str, Any]:
    """The :class:`~msrn.models.MSRN` arguments (official variant) that fit an authors' state dict.

    Sizes come from the tensors: ``n`` from ``fc2``, ``m`` from the assignment GAT, ``d`` from the
    projections, the GAT widths from ``label_embed``, ``fc1``'s width from ``fc1``; the ResNet depth
    from the number of blocks per stage (unless ``backbone`` is given).
    """
    state_dict = _strip_module_prefix(state_dict)
    needed = (
        "fc2.weight",
        "fc1.weight",
        "ProjectM.0.weight",
        "fc_label.weight",
        "label_embed.layers.0.W",
        "group_embed.layers.0.assign_mat.W",
    )
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(
            f"Not an MSRN checkpoint of the authors' layout: missing keys {summarize_names(missing, 'key')}."
        )
    input_proj_dim, feature_dim = _shape(state_dict, "fc_label.weight")
    if input_proj_dim != 256:
        raise ValueError(
            f"fc_label maps {feature_dim} -> {input_proj_dim}, but the official variant's input layer is "
            f"{feature_dim} -> 256."
        )
    projection = re.compile(r"^ProjectM\.(\d+)\.weight$")
    num_branches = sum(1 for key in state_dict if projection.match(key))
    return dict(
        num_classes=_shape(state_dict, "fc2.weight")[0],
        num_groups=_shape(state_dict, "group_embed.layers.0.assign_mat.W")[1],
        embed_dim=_shape(state_dict, "ProjectM.0.weight")[0],
        num_branches=num_branches,
        hidden_dim=_shape(state_dict, "fc1.weight")[0],
        gat_hidden_dim=_shape(state_dict, "label_embed.layers.0.W")[1],
        label_feature_dim=feature_dim,
        backbone=backbone or _infer_resnet(state_dict),
        variant="official",
    )


# ------------------------------------------------------------------------------- key mapping
def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _transpose(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t()


def _first_half(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)[: tensor.numel() // 2]


def _second_half(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)[tensor.numel() // 2 :]


def _official_source(key: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Official key and transform that produce our tensor ``key`` (the table in the module docstring)."""
    module, _, name = key.rpartition(".")
    if module in _GAT_MODULES:
        source = _GAT_MODULES[module]
        return {
            "weight": (f"{source}.W", _transpose),
            "att_self": (f"{source}.a", _first_half),
            "att_neighbor": (f"{source}.a", _second_half),
        }[name]
    for ours, theirs in _PLAIN_PREFIXES:
        if key.startswith(ours):
            return theirs + key[len(ours) :], _identity
    raise KeyError(key)


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: MSRN
) -> dict[str, torch.Tensor]:
    """Map an authors' state dict onto ``model``'s keys (official variant, same sizes).

    Returns a state dict with every key of ``model.state_dict()`` but the baked-in ``label_features``
    and ``label_graph``; its tensors may share memory with ``state_dict``'s (``load_state_dict``
    copies). Raises ``ValueError`` listing the missing keys, the unexpected keys and the keys whose
    shapes differ, if any.
    """
    state_dict = _strip_module_prefix(state_dict)
    if model.variant != "official" or model.lge is None or model.lge.diffpool is None:
        raise ValueError("Official checkpoints convert into MSRN(variant='official', embeddings='both').")
    targets = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    used = set()
    missing: list[str] = []
    wrong_shape: list[str] = []
    for key, target in targets.items():
        if key in _BAKED_KEYS:
            continue
        source, transform = _official_source(key)
        if source not in state_dict:
            if source not in missing:
                missing.append(source)
            continue
        used.add(source)
        tensor = transform(state_dict[source])
        if tuple(tensor.shape) != tuple(target.shape):
            wrong_shape.append(
                f"{source} {list(state_dict[source].shape)} (gives {key} {list(tensor.shape)}, "
                f"expected {list(target.shape)})"
            )
            continue
        converted[key] = tensor.contiguous()
    unexpected = sorted(set(state_dict) - used - set(_DROPPED_KEYS))
    problems = []
    if missing:
        problems.append(f"missing keys: {summarize_names(missing, 'key')}")
    if unexpected:
        problems.append(f"unexpected keys: {summarize_names(unexpected, 'key')}")
    if wrong_shape:
        problems.append(f"wrong shapes: {summarize_names(wrong_shape, 'key', limit=3)}")
    if problems:
        raise ValueError(
            "The checkpoint does not match the authors' MSRN layout (docs/design.md section 9); "
            + "; ".join(problems)
            + "."
        )
    return converted


# ------------------------------------------------------------------------------ label inputs
def resolve_label_names(
    names: str | Sequence[str] | None, num_classes: int, *data_files: PathLike | None
) -> list[str]:
    """Label names from ``"voc"``/``"coco"``/``"nuswide"``/``"apparel"``, a text file (one name per
    line), a list, or, when ``names`` is ``None``, from an ``.npz`` among ``data_files`` or the authors'
    order for 20 (VOC), 80 (COCO), 81 (NUS-WIDE) or 11 (Apparel) labels."""
    if names is None:
        for path in data_files:
            if path is not None and os.fspath(path).lower().endswith(".npz"):
                file_names = load_label_graph_npz(path)["names"]
                if file_names is not None:
                    resolved = file_names
                    break
        else:
            known = {len(v): k for k, v in OFFICIAL_LABEL_NAMES.items()}
            if num_classes not in known:
                raise ValueError(
                    f"The checkpoint has {num_classes} labels and no label names were given; pass names "
                    f"(CLI: --names FILE, one name per line)."
                )
            _logger.warning(
                "No label names given: assuming the authors' %s order for %d labels.",
                known[num_classes].upper(),
                num_classes,
            )
            resolved = list(OFFICIAL_LABEL_NAMES[known[num_classes]])
    elif isinstance(names, str) and names.lower() in OFFICIAL_LABEL_NAMES:
        resolved = list(OFFICIAL_LABEL_NAMES[names.lower()])
    elif isinstance(names, (str, os.PathLike)):
        if not os.path.isfile(names):
            raise FileNotFoundError(
                f"Label names {os.fspath(names)!r}: not 'voc', 'coco', 'nuswide', 'apparel' or an existing "
                f"file (one name a line)."
            )
        with open(names, encoding="utf-8") as handle:
            resolved = [line.strip() for line in handle if line.strip()]
    else:
        resolved = [str(name) for name in names]
    if len(resolved) != num_classes:
        raise ValueError(f"{len(resolved)} label names given but the checkpoint has {num_classes} labels.")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"Label names must be unique, got duplicates in {resolved}.")
    return list(resolved)


def _label_features(glove: Any, names: list[str]) -> torch.Tensor:
    if isinstance(glove, (str, os.PathLike)):
        return load_label_features(glove, names)
    features = torch.as_tensor(np.asarray(glove) if not isinstance(glove, torch.Tensor) else glove).float()
    if features.dim() != 2 or features.shape[0] != len(names):
        raise ValueError(f"Label features must be [{len(names)}, F], got {list(features.shape)}.")
    return features


def _label_graph(adj: Any, names: list[str], threshold: float) -> torch.Tensor:
    if isinstance(adj, (str, os.PathLike)):
        cooccurrence, counts, _ = load_label_statistics(adj, names)
    else:
        cooccurrence, counts = adj
    return label_graph_from_statistics(cooccurrence, counts, threshold)


# ---------------------------------------------------------------------------------- converter
def convert_official(
    checkpoint: PathLike | Mapping[str, torch.Tensor],
    glove: Any,
    adj: Any,
    threshold: float = 0.4,
    names: str | Sequence[str] | None = None,
    backbone: str | None = None,
) -> MSRN:
    """Build the ``msrn`` model that computes what the authors' checkpoint computes.

    Args:
        checkpoint: path of the authors' ``.pth.tar`` (read with ``weights_only=True``) or a state dict.
        glove: label features: ``*_glove_word2vec.pkl``, our ``.npz``, a GloVe text file, or an
            ``[n, F]`` array.
        adj: co-occurrence statistics: ``*_adj.pkl``, our ``.npz``, or a ``(cooccurrence, counts)`` pair.
        threshold: edge threshold ``t`` of the label graph (docs/design.md section 1; the authors use 0.4).
        names: ``"voc"``, ``"coco"``, ``"nuswide"``, ``"apparel"``, a names file or a list (see
            :func:`resolve_label_names`).
        backbone: timm name of the trunk when it is not a torchvision ResNet depth.

    Returns:
        An ``MSRN(variant="official")`` in eval mode with the checkpoint's weights and the label
        features, graph and names baked in.
    """
    if isinstance(checkpoint, Mapping):
        state_dict = _unwrap_state_dict(checkpoint, "checkpoint")
    else:
        state_dict = load_official_checkpoint(checkpoint)
    model_args = official_model_args(state_dict, backbone)
    label_names = resolve_label_names(
        names, model_args["num_classes"], *(p for p in (glove, adj) if isinstance(p, (str, os.PathLike)))
    )
    features = _label_features(glove, label_names)
    if features.shape[1] != model_args["label_feature_dim"]:
        raise ValueError(
            f"The label features are {features.shape[1]}-dimensional but the checkpoint's fc_label expects "
            f"{model_args['label_feature_dim']}."
        )
    graph = _label_graph(adj, label_names, threshold)
    if graph.shape[0] != model_args["num_classes"]:
        raise ValueError(
            f"The label statistics cover {graph.shape[0]} labels, the checkpoint {model_args['num_classes']}."
        )
    build_args = {k: v for k, v in model_args.items() if k != "label_feature_dim"}
    # Through timm's registry, so the model carries its pretrained_cfg like any timm model.
    # Registered architectures are named after their backbone (msrn_resnet101 runs resnet101).
    architecture = f"msrn_{model_args['backbone']}"
    if not timm.is_model(architecture):
        architecture = "msrn_custom"
    model = timm.create_model(
        architecture,
        pretrained=False,
        **build_args,
        label_features=features,
        label_graph=graph,
        label_names=label_names,
    )
    model.load_state_dict(
        {
            **convert_official_state_dict(state_dict, model),
            "label_features": model.label_features,
            "label_graph": model.label_graph,
        }
    )
    model.eval()
    _logger.info(
        "Converted %d tensors into %s (%d labels, %d graph edges at t=%.2f).",
        len(state_dict),
        model_args["backbone"],
        len(label_names),
        int(graph.sum()) - len(label_names),
        threshold,
    )
    return model


def save_converted(model: MSRN, directory: PathLike) -> None:
    """Write ``DIR/model.safetensors`` (every tensor, label features and graph included) and
    ``DIR/config.json`` with :func:`msrn.hub.save_pretrained`, so that
    ``timm.create_model("local-dir:DIR")`` rebuilds the converted model with no other input."""
    save_pretrained(model, directory)
