"""The one check of a saved MSRN folder (``config.json`` + ``model.safetensors``), run before weights load.

:func:`read_config` reads ``config.json`` bounded (a regular file under :data:`MAX_CONFIG_BYTES`, so a
FIFO, ``/dev/zero`` or a huge file neither hangs nor fills the memory), parses it (nesting too deep
for the parser is an error, not a ``RecursionError``) and checks every field MSRN uses: its types,
lengths and ranges (:func:`validate_config`). :func:`check_tensors` checks what the config cannot say
about the state dict: a boolean square label graph and a non-negative BatchNorm ``running_var``
(finite values are checked as the file is read). Every failure is one ``ValueError`` line that names
the file, the field and the fix.

The readers of :mod:`msrn.models._weights` call these for ``timm.create_model("local-dir:...")`` /
``"hf-hub:..."``, ``msrn.create_model``, ``msrn.load_model``, :class:`msrn.Predictor` and every command.
"""

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from timm.data.transforms import str_to_interp_mode

from .._io import read_json_file

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT_VERSION",
    "LABEL_FEATURE_KINDS",
    "MAX_CONFIG_BYTES",
    "INTERPOLATIONS",
    "MODEL_ARG_TYPES",
    "CROP_MODES",
    "read_config",
    "validate_config",
    "check_label_thresholds",
    "check_tensors",
]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Version of the "msrn" section of config.json; a reader refuses newer versions it does not know.
FORMAT_VERSION = 1
LABEL_FEATURE_KINDS = ("fixed", "learnable")
# A config.json of 80 labels is about 5 KB; this leaves room for tens of thousands of labels.
MAX_CONFIG_BYTES = 16 * 2**20
# timm's names of the resize interpolations (timm.data.transforms.str_to_interp_mode) and of its
# test-time crops (timm.data.transforms_imagenet_eval).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")
# Largest side of pretrained_cfg's input sizes: beyond it one image alone would need gigabytes.
_MAX_SIDE = 16384
_WRITER_HINT = "Write MSRN folders with msrn.save_pretrained(model, directory)."
# What each constructor argument of msrn.MSRN may be in config.json's model_args (the label inputs come
# from the weights instead); tests/test_bad_inputs_folder.py keeps the keys equal to the signature's.
_COUNT, _NUMBER, _TEXT, _FLAG, _LIST, _OBJECT = (
    "integer >= 1",
    "number",
    "string",
    "true/false",
    "list",
    "object",
)
MODEL_ARG_TYPES: dict[str, tuple[str, bool]] = {  # name: (kind, may be null)
    "num_classes": (_COUNT, False),
    "backbone": (_TEXT, False),
    "num_groups": (_COUNT, False),
    "embed_dim": (_COUNT, False),
    "num_branches": (_COUNT, False),
    "variant": (_TEXT, False),
    "label_feature_dim": (_COUNT, False),
    "embeddings": (_TEXT, False),
    "compactness_weight": (_NUMBER, True),
    "compactness_squared": (_FLAG, True),
    "gat_hidden_dim": (_COUNT, False),
    "hidden_dim": (_COUNT, False),
    "drop_rate": (_NUMBER, False),
    "in_chans": (_COUNT, False),
    "label_names": (_LIST, True),
    "backbone_kwargs": (_OBJECT, True),
    "num_labels": (_COUNT, True),
    "head": (_TEXT, False),
    "num_query_groups": (_COUNT, False),
}
_NAMES_SHOWN = 3


# ------------------------------------------------------------------------------------------ reading
def read_config(path: "str | os.PathLike[str]") -> dict[str, Any]:
    """The checked contents of an MSRN ``config.json``: read bounded (:func:`msrn._io.read_json_file`,
    at most :data:`MAX_CONFIG_BYTES`), then every field (:func:`validate_config`)."""
    try:
        config = read_json_file(path, limit=MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No {CONFIG_NAME} at {path}: an MSRN folder holds {CONFIG_NAME} and {WEIGHTS_NAME}."
        ) from None
    except ValueError as error:
        raise ValueError(f"{error} {_WRITER_HINT}") from None
    return validate_config(config, str(path))


# ------------------------------------------------------------------------------------------ values
def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters so that a message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_kind(value: Any, kind: str) -> bool:
    if kind == _COUNT:
        return _is_count(value) and value >= 1
    if kind == _NUMBER:
        return _is_number(value)
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _FLAG:
        return isinstance(value, bool)
    return isinstance(value, list if kind == _LIST else dict)


def _check_model_args(args: Mapping[str, Any], path: str) -> None:
    unknown = sorted(set(args) - set(MODEL_ARG_TYPES))
    if unknown:
        raise ValueError(
            f"{path}: model_args holds {unknown}, which are not MSRN constructor arguments "
            f"(written by a newer msrn, or edited by hand?); remove them or upgrade msrn."
        )
    for key, value in args.items():
        kind, nullable = MODEL_ARG_TYPES[key]
        if not ((value is None and nullable) or _has_kind(value, kind)):
            raise ValueError(
                f"{path}: model_args.{key} must be a JSON {kind}{' or null' if nullable else ''}, got "
                f"{_short(value)}; fix it in the file. {_WRITER_HINT}"
            )


def check_label_thresholds(thresholds: Any, num_classes: int, where: str) -> list[float]:
    """``thresholds`` as ``num_classes`` floats, or a ``ValueError`` naming ``where`` (e.g. the file and
    the field): a list of one probability in [0, 1] per label, in label order."""
    if not (
        isinstance(thresholds, (list, tuple))
        and len(thresholds) == num_classes
        and all(_is_number(t) and 0.0 <= t <= 1.0 for t in thresholds)
    ):
        raise ValueError(
            f"{where} must be {num_classes} probabilities in [0, 1] in a list (one decision threshold per "
            f"label, in label order), got {_short(thresholds)}; fix it, or delete the entry to use 0.5 "
            f"for every label."
        )
    return [float(t) for t in thresholds]


def _check_size(cfg: Mapping[str, Any], key: str, path: str) -> None:
    size = cfg[key]
    if not (
        isinstance(size, list) and len(size) == 3 and all(_is_count(v) and 1 <= v <= _MAX_SIDE for v in size)
    ):
        raise ValueError(
            f"{path}: pretrained_cfg.{key} must be [channels, height, width] of positive integers "
            f"(e.g. [3, 448, 448], sides at most {_MAX_SIDE}), got {_short(size)}; fix it in the file."
        )


def _check_normalisation(cfg: Mapping[str, Any], key: str, channels: int, path: str) -> None:
    values = cfg[key]
    positive = key == "std"
    if not (
        isinstance(values, list)
        and len(values) == channels
        and all(_is_number(v) and (v > 0 if positive else True) for v in values)
    ):
        kind = "positive numbers" if positive else "numbers"
        example = "[0.229, 0.224, 0.225]" if positive else "[0.485, 0.456, 0.406]"
        raise ValueError(
            f"{path}: pretrained_cfg.{key} must be {channels} {kind} (one per input channel, e.g. "
            f"ImageNet's {example}), got {_short(values)}; fix it in the file."
        )


def _check_pretrained_cfg(cfg: Mapping[str, Any], num_classes: int, path: str) -> None:
    """Types, lengths and ranges of the preprocessing and decision entries MSRN and timm use."""
    for key in ("input_size", "test_input_size", "min_input_size"):
        if cfg.get(key) is not None:
            _check_size(cfg, key, path)
    channels = cfg["input_size"][0] if cfg.get("input_size") is not None else 3
    for key in ("mean", "std"):
        if cfg.get(key) is not None:
            _check_normalisation(cfg, key, channels, path)
    interpolation = cfg.get("interpolation")
    if interpolation is not None:
        try:
            str_to_interp_mode(interpolation)
        except (KeyError, TypeError):
            raise ValueError(
                f"{path}: pretrained_cfg.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {_short(interpolation)}; fix it in the file."
            ) from None
    crop_pct = cfg.get("crop_pct")
    if crop_pct is not None and not (_is_number(crop_pct) and 0.0 < crop_pct <= 1.0):
        raise ValueError(
            f"{path}: pretrained_cfg.crop_pct must be a number in (0, 1] (the share of the resized image "
            f"kept by the test crop; 1.0 keeps it whole), got {_short(crop_pct)}; fix it in the file."
        )
    crop_mode = cfg.get("crop_mode")
    if crop_mode is not None and crop_mode not in CROP_MODES:
        raise ValueError(
            f"{path}: pretrained_cfg.crop_mode must be one of {', '.join(CROP_MODES)}, got "
            f"{_short(crop_mode)}; fix it in the file."
        )
    if "label_thresholds" in cfg and cfg["label_thresholds"] is not None:
        check_label_thresholds(
            cfg["label_thresholds"], num_classes, f"{path}: pretrained_cfg.label_thresholds"
        )


def _check_label_names(names: Any, num_classes: int, path: str) -> None:
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        raise ValueError(
            f"{path}: label_names must be a list of {num_classes} strings (one per label, in label "
            f"order), got {type(names).__name__}"
            + (f" of {len(names)}" if isinstance(names, list) else "")
            + "; fix it in the file."
        )
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{path}: label_names holds {_short(name)} twice (labels {seen[name]} and {index}); every "
                f"label needs its own name: fix it in the file."
            )
        seen[name] = index


def _check_architecture(architecture: Any, path: str) -> None:
    if isinstance(architecture, str) and not architecture.startswith("msrn_") and timm.is_model(architecture):
        raise ValueError(
            f"{path} names the architecture {_short(architecture)}, a timm model, not an MSRN model; load it "
            f"with timm.create_model, or give a folder written by msrn.save_pretrained."
        )
    if not (
        isinstance(architecture, str) and architecture.startswith("msrn_") and timm.is_model(architecture)
    ):
        known = ", ".join(timm.list_models("msrn*"))
        raise ValueError(
            f"{path} names the architecture {_short(architecture)}, which is not a registered MSRN "
            f"architecture (known: {known}). Is the file from an MSRN model, and was `import msrn` run? "
            f"{_WRITER_HINT}"
        )


def validate_config(config: Any, path: str) -> dict[str, Any]:
    """``config`` (parsed from ``path``) checked field by field; an ``msrn`` section is added to a
    timm-layout config written by another tool. Raises a one-line ``ValueError`` naming the field."""
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}. {_WRITER_HINT}")
    if "architecture" in config:  # a plain timm folder (older timm writes no model_args) is named as such
        _check_architecture(config["architecture"], path)
    missing = [
        key for key in ("architecture", "num_classes", "model_args", "pretrained_cfg") if key not in config
    ]
    if missing:
        what = (
            " (architecture: the MSRN architecture to build, e.g. 'msrn_resnet101')"
            if missing[0] == "architecture"
            else ""
        )
        raise ValueError(
            f"{path} is missing the key(s) {missing}{what}. Add them, or write the folder again with "
            f"msrn.save_pretrained(model, directory)."
        )
    _check_architecture(config["architecture"], path)
    num_classes = config["num_classes"]
    if not _is_count(num_classes) or num_classes < 1:
        raise ValueError(
            f"{path}: num_classes must be an integer >= 1 (one output per label), got {_short(num_classes)}."
        )
    for key in ("model_args", "pretrained_cfg"):
        if not isinstance(config[key], dict):
            raise ValueError(
                f'{path}: {key} must be a JSON object ({{"name": value, ...}}), got '
                f"{type(config[key]).__name__}. {_WRITER_HINT}"
            )
    _check_model_args(config["model_args"], path)
    if "msrn" not in config:
        # A timm-layout config from another writer: the label features in the weights are taken as
        # fixed inputs (as GloVe vectors are); the values, and so the logits, are the same either way.
        _logger.info("%s has no 'msrn' section; its label features load as a fixed buffer.", path)
        config["msrn"] = {"format_version": FORMAT_VERSION, "label_features": "fixed"}
    section = config["msrn"]
    if not isinstance(section, dict):
        raise ValueError(f"{path}: msrn must be a JSON object, got {type(section).__name__}. {_WRITER_HINT}")
    version = section.get("format_version")
    if not _is_count(version) or version < 1:
        raise ValueError(
            f"{path}: msrn.format_version must be an integer >= 1, got {_short(version)}. {_WRITER_HINT}"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in MSRN format version {version}, newer than this msrn package reads "
            f"({FORMAT_VERSION}); upgrade msrn."
        )
    if section.get("label_features") not in LABEL_FEATURE_KINDS:
        raise ValueError(
            f"{path}: msrn.label_features must be one of {', '.join(LABEL_FEATURE_KINDS)}, "
            f"got {section.get('label_features')!r}. {_WRITER_HINT}"
        )
    if config.get("label_names") is not None:
        _check_label_names(config["label_names"], num_classes, path)
    _check_pretrained_cfg(config["pretrained_cfg"], num_classes, path)
    return config


# ------------------------------------------------------------------------------------------ tensors
def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def check_tensors(tensors: Mapping[str, torch.Tensor], path: str) -> None:
    """What a state dict read from ``path`` must hold beyond finite values: a label graph (when it has
    one) that is a boolean, square mask with one row per label or an int64 ``[2, E]`` edge list of
    label indices, and BatchNorm ``running_var`` that is not negative
    (a negative variance gives NaN outputs)."""
    negative = [
        name
        for name, tensor in tensors.items()
        if name.endswith("running_var") and tensor.is_floating_point() and bool((tensor < 0).any())
    ]
    if negative:
        raise ValueError(
            f"{path}: BatchNorm running_var holds negative values in {_listing(sorted(negative))}; a "
            f"variance cannot be negative (a corrupt or hand-edited file). Use an earlier checkpoint or "
            f"save the model again."
        )
    graph = tensors.get("label_graph")
    if graph is None:
        return
    labels = tensors["label_features"].shape[0] if "label_features" in tensors else None
    if graph.dtype == torch.int64 and graph.dim() == 2 and graph.shape[0] == 2:  # an edge list [2, E]
        if graph.numel() and (int(graph.min()) < 0 or (labels is not None and int(graph.max()) >= labels)):
            raise ValueError(
                f"{path}: label_graph as an edge list must hold label indices in [0, {labels}), got "
                f"{int(graph.min())} to {int(graph.max())}. {_WRITER_HINT}"
            )
        return
    rows = labels if labels is not None else graph.shape[0]
    if graph.dtype != torch.bool or graph.dim() != 2 or tuple(graph.shape) != (rows, rows):
        raise ValueError(
            f"{path}: label_graph must be a bool [{rows}, {rows}] mask (one row and column per label) or "
            f"an int64 [2, E] edge list, got {str(graph.dtype).removeprefix('torch.')} {list(graph.shape)}. "
            f"{_WRITER_HINT}"
        )
