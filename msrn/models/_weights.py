"""Reading MSRN weights: full checkpoints (``config.json`` + ``model.safetensors``, timm's folder layout,
from a folder or the Hugging Face Hub) and the ImageNet weights of the backbone.

The builder in :mod:`msrn.models.msrn` calls these; writing lives in :mod:`msrn.hub`. Weights are only
ever read from safetensors files: no weight file is unpickled.
"""

import dataclasses
import logging
import os
import pathlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError  # also before huggingface_hub.errors
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import PretrainedCfg, get_pretrained_cfg, parse_model_name

from .._hub_network import (
    check_hub_reachable,
    hub_file,
    hub_offline,
    is_network_error,
    offline_options,
    unreachable_error,
)
from .._state_dict import key_mismatch, shorten, summarize_names
from ._folder import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, check_tensors, read_config

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "checkpoint_location",
    "read_checkpoint",
    "read_config",
    "read_safetensors",
    "load_checkpoint_into",
    "load_backbone_weights",
    "read_backbone_file",
    "check_model_source",
    "registry_cfg",
]

_logger = logging.getLogger(__name__)

# Entries of the state dict whose shape depends on the number of labels. fc1 is sized by the rows of
# M = [O || Q] (labels + groups), so it goes with the labels as a whole, bias included. The label-wise
# head's read-out is shared by the labels; only its per-label classifier is label-sized.
_LABEL_SIZED_PREFIXES = ("label_features", "label_graph", "head.fc1.", "head.fc2.", "head.classifier.")
# pretrained_cfg entries that describe input tensors (JSON turns their tuples into lists).
_TUPLE_CFG_KEYS = (
    "input_size",
    "test_input_size",
    "min_input_size",
    "mean",
    "std",
    "pool_size",
    "test_pool_size",
)
# PyTorch weight files a backbone may come in (read with weights_only=True).
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_WRITER_HINT = "Write MSRN folders with msrn.save_pretrained(model, directory)."
# Tensors every MSRN state dict holds, whatever its variant and embeddings (head="paper"); a
# head="label_wise" one holds its per-label classifier instead of fc1 and fc2.
_MSRN_TENSORS = ("label_features", "label_graph", "head.fc1.weight", "head.fc2.weight")
_LABEL_WISE_TENSORS = ("label_features", "label_graph", "head.classifier.weight")
# What else to do without the Hub, in the messages of a failed download.
_CHECKPOINT_ALTERNATIVES = "load a local copy of the repository's folder with 'local-dir:DIR'."
_BACKBONE_ALTERNATIVES = (
    "give a local weight file with pretrained_cfg_overlay=dict(file=PATH) (msrn train --backbone-weights "
    "PATH), or start from random weights with pretrained=False (msrn train --no-pretrained)."
)

PathLike = str | os.PathLike


@dataclasses.dataclass
class Checkpoint:
    """A full MSRN checkpoint: its validated config.json and its tensors."""

    source: str  # "local-dir:PATH" or "hf-hub:ID", for messages
    config_path: str
    config: dict[str, Any]
    weights_path: str
    state_dict: dict[str, torch.Tensor]

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    @property
    def model_args(self) -> dict[str, Any]:
        return dict(self.config["model_args"])

    @property
    def fixed_label_features(self) -> bool:
        return self.config["msrn"]["label_features"] == "fixed"

    @property
    def label_names(self) -> list[str] | None:
        return self.config.get("label_names")


# ------------------------------------------------------------------------------------------ where
def checkpoint_location(pretrained_cfg: Mapping[str, Any], pretrained: bool) -> tuple[str, str] | None:
    """Where a full MSRN checkpoint comes from (``(kind, location)``), or ``None`` when the model
    starts from its init.

    ``hf-hub:`` and ``local-dir:`` names always load their checkpoint (the name says where the weights
    are). A registry tag or a ``pretrained_cfg`` with weights loads only with ``pretrained=True``.
    """
    source = pretrained_cfg.get("source")
    if source == "local-dir":
        return "local-dir", str(pretrained_cfg["file"])
    if source == "hf-hub":
        return "hf-hub", str(pretrained_cfg["hf_hub_id"])
    if not pretrained:
        return None
    if pretrained_cfg.get("state_dict") is not None:
        raise ValueError(
            "MSRN does not take weights as pretrained_cfg['state_dict']; create the model with "
            "pretrained=False and call model.load_state_dict(state_dict), or load a folder with 'local-dir:'."
        )
    if pretrained_cfg.get("file"):
        # A folder is a saved MSRN; a file holds the backbone's ImageNet weights (load_backbone_weights).
        if os.path.isdir(pretrained_cfg["file"]):
            return "local-dir", str(pretrained_cfg["file"])
        return None
    if pretrained_cfg.get("hf_hub_id"):
        return "hf-hub", str(pretrained_cfg["hf_hub_id"])
    if pretrained_cfg.get("url"):
        raise ValueError(
            f"pretrained_cfg points MSRN weights at the URL {pretrained_cfg['url']!r}; MSRN reads full "
            f"checkpoints only as safetensors from a Hub repository (hf_hub_id) or a folder (file)."
        )
    return None


def _hub_file(hub_id: str, filename: str, cache_dir: PathLike | None = None) -> str:
    """Local path of ``filename`` in the MSRN checkpoint repository ``hub_id`` (downloaded or cached)."""
    return hub_file(hub_id, filename, _CHECKPOINT_ALTERNATIVES, cache_dir)


def read_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (never a pickle), on the CPU; NaN or infinite values are refused."""
    path = str(path)
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a safetensors file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path}.")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {error}. "
            f"Download or save the weights again."
        ) from error
    broken = [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        raise ValueError(
            f"{path} holds NaN or infinite values in {summarize_names(broken)}; such weights give "
            f"NaN outputs (a diverged training run?). Use an earlier checkpoint or retrain."
        )
    return tensors


def _check_msrn_tensors(state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """Refuse a state dict that is not MSRN's (another architecture, or a hand-trimmed file)."""
    required = _LABEL_WISE_TENSORS if "head.classifier.weight" in state_dict else _MSRN_TENSORS
    missing = [name for name in required if name not in state_dict]
    if len(missing) == len(required):
        raise ValueError(
            f"{path} is not an MSRN state dict: it has none of {', '.join(_MSRN_TENSORS)} (it holds "
            f"{summarize_names(sorted(state_dict))}: weights of another architecture?). {_WRITER_HINT}"
        )
    if missing:
        raise ValueError(f"{path} lacks the MSRN tensor(s) {', '.join(missing)}. {_WRITER_HINT}")


def read_checkpoint(kind: str, location: str, cache_dir: PathLike | None = None) -> Checkpoint:
    """Read and check the config and the tensors of a checkpoint named by :func:`checkpoint_location`."""
    config: dict[str, Any] | None = None
    if kind == "local-dir":
        folder = pathlib.Path(location)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"MSRN checkpoint folder {folder} does not exist (or is not a folder); it must hold "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} as written by msrn.save_pretrained."
            )
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if weights_path.is_dir():
            raise ValueError(f"{weights_path} is a folder, not a safetensors file.")
        if not weights_path.is_file():
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
            refused = (
                f" ({', '.join(pickles)} not read: MSRN loads weights only from safetensors)"
                if pickles
                else ""
            )
            raise FileNotFoundError(f"No {WEIGHTS_NAME} in {folder}{refused}.")
        source = f"local-dir:{folder}"
    elif kind == "hf-hub":
        config_path = _hub_file(location, CONFIG_NAME, cache_dir)
        config = read_config(config_path)  # before the weights: a bad config fails without a download
        weights_path = _hub_file(location, WEIGHTS_NAME, cache_dir)
        source = f"hf-hub:{location}"
    else:  # pragma: no cover - checkpoint_location only returns the two kinds above
        raise ValueError(f"Unknown checkpoint source {kind!r}.")
    if config is None:
        config = read_config(config_path)
    state_dict = read_safetensors(weights_path)
    _check_msrn_tensors(state_dict, str(weights_path))
    check_tensors(state_dict, str(weights_path))
    classifier = state_dict.get("head.classifier.weight", state_dict.get("head.fc2.weight"))
    if classifier.shape[0] != config["num_classes"]:
        raise ValueError(
            f"{config_path} says num_classes={config['num_classes']} but {weights_path} holds a classifier "
            f"for {classifier.shape[0]} labels; the two files do not belong together."
        )
    return Checkpoint(source, str(config_path), config, str(weights_path), state_dict)


def _is_label_sized(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix) for prefix in _LABEL_SIZED_PREFIXES)


def load_checkpoint_into(
    model: torch.nn.Module,
    checkpoint: Checkpoint,
    keep: Sequence[str] = (),
) -> None:
    """Copy the checkpoint's tensors into ``model`` (built from the checkpoint's config).

    When the model has another number of labels, the label-sized parts (label features, label
    graph, ``head.fc1``, ``head.fc2``, or the label-wise head's ``head.classifier``) keep their fresh
    init, with a warning. Entries named in
    ``keep`` (label inputs the caller passed explicitly) keep the model's values.
    """
    state_dict = dict(checkpoint.state_dict)
    expected = model.state_dict()
    if model.num_classes == 0:  # built without a classifier: the checkpoint's head has no place to go
        state_dict = {
            key: value for key, value in state_dict.items() if key in expected or not key.startswith("head.")
        }
    reinitialised: list[str] = []
    if model.num_labels != checkpoint.num_classes:
        reinitialised = sorted(
            {
                key.rsplit(".", 1)[0] if key.startswith("head.") else key
                for key in expected
                if _is_label_sized(key)
            }
        )
        state_dict = {key: value for key, value in state_dict.items() if not _is_label_sized(key)}
        expected = {key: value for key, value in expected.items() if not _is_label_sized(key)}
        _logger.warning(
            "%s was trained for %d labels but the model has %d: %s start from their init; everything "
            "else is loaded.",
            checkpoint.source,
            checkpoint.num_classes,
            model.num_labels,
            ", ".join(reinitialised),
        )
    for key in keep:
        state_dict.pop(key, None)
        expected.pop(key, None)
    mismatch = key_mismatch(expected, state_dict)
    if mismatch:
        raise ValueError(
            f"The weights in {checkpoint.weights_path} ({checkpoint.source}) do not fit the model built from "
            f"{checkpoint.config_path}: {mismatch}. Do not override architecture arguments "
            f"(backbone, embed_dim, variant, ...) when loading a checkpoint."
        )
    model.load_state_dict(state_dict, strict=False)
    _logger.info("Loaded %d tensors from %s.", len(state_dict), checkpoint.source)


def read_backbone_file(path: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a local weight file of a timm backbone: safetensors, or a PyTorch file
    (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) read with ``torch.load(weights_only=True)``, which
    rebuilds tensors and plain containers but runs no code from the file."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Backbone weight file {path} does not exist.")
    if path.suffix == ".safetensors":
        state_dict: Any = read_safetensors(path)
    elif path.suffix in _TORCH_SUFFIXES:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
            raise ValueError(
                f"{path} cannot be read as weights only ({type(error).__name__}: {error}). MSRN does not "
                f"unpickle other Python objects; save the tensors with safetensors.torch.save_file."
            ) from None
        # Training checkpoints nest the weights (timm's and torchvision's scripts use these keys).
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
                state_dict = state_dict[key]
                break
    else:
        raise ValueError(
            f"Backbone weight file {path} must be .safetensors (or a PyTorch {'/'.join(_TORCH_SUFFIXES)} "
            f"file of tensors)."
        )
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if any(key.startswith("backbone.trunk.") for key in state_dict):
        raise ValueError(
            f"{path} holds a whole MSRN, not the weights of a timm backbone: load a saved MSRN with "
            f"timm.create_model('local-dir:DIR') or msrn.load_model."
        )
    return state_dict


def _check_backbone_keys(
    name: str, state_dict: Mapping[str, torch.Tensor], create_args: dict[str, Any], path: PathLike
) -> None:
    """The file must name the weights of the timm model ``name`` (its classifier may be absent)."""
    base = name.split(".", 1)[0]
    try:
        with torch.device("meta"):
            reference = timm.create_model(base, pretrained=False, **create_args)
    except (RuntimeError, NotImplementedError):  # models that compute with data at init
        reference = timm.create_model(base, pretrained=False, **create_args)
    expected = set(reference.state_dict())
    classifier = reference.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    in_classifier = tuple(f"{c}." for c in classifier)
    # Keys only: timm adapts some shapes of its weights (input channels, position embeddings).
    mismatch = key_mismatch(
        {k: None for k in expected if not k.startswith(in_classifier)},
        {k: None for k in state_dict if not k.startswith(in_classifier)},
        shapes=False,
        target=base,
    )
    if mismatch:
        raise ValueError(
            f"{path} does not hold the weights of timm's {base} ({mismatch}). Use the weights "
            f"of that model in timm's layout, e.g. saved with "
            f"safetensors.torch.save_file(timm.create_model({base!r}, pretrained=True).state_dict(), PATH)."
        )


def load_backbone_weights(
    model: torch.nn.Module, cache_dir: PathLike | None = None, file: PathLike | None = None
) -> None:
    """Load the ImageNet weights of the model's timm backbone (paper 4.1); MSRN's own layers keep their init.

    By default the weights are the ones timm lists for the backbone name (its tag, or timm's default
    tag), read through timm from the Hugging Face Hub as ``model.safetensors`` where timm hosts them.
    ``file`` (or ``pretrained_cfg_overlay=dict(file=...)`` in the model's ``backbone_kwargs``) names a
    local weight file of the backbone instead (:func:`read_backbone_file`); timm adapts it as it adapts
    its own weights (input channels, position embeddings).
    """
    backbone = model.backbone
    name = backbone.backbone_name
    create_args = dict(model.model_args.get("backbone_kwargs", {}))
    create_args.pop("out_indices", None)  # the trunk's own, below
    overlay: dict[str, Any] = dict(create_args.pop("pretrained_cfg_overlay", None) or {})
    file = file or overlay.pop("file", None)
    create_args["in_chans"] = backbone.in_chans
    if file is not None:
        state_dict = read_backbone_file(file)
        _check_backbone_keys(name, state_dict, create_args, file)
        overlay["state_dict"] = state_dict
        weights, where = name, str(file)
    else:
        cfg = get_pretrained_cfg(name)
        if cfg is None or not cfg.has_weights:
            raise ValueError(
                f"timm has no pretrained weights for backbone {name!r}; pick a tagged name from "
                f"timm.list_pretrained({name.split('.', 1)[0] + '*'!r}), give a local weight file "
                f"(pretrained_cfg_overlay=dict(file=PATH)), or use pretrained=False."
            )
        weights = f"{name.split('.', 1)[0]}.{cfg.tag}" if cfg.tag else name
        where = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else str(cfg.url or cfg.file)
        what = f"the ImageNet weights of backbone {weights!r}"
        if cfg.hf_hub_id and not cfg.hf_hub_filename and not cfg.custom_load:
            # The Hub repository's safetensors file, never its pickled alternative: read here and
            # handed to timm as a state dict (timm's own Hub lookup differs between its releases).
            hub_path = hub_file(
                cfg.hf_hub_id,
                WEIGHTS_NAME,
                _BACKBONE_ALTERNATIVES,
                cache_dir,
                what=f"{what} ({WEIGHTS_NAME} of Hub repository {cfg.hf_hub_id!r})",
            )
            overlay["state_dict"] = read_safetensors(hub_path)
        elif cfg.hf_hub_id and not hub_offline():
            # timm downloads another file of the repository itself: fail fast when the Hub is out of reach.
            repo_id, _, revision = cfg.hf_hub_id.partition("@")
            filename = cfg.hf_hub_filename or WEIGHTS_NAME
            if not isinstance(try_to_load_from_cache(repo_id, filename, cache_dir, revision or None), str):
                check_hub_reachable(
                    repo_id,
                    filename,
                    f"for {what} ({filename} of Hub repository {cfg.hf_hub_id!r})",
                    offline_options(_BACKBONE_ALTERNATIVES),
                    revision or None,
                    cache_dir,
                )
    try:
        donor = timm.create_model(
            weights,
            pretrained=True,
            features_only=True,
            out_indices=tuple(backbone.trunk.feature_info.out_indices),
            pretrained_cfg_overlay=overlay,
            cache_dir=cache_dir,
            **create_args,
        )
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Cannot load the ImageNet weights of backbone {weights!r} from {where}: {error}"
        ) from error
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        if is_network_error(error) and not hub_offline():
            purpose = f"for the ImageNet weights of backbone {weights!r} ({where})"
            options = offline_options(_BACKBONE_ALTERNATIVES)
            raise unreachable_error(purpose, error, options, cache_dir) from error
        raise FileNotFoundError(
            f"Cannot load the ImageNet weights of backbone {weights!r} from {where} ({type(error).__name__}: "
            f"{error}). With HF_HUB_OFFLINE=1 the file must already be in the Hugging Face cache, or give "
            f"a local file with pretrained_cfg_overlay=dict(file=PATH) (msrn train --backbone-weights PATH)."
        ) from error
    except RuntimeError as error:
        if file is None:
            raise
        raise ValueError(f"{file} does not fit backbone {name!r}: {shorten(str(error))}") from None
    trunk_state = donor.state_dict()
    backbone.trunk.load_state_dict(trunk_state, strict=True)
    initialised = sorted(
        {
            ".".join(key.split(".")[:2]) if key.startswith("backbone.") else key.split(".")[0]
            for key in model.state_dict()
            if not key.startswith("backbone.trunk.") and key != "label_graph"
        }
    )
    _logger.info(
        "Loaded %d backbone tensors (backbone.trunk) of %s from %s; initialised from scratch: %s.",
        len(trunk_state),
        weights,
        where,
        ", ".join(initialised),
    )


def check_model_source(model_name: str, cache_dir: PathLike | None = None) -> None:
    """Check the config.json behind an ``hf-hub:`` / ``local-dir:`` name (:func:`read_config`: a
    bounded read, then every field) before timm parses it, so that a bad file or an unreachable id
    fails with one line that names it. Other names pass."""
    source, location = parse_model_name(model_name)
    if source == "local-dir":
        path = pathlib.Path(location) / CONFIG_NAME
    elif source == "hf-hub":
        path = pathlib.Path(_hub_file(location, CONFIG_NAME, cache_dir))
    else:
        return
    read_config(path)


def registry_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A pretrained_cfg read from config.json, as timm's registry holds it: tuples, known fields only."""
    fields = {field.name for field in dataclasses.fields(PretrainedCfg)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        _logger.warning("Ignoring unknown pretrained_cfg entries %s.", unknown)
    return {
        key: tuple(value) if key in _TUPLE_CFG_KEYS and isinstance(value, list) else value
        for key, value in cfg.items()
        if key in fields
    }
