"""MSRN weights on disk and on the Hugging Face Hub, as safetensors in timm's folder layout.

A saved model is a folder (or a Hub repository) holding

- ``config.json``: timm's fields (``architecture``, ``num_classes``, ``label_names``, ``model_args``,
  ``pretrained_cfg``) and an ``msrn`` section (format version, fixed or learnable label features);
- ``model.safetensors``: the whole state dict, label features and label graph included;
- ``README.md``: a model card (written by :func:`push_to_hub`).

``timm.create_model("local-dir:DIR")`` and ``timm.create_model("hf-hub:user/repo")`` rebuild the model
from ``config.json`` and load ``model.safetensors`` (after ``import msrn``). Weights are only ever read
from safetensors files: no weight file is unpickled.
"""
import inspect
import json
import logging
import math
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from timm.models import filter_pretrained_cfg, get_pretrained_cfg

__all__ = ["save_pretrained", "push_to_hub", "model_card", "CONFIG_NAME", "WEIGHTS_NAME"]

_logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_MODEL_CARD_NAME = "README.md"
# Version of the "msrn" section of config.json; a reader refuses newer versions it does not know.
_FORMAT_VERSION = 1
_LABEL_FEATURE_KINDS = ("fixed", "learnable")
# Entries of the state dict whose shape depends on the number of labels. fc1 is sized by the rows of
# M = [O || Q] (labels + groups), so it goes with the labels as a whole, bias included.
_LABEL_SIZED_PREFIXES = ("label_features", "label_graph", "head.fc1.", "head.fc2.")
# pretrained_cfg entries that describe input tensors (JSON turns their tuples into lists).
_TUPLE_CFG_KEYS = ("input_size", "test_input_size", "min_input_size", "mean", "std", "pool_size", "test_pool_size")
# pretrained_cfg entries that describe where weights come from, not the saved model itself.
_SOURCE_CFG_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "tag", "notes",
                    "description", "label_names", "label_descriptions", "label_offset", "architecture")

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------------------------------- saving
def _architecture_of(model: torch.nn.Module) -> str:
    import timm

    name = str(getattr(model, "pretrained_cfg", {}).get("architecture") or "")
    return name if name.startswith("msrn_") and timm.is_model(name) else "msrn_custom"


def _model_args_of(model: torch.nn.Module) -> Dict[str, Any]:
    """Constructor arguments that rebuild ``model`` (``num_classes`` and label names live beside them)."""
    args = dict(
        backbone=model.backbone.backbone_name,
        num_groups=model.num_groups,
        embed_dim=model.embed_dim,
        num_branches=model.num_branches,
        variant=model.variant,
        label_feature_dim=int(model.label_features.shape[1]),
        embeddings=model.embeddings_mode,
        compactness_weight=model.compactness_weight,
        compactness_squared=model.compactness_squared,
        gat_hidden_dim=model.gat_hidden_dim,
        hidden_dim=model.hidden_dim,
        drop_rate=model.drop_rate,
        in_chans=model.backbone.in_chans,
    )
    backbone_kwargs = dict(getattr(model, "backbone_kwargs", None) or {})
    if backbone_kwargs:
        args["backbone_kwargs"] = backbone_kwargs
    try:
        json.dumps(args)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The model's constructor arguments cannot be written to {CONFIG_NAME} ({error}); "
            f"backbone_kwargs must hold only JSON values (numbers, strings, lists, dicts)."
        ) from error
    return args


def _pretrained_cfg_of(model: torch.nn.Module, architecture: str) -> Dict[str, Any]:
    """Preprocessing and head description of the saved model, without any weight source."""
    registered = get_pretrained_cfg(architecture)
    cfg = registered.to_dict() if registered is not None else {}
    cfg.update(getattr(model, "pretrained_cfg", None) or {})
    cfg = filter_pretrained_cfg(cfg, remove_source=True, remove_null=True)
    for key in _SOURCE_CFG_KEYS:
        cfg.pop(key, None)
    cfg["num_classes"] = model.num_classes
    in_chans = model.backbone.in_chans
    for key in ("input_size", "test_input_size", "min_input_size"):
        if cfg.get(key):
            cfg[key] = [in_chans, *cfg[key][1:]]
    cfg.setdefault("first_conv", None)
    cfg.setdefault("classifier", "head.fc2")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The MSRN inside a ``torch.compile`` (``_orig_mod``) or DataParallel / DDP (``module``) wrapper."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _config_of(model: torch.nn.Module) -> Dict[str, Any]:
    from .models import MSRN

    if not isinstance(model, MSRN):
        raise TypeError(
            f"save_pretrained expects an msrn.MSRN model (e.g. from timm.create_model('msrn_resnet101')), "
            f"got {type(model).__name__}."
        )
    architecture = _architecture_of(model)
    config: Dict[str, Any] = {
        "architecture": architecture,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
    }
    if model.label_names is not None:
        config["label_names"] = [str(name) for name in model.label_names]
    config["model_args"] = _model_args_of(model)
    config["msrn"] = {
        "format_version": _FORMAT_VERSION,
        "label_features": "learnable" if isinstance(model.label_features, torch.nn.Parameter) else "fixed",
    }
    config["pretrained_cfg"] = _pretrained_cfg_of(model, architecture)
    return config


def _write_atomically(path: pathlib.Path, write) -> None:
    # A crash while writing must not leave a truncated file under the final name.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_pretrained(model: torch.nn.Module, directory: PathLike) -> pathlib.Path:
    """Write ``config.json`` and ``model.safetensors`` for ``model`` into ``directory``.

    The folder is self-contained: ``timm.create_model("local-dir:DIR")`` (after ``import msrn``)
    rebuilds the same architecture with the same weights, label features, label graph and label
    names, and gives the same logits. Existing ``config.json`` / ``model.safetensors`` are replaced.

    Args:
        model: an :class:`msrn.MSRN`.
        directory: target folder, created if missing.

    Returns:
        The folder, as a :class:`pathlib.Path`.
    """
    from safetensors.torch import save_file

    model = _unwrap(model)
    config = _config_of(model)
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file.")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    _write_atomically(directory / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    _write_atomically(directory / CONFIG_NAME, lambda path: pathlib.Path(path).write_text(text, encoding="utf-8"))
    _logger.info("Saved %s (%d tensors) to %s", config["architecture"], len(tensors), directory)
    return directory


# --------------------------------------------------------------------------------------------- loading
@dataclass
class _Checkpoint:
    """A full MSRN checkpoint: its validated config.json and its tensors."""

    source: str  # "local-dir:PATH" or "hf-hub:ID", for messages
    config_path: str
    config: Dict[str, Any]
    weights_path: str
    state_dict: Dict[str, torch.Tensor]

    @property
    def num_classes(self) -> int:
        return self.config["num_classes"]

    @property
    def model_args(self) -> Dict[str, Any]:
        return dict(self.config["model_args"])

    @property
    def fixed_label_features(self) -> bool:
        return self.config["msrn"]["label_features"] == "fixed"

    @property
    def label_names(self) -> Optional[List[str]]:
        return self.config.get("label_names")


def _checkpoint_location(pretrained_cfg: Mapping[str, Any], pretrained: bool) -> Optional[Tuple[str, str]]:
    """Where a full MSRN checkpoint comes from, or ``None`` when the model starts from its init.

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
    if pretrained_cfg.get("file"):
        return "local-dir", str(pretrained_cfg["file"])
    if pretrained_cfg.get("hf_hub_id"):
        return "hf-hub", str(pretrained_cfg["hf_hub_id"])
    if pretrained_cfg.get("url"):
        raise ValueError(
            f"pretrained_cfg points MSRN weights at the URL {pretrained_cfg['url']!r}; MSRN reads full "
            f"checkpoints only as safetensors from a Hub repository (hf_hub_id) or a folder (file)."
        )
    return None


def _split_hub_id(hub_id: str) -> Tuple[str, Optional[str]]:
    repo_id, _, revision = hub_id.partition("@")
    if not repo_id or "@" in revision:
        raise ValueError(f"Hub id {hub_id!r} is not of the form 'owner/name' or 'owner/name@revision'.")
    return repo_id, revision or None


def _hub_file(hub_id: str, filename: str, cache_dir: Optional[PathLike] = None) -> str:
    """Local path of ``filename`` in Hub repository ``hub_id`` (downloaded or from the cache)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    repo_id, revision = _split_hub_id(hub_id)
    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, library_name="msrn")
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        where = cache_dir or constants.HF_HUB_CACHE
        hint = (
            f"Hugging Face Hub offline mode is on (HF_HUB_OFFLINE=1) and the file is not in the cache at {where}: "
            f"download it once with network access, or point HF_HUB_CACHE at a cache that holds it."
            if constants.is_offline_mode()
            else f"Check the repository id, your network and your access token (cache: {where})."
        )
        raise FileNotFoundError(
            f"Cannot resolve {filename} of Hub repository {hub_id!r} ({type(error).__name__}: {error}). {hint}"
        ) from error


def _validate_config(config: Any, path: str) -> Dict[str, Any]:
    import timm

    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}.")
    hint = "Write MSRN folders with msrn.save_pretrained(model, directory)."
    missing = [key for key in ("architecture", "num_classes", "model_args", "msrn", "pretrained_cfg")
               if key not in config]
    if missing:
        raise ValueError(f"{path} is missing the key(s) {missing}. {hint}")
    architecture = config["architecture"]
    if not (isinstance(architecture, str) and architecture.startswith("msrn_") and timm.is_model(architecture)):
        known = ", ".join(timm.list_models("msrn*"))
        raise ValueError(
            f"{path} names the architecture {architecture!r}, which is not a registered MSRN architecture "
            f"(known: {known}). Is the file from an MSRN model, and was `import msrn` run? {hint}"
        )
    num_classes = config["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{path}: num_classes must be an integer >= 1, got {num_classes!r}.")
    for key in ("model_args", "msrn", "pretrained_cfg"):
        if not isinstance(config[key], dict):
            raise ValueError(f"{path}: {key!r} must be a JSON object, got {type(config[key]).__name__}.")
    from .models import MSRN

    accepted = set(inspect.signature(MSRN.__init__).parameters) - {"self", "label_features", "label_graph"}
    unknown = sorted(set(config["model_args"]) - accepted)
    if unknown:
        raise ValueError(
            f"{path}: model_args holds {unknown}, which are not MSRN constructor arguments "
            f"(written by a newer msrn, or edited by hand?)."
        )
    section = config["msrn"]
    version = section.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: msrn.format_version must be an integer >= 1, got {version!r}. {hint}")
    if version > _FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in MSRN format version {version}, newer than this msrn package reads "
            f"({_FORMAT_VERSION}); upgrade msrn."
        )
    if section.get("label_features") not in _LABEL_FEATURE_KINDS:
        raise ValueError(
            f"{path}: msrn.label_features must be one of {list(_LABEL_FEATURE_KINDS)}, "
            f"got {section.get('label_features')!r}. {hint}"
        )
    label_names = config.get("label_names")
    if label_names is not None and (
        not isinstance(label_names, list) or len(label_names) != num_classes
        or not all(isinstance(name, str) for name in label_names)
    ):
        raise ValueError(f"{path}: label_names must be a list of {num_classes} strings (one per label).")
    return config


def _read_config(path: PathLike) -> Dict[str, Any]:
    path = str(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No {CONFIG_NAME} at {path}: an MSRN folder holds {CONFIG_NAME} and {WEIGHTS_NAME}."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    return _validate_config(config, path)


def _read_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a safetensors file (never a pickle), on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path}.")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {error}. "
            f"Download or save the weights again."
        ) from error


def _read_checkpoint(kind: str, location: str, cache_dir: Optional[PathLike] = None) -> _Checkpoint:
    config: Optional[Dict[str, Any]] = None
    if kind == "local-dir":
        folder = pathlib.Path(location)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"MSRN checkpoint folder {folder} does not exist (or is not a folder); it must hold "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} as written by msrn.save_pretrained."
            )
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not weights_path.is_file():
            pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
            refused = f" ({', '.join(pickles)} not read: MSRN loads weights only from safetensors)" if pickles else ""
            raise FileNotFoundError(f"No {WEIGHTS_NAME} in {folder}{refused}.")
        source = f"local-dir:{folder}"
    elif kind == "hf-hub":
        config_path = _hub_file(location, CONFIG_NAME, cache_dir)
        config = _read_config(config_path)  # before the weights: a bad config fails without a download
        weights_path = _hub_file(location, WEIGHTS_NAME, cache_dir)
        source = f"hf-hub:{location}"
    else:  # pragma: no cover - _checkpoint_location only returns the two kinds above
        raise ValueError(f"Unknown checkpoint source {kind!r}.")
    if config is None:
        config = _read_config(config_path)
    state_dict = _read_weights(weights_path)
    fc2 = state_dict.get("head.fc2.weight")
    if fc2 is not None and fc2.shape[0] != config["num_classes"]:
        raise ValueError(
            f"{config_path} says num_classes={config['num_classes']} but {weights_path} holds a classifier "
            f"for {fc2.shape[0]} labels; the two files do not belong together."
        )
    return _Checkpoint(source, str(config_path), config, str(weights_path), state_dict)


def _is_label_sized(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix) for prefix in _LABEL_SIZED_PREFIXES)


def _load_checkpoint_into(
    model: torch.nn.Module,
    checkpoint: _Checkpoint,
    keep: Sequence[str] = (),
) -> None:
    """Copy the checkpoint's tensors into ``model`` (built from the checkpoint's config).

    When the model has another number of labels, the label-sized parts (label features, label
    graph, ``head.fc1``, ``head.fc2``) keep their fresh init, with a warning. Entries named in
    ``keep`` (label inputs the caller passed explicitly) keep the model's values.
    """
    state_dict = dict(checkpoint.state_dict)
    expected = model.state_dict()
    reinitialised: List[str] = []
    if model.num_classes != checkpoint.num_classes:
        reinitialised = sorted({key.rsplit(".", 1)[0] if key.startswith("head.") else key
                                for key in expected if _is_label_sized(key)})
        state_dict = {key: value for key, value in state_dict.items() if not _is_label_sized(key)}
        expected = {key: value for key, value in expected.items() if not _is_label_sized(key)}
        _logger.warning(
            "%s was trained for %d labels but the model has %d: %s start from their init; everything "
            "else is loaded.", checkpoint.source, checkpoint.num_classes, model.num_classes, ", ".join(reinitialised),
        )
    for key in keep:
        state_dict.pop(key, None)
        expected.pop(key, None)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [f"{key}: file {list(state_dict[key].shape)}, model {list(expected[key].shape)}"
                  for key in sorted(set(state_dict) & set(expected))
                  if state_dict[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        def listing(items: List[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        problems = []
        if missing:
            problems.append(f"missing from the file: {listing(missing)}")
        if unexpected:
            problems.append(f"not in the model: {listing(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {listing(mismatched)}")
        raise ValueError(
            f"The weights in {checkpoint.weights_path} ({checkpoint.source}) do not fit the model built from "
            f"{checkpoint.config_path}: {'; '.join(problems)}. Do not override architecture arguments "
            f"(backbone, embed_dim, variant, ...) when loading a checkpoint."
        )
    model.load_state_dict(state_dict, strict=False)
    _logger.info("Loaded %d tensors from %s.", len(state_dict), checkpoint.source)


def _load_backbone_weights(model: torch.nn.Module, cache_dir: Optional[PathLike] = None) -> None:
    """Load the ImageNet weights of the model's timm backbone (paper 4.1); MSRN's own layers keep their init.

    The weights are the ones timm lists for the backbone name (its tag, or timm's default tag), read
    through timm from the Hugging Face Hub as ``model.safetensors`` where timm hosts them there.
    """
    import timm
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    backbone = model.backbone
    name = backbone.backbone_name
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.has_weights:
        raise ValueError(
            f"timm has no pretrained weights for backbone {name!r}; pick a tagged name from "
            f"timm.list_pretrained({name.split('.', 1)[0] + '*'!r}) or use pretrained=False."
        )
    weights = f"{name.split('.', 1)[0]}.{cfg.tag}" if cfg.tag else name
    overlay: Dict[str, Any] = {}
    if cfg.hf_hub_id and not cfg.hf_hub_filename and not cfg.custom_load:
        overlay["hf_hub_filename"] = WEIGHTS_NAME  # safetensors, never the pickled alternative
    where = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else str(cfg.url or cfg.file)
    try:
        donor = timm.create_model(
            weights, pretrained=True, features_only=True, out_indices=tuple(backbone.trunk.feature_info.out_indices),
            in_chans=backbone.in_chans, pretrained_cfg_overlay=overlay, cache_dir=cache_dir,
            **dict(getattr(model, "backbone_kwargs", None) or {}),
        )
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Cannot load the ImageNet weights of backbone {weights!r} from {where}: {error}"
        ) from error
    except (EntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise FileNotFoundError(
            f"Cannot load the ImageNet weights of backbone {weights!r} from {where} ({type(error).__name__}: "
            f"{error}). With HF_HUB_OFFLINE=1 the file must already be in the Hugging Face cache."
        ) from error
    trunk_state = donor.state_dict()
    backbone.trunk.load_state_dict(trunk_state, strict=True)
    initialised = sorted({".".join(key.split(".")[:2]) if key.startswith("backbone.") else key.split(".")[0]
                          for key in model.state_dict()
                          if not key.startswith("backbone.trunk.") and key != "label_graph"})
    _logger.info(
        "Loaded %d backbone tensors (backbone.trunk) of %s from %s; initialised from scratch: %s.",
        len(trunk_state), weights, where, ", ".join(initialised),
    )


def _check_model_source(model_name: str, cache_dir: Optional[PathLike] = None) -> None:
    """Validate the config.json behind an ``hf-hub:`` / ``local-dir:`` name before timm parses it,
    so a bad file or an unreachable id fails with a message that names it."""
    from timm.models import parse_model_name

    source, location = parse_model_name(model_name)
    if source == "local-dir":
        _read_config(pathlib.Path(location) / CONFIG_NAME)
    elif source == "hf-hub":
        _read_config(_hub_file(location, CONFIG_NAME, cache_dir))


# ------------------------------------------------------------------------------------------ publishing
def _markdown_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def model_card(
    model: torch.nn.Module,
    repo_id: str,
    dataset: Optional[str] = None,
    metrics: Optional[Mapping[str, float]] = None,
    description: Optional[str] = None,
) -> str:
    """A Hugging Face model card (``README.md``) for an MSRN: the paper, the architecture, the labels,
    and, when given, the training data and the evaluation metrics (e.g. ``{"mAP": 94.2}``)."""
    model = _unwrap(model)
    config = _config_of(model)
    args = config["model_args"]
    num_params = sum(p.numel() for p in model.parameters())
    front = ["---", "tags:", "- image-classification", "- multi-label-image-classification", "- timm", "- msrn",
             "library_name: timm", "pipeline_tag: image-classification", "license: apache-2.0"]
    if dataset:
        front += ["datasets:", f"- {json.dumps(str(dataset))}"]
    front.append("---")
    name = repo_id.split("/")[-1]
    lines = front + ["", f"# {name}", ""]
    lines.append(description or (
        f"An MSRN (Multi-layered Semantic Representation Network) multi-label image classifier "
        f"with {model.num_classes} labels on a {args['backbone']} backbone"
        + (f", trained on {dataset}." if dataset else ".")
    ))
    lines += [
        "",
        "Paper: *Multi-layered Semantic Representation Network for Multi-label Image Classification*, "
        "Xiwen Qu, Hao Che, Jun Huang, Linchuan Xu, Xiao Zheng.",
        "",
        "## Model details",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | `{config['architecture']}` |",
        f"| Backbone | `{args['backbone']}` |",
        f"| Labels | {model.num_classes} |",
        f"| Label groups | {args['num_groups']} |",
        f"| Branches | {args['num_branches']} |",
        f"| Embedding width | {args['embed_dim']} |",
        f"| Variant | {args['variant']} |",
        f"| Label features | {config['msrn']['label_features']} |",
        f"| Parameters | {num_params / 1e6:.2f} M |",
        f"| Input size | {' x '.join(str(v) for v in config['pretrained_cfg'].get('input_size', [])[1:])} |",
    ]
    if dataset:
        lines.append(f"| Training data | {_markdown_cell(dataset)} |")
    if metrics:
        lines += ["", "## Evaluation", "", "| Metric | Value |", "|---|---|"]
        for metric, value in metrics.items():
            shown = f"{value:.2f}" if isinstance(value, float) and math.isfinite(value) else str(value)
            lines.append(f"| {_markdown_cell(metric)} | {shown} |")
    if model.label_names is not None:
        lines += ["", "## Labels", "", ", ".join(f"`{label}`" for label in model.label_names)]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import msrn, timm, torch",
        "",
        f'model = timm.create_model("hf-hub:{repo_id}").eval()',
        "probabilities = torch.sigmoid(model(images))  # images: [N, 3, H, W], ImageNet mean/std",
        'labels = model.pretrained_cfg["label_names"]',
        "```",
        "",
        "Weights are stored as safetensors (`model.safetensors`) and the architecture in `config.json`.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(
    model: torch.nn.Module,
    repo_id: str,
    *,
    dataset: Optional[str] = None,
    metrics: Optional[Mapping[str, float]] = None,
    description: Optional[str] = None,
    commit_message: str = "Add MSRN model",
    token: Optional[str] = None,
    private: bool = False,
    revision: Optional[str] = None,
    create_pr: bool = False,
    overwrite_model_card: bool = False,
) -> Any:
    """Upload ``model`` to the Hugging Face Hub repository ``repo_id`` (created if missing).

    Uploads ``config.json`` and ``model.safetensors`` (as :func:`save_pretrained` writes them; no
    pickled weights) and a model card (:func:`model_card`) naming the paper, and the data and metrics
    when given. An existing ``README.md`` in the repository is kept unless ``overwrite_model_card``.
    Afterwards ``timm.create_model("hf-hub:<repo_id>")`` loads the model.

    Returns:
        The ``CommitInfo`` of the upload (``.commit_url``, ``.oid``).
    """
    from huggingface_hub import HfApi

    from . import __version__

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a Hub repository id such as 'user/msrn-voc', got {repo_id!r}.")
    model = _unwrap(model)
    _config_of(model)  # fail on a wrong model before touching the network
    api = HfApi(token=token, library_name="msrn", library_version=__version__)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    write_card = overwrite_model_card or not api.file_exists(repo_id, _MODEL_CARD_NAME, revision=revision)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder)
        if write_card:
            card = model_card(model, repo_id, dataset=dataset, metrics=metrics, description=description)
            pathlib.Path(folder, _MODEL_CARD_NAME).write_text(card, encoding="utf-8")
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, revision=revision, create_pr=create_pr,
            commit_message=commit_message,
        )
