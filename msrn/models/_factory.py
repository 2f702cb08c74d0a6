"""Making a model from a name: ``create_model`` (timm's, with clear errors for checkpoint sources) and
``load_model``, which turns a model spec (``local-dir:DIR``, ``hf-hub:ID``, or an architecture name
with a safetensors state dict) into a trained MSRN in eval mode.

Only safetensors files are read: no weight file is ever unpickled.
"""

import json
import logging
import pathlib
from typing import Any

import timm
import torch
from safetensors import safe_open

from .._io import read_json_file
from .._state_dict import key_mismatch, shorten
from .._warnings import warn
from ._folder import MAX_CONFIG_BYTES, check_tensors
from ._weights import CONFIG_NAME, WEIGHTS_NAME, check_model_source, read_safetensors
from .msrn import MSRN

__all__ = ["create_model", "list_models", "load_model", "infer_model_args"]

_logger = logging.getLogger(__name__)


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> MSRN:
    """Same as ``timm.create_model``; accepts ``msrn_*`` names, ``hf-hub:`` and ``local-dir:``."""
    check_model_source(model_name, kwargs.get("cache_dir"))  # clear errors for bad checkpoint sources
    return timm.create_model(model_name, pretrained=pretrained, **kwargs)


def list_models(pattern: str = "msrn*", pretrained: bool = False) -> list[str]:
    """The registered MSRN architectures (``timm.list_models("msrn*")``)."""
    return timm.list_models(pattern, pretrained=pretrained)


def infer_model_args(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments of :class:`msrn.MSRN` that fix the tensor shapes of ``state_dict``."""
    label_wise = "head.classifier.weight" in state_dict
    try:
        classifier = state_dict["head.classifier.weight" if label_wise else "head.fc2.weight"]
        fc1 = None if label_wise else state_dict["head.fc1.weight"]
        features = state_dict["label_features"]
    except KeyError as error:
        raise ValueError(
            f"the checkpoint is not an MSRN state dict: it has no {error.args[0]!r} tensor."
        ) from None
    num_branches = sum(
        1 for key in state_dict if key.startswith("backbone.projections.") and key.endswith(".weight")
    )
    embed_dim = state_dict["backbone.projections.0.weight"].shape[0]
    args: dict[str, Any] = dict(
        num_classes=classifier.shape[0],
        hidden_dim=classifier.shape[1],  # fc1's width, or each label's representation (label-wise)
        label_feature_dim=features.shape[1],
        embed_dim=embed_dim,
        num_branches=num_branches,
        # Only an LGE without its input Linear shows the paper variant; without an LGE it is moot.
        variant="paper"
        if "lge.gats.0.weight" in state_dict and "lge.input_proj.weight" not in state_dict
        else "official",
    )
    if label_wise:
        args["head"] = "label_wise"
        if "query_groups" in state_dict:
            args["num_query_groups"] = state_dict["query_groups"].shape[0]
    if "label_projection.weight" in state_dict:
        args["embeddings"] = "none"
        return args
    if "lge.gats.0.weight" in state_dict:
        args["gat_hidden_dim"] = state_dict["lge.gats.0.weight"].shape[0]
    if "lge.diffpool.assign.weight" in state_dict:
        args["num_groups"] = state_dict["lge.diffpool.assign.weight"].shape[0]
        if label_wise:
            args["embeddings"] = "both" if "query_groups" in state_dict else "group"
        else:
            rows = fc1.shape[1] // (num_branches * embed_dim)
            args["embeddings"] = "both" if rows == args["num_classes"] + args["num_groups"] else "group"
    else:
        args["embeddings"] = "label"
    return args


def _safetensors_label_names(path: pathlib.Path) -> list[str] | None:
    with safe_open(str(path), framework="pt") as handle:
        names = (handle.metadata() or {}).get("label_names")
    return json.loads(names) if names else None


def _read_state_dict(path: pathlib.Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.suffix != ".safetensors":
        raise ValueError(
            f"checkpoint {path} is not a .safetensors file; only safetensors weights are read "
            f"(save them with safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))."
        )
    state_dict = read_safetensors(path)
    check_tensors(state_dict, str(path))
    return state_dict


def _load_state_dict(model: torch.nn.Module, path: pathlib.Path, state_dict: dict[str, torch.Tensor]) -> None:
    mismatch = key_mismatch(model.state_dict(), state_dict)
    if mismatch:
        architecture = model.pretrained_cfg.get("architecture", type(model).__name__)
        raise ValueError(
            f"checkpoint {path} does not fit the model ({architecture}): {mismatch}. Was it saved from "
            f"another architecture? Name that one, or load the run's folder with local-dir:DIR."
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit the model: {shorten(str(error))}") from None


def _from_saved(spec: str) -> torch.nn.Module:
    """A folder or Hub repo written by ``msrn.save_pretrained``, through timm's own resolution (which
    also reads other timm models, refused by the caller with a clearer message than a config check)."""
    try:
        return timm.create_model(spec)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load model {spec}: {error}") from None


def _from_architecture(spec: str, checkpoint: str | None) -> MSRN:
    """A registered architecture sized after the tensors of a safetensors state dict."""
    name = spec.split(".", 1)[0]
    if not name.startswith("msrn_") or not timm.is_model(name):
        raise ValueError(
            f"model {spec!r} is not an MSRN architecture ({', '.join(list_models())}), "
            f"nor local-dir:DIR or hf-hub:ID."
        )
    if checkpoint is None:
        raise ValueError(
            f"model {spec} names an architecture without trained weights: add "
            f"--checkpoint FILE.safetensors (load_model's checkpoint argument), or use local-dir:DIR / "
            f"hf-hub:ID for a saved model."
        )
    if name == "msrn_custom":
        raise ValueError(
            "msrn_custom needs its backbone: save the model with msrn.save_pretrained and use local-dir:DIR."
        )
    path = pathlib.Path(checkpoint).expanduser()
    state_dict = _read_state_dict(path)
    kwargs = infer_model_args(state_dict)
    names = _safetensors_label_names(path)
    if names is not None:
        kwargs["label_names"] = names
    if "label_graph" in state_dict:  # built with its graph, so that creation does not report a missing one
        kwargs["label_graph"] = state_dict["label_graph"]
    _logger.info("%s from %s with %s", name, path, kwargs)
    model = timm.create_model(name, **kwargs)
    _load_state_dict(model, path, state_dict)
    _warn_unread_thresholds(path)
    return model


def _warn_unread_thresholds(path: pathlib.Path) -> None:
    """The weights file of a saved folder whose ``config.json`` holds fitted thresholds: name and
    checkpoint read only the weights, so say that the thresholds are not applied."""
    config_path = path.parent / CONFIG_NAME
    if path.name != WEIGHTS_NAME or not config_path.is_file():
        return
    try:
        cfg = read_json_file(config_path, limit=MAX_CONFIG_BYTES)["pretrained_cfg"]
        fitted = bool(cfg.get("label_thresholds"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a folder msrn wrote
        return
    if fitted:
        warn(
            _logger,
            f"{config_path} holds the per-label thresholds fitted for {path}, but an architecture name "
            f"with a checkpoint reads only the weights: they are not applied (labels are chosen at 0.5). "
            f"Load the folder with local-dir:{path.parent} to apply them.",
        )


def load_model(spec: str, checkpoint: str | None = None) -> MSRN:
    """A trained MSRN in eval mode, from

    - ``local-dir:DIR``: a folder written by :func:`msrn.save_pretrained` (``config.json`` +
      ``model.safetensors``, timm's layout);
    - ``hf-hub:USER/REPO``: the same files on the Hugging Face Hub (or in the local HF cache);
    - ``NAME``: a registered architecture (``msrn_resnet101``...) whose weights come from the
      safetensors state dict ``checkpoint``; the sizes (labels, groups, widths, branches, variant)
      are read off the tensors.

    With ``local-dir:`` / ``hf-hub:``, a ``checkpoint`` state dict replaces the saved weights.
    """
    if spec.startswith("local-dir:"):
        folder = pathlib.Path(spec[len("local-dir:") :]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model {spec}: folder {folder} does not exist.")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).exists():
                raise FileNotFoundError(
                    f"model {spec}: {folder} has no {name} (write it with msrn.save_pretrained)."
                )
        check_model_source(f"local-dir:{folder}")  # every field of config.json, before any weights
        model = _from_saved(f"local-dir:{folder}")
    elif spec.startswith("hf-hub:"):
        check_model_source(spec)
        model = _from_saved(spec)
    else:
        return _from_architecture(spec, checkpoint).eval()
    if not isinstance(model, MSRN):
        raise ValueError(f"model {spec} is a {type(model).__name__}, not an MSRN model.")
    if checkpoint is not None:
        path = pathlib.Path(checkpoint).expanduser()
        _load_state_dict(model, path, _read_state_dict(path))
    return model.eval()
