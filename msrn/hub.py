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

import json
import logging
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

import timm
import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file
from timm.models import filter_pretrained_cfg, get_pretrained_cfg

from ._hub_network import check_hub_reachable, hub_offline, is_network_error, unreachable_error
from ._io import atomic_write
from .models import MSRN
from .models._weights import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from .version import __version__

__all__ = ["save_pretrained", "push_to_hub", "model_card", "CONFIG_NAME", "WEIGHTS_NAME"]

_logger = logging.getLogger(__name__)

_MODEL_CARD_NAME = "README.md"
_PUSH_OFFLINE_OPTIONS = (
    "pushing needs the network; save the model with msrn.save_pretrained(model, DIR) and push it when "
    "online (push_to_hub again, or huggingface_hub's upload_folder with DIR)."
)
# pretrained_cfg entries that describe where weights come from, not the saved model itself.
_SOURCE_CFG_KEYS = (
    "url",
    "file",
    "state_dict",
    "hf_hub_id",
    "hf_hub_filename",
    "source",
    "tag",
    "notes",
    "description",
    "label_names",
    "label_descriptions",
    "label_offset",
    "architecture",
)

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------------------------- saving
def _architecture_of(model: MSRN) -> str:
    name = str(getattr(model, "pretrained_cfg", {}).get("architecture") or "")
    return name if name.startswith("msrn_") and timm.is_model(name) else "msrn_custom"


def _model_args_of(model: MSRN) -> dict[str, Any]:
    """The constructor arguments the model recorded, checked to be writable as JSON."""
    args = dict(model.model_args)
    try:
        json.dumps(args)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The model's constructor arguments cannot be written to {CONFIG_NAME} ({error}); "
            f"backbone_kwargs must hold only JSON values (numbers, strings, lists, dicts)."
        ) from error
    return args


def _pretrained_cfg_of(model: torch.nn.Module, architecture: str) -> dict[str, Any]:
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
    cfg["classifier"] = (
        "head.classifier" if getattr(model, "head_type", "paper") == "label_wise" else "head.fc2"
    )
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The MSRN inside a ``torch.compile`` (``_orig_mod``) or DataParallel / DDP (``module``) wrapper."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _config_of(model: torch.nn.Module) -> dict[str, Any]:
    if not isinstance(model, MSRN):
        raise TypeError(
            f"save_pretrained expects an msrn.MSRN model (e.g. from timm.create_model('msrn_resnet101')), "
            f"got {type(model).__name__}."
        )
    if model.num_classes == 0:
        raise ValueError(
            "This model has no classifier (num_classes=0): an MSRN checkpoint holds one output per label. "
            "Save it before reset_classifier(0), or give it a classifier with reset_classifier(n)."
        )
    architecture = _architecture_of(model)
    config: dict[str, Any] = {
        "architecture": architecture,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
    }
    if model.label_names is not None:
        config["label_names"] = [str(name) for name in model.label_names]
    config["model_args"] = _model_args_of(model)
    config["msrn"] = {
        "format_version": FORMAT_VERSION,
        "label_features": "learnable" if isinstance(model.label_features, torch.nn.Parameter) else "fixed",
    }
    config["pretrained_cfg"] = _pretrained_cfg_of(model, architecture)
    return config


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
    model = _unwrap(model)
    config = _config_of(model)
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file.")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(directory / WEIGHTS_NAME, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME, lambda path: pathlib.Path(path).write_text(text, encoding="utf-8"))
    _logger.info("Saved %s (%d tensors) to %s", config["architecture"], len(tensors), directory)
    return directory


# ------------------------------------------------------------------------------------------ publishing
def _markdown_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def model_card(
    model: torch.nn.Module,
    repo_id: str,
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
) -> str:
    """A Hugging Face model card (``README.md``) for an MSRN: the paper, the architecture, the labels,
    and, when given, the training data and the evaluation metrics (e.g. ``{"mAP": 94.2}``)."""
    model = _unwrap(model)
    config = _config_of(model)
    args = config["model_args"]
    num_params = sum(p.numel() for p in model.parameters())
    front = [
        "---",
        "tags:",
        "- image-classification",
        "- multi-label-image-classification",
        "- timm",
        "- msrn",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "license: apache-2.0",
    ]
    if dataset:
        front += ["datasets:", f"- {json.dumps(str(dataset))}"]
    front.append("---")
    name = repo_id.split("/")[-1]
    lines = front + ["", f"# {name}", ""]
    lines.append(
        description
        or (
            f"An MSRN (Multi-layered Semantic Representation Network) multi-label image classifier "
            f"with {model.num_classes} labels on a {args['backbone']} backbone"
            + (f", trained on {dataset}." if dataset else ".")
        )
    )
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
    dataset: str | None = None,
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
    commit_message: str = "Add MSRN model",
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
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

    Raises:
        ConnectionError: the Hub cannot be reached (within seconds, without retries), or offline mode is
            on (``HF_HUB_OFFLINE=1``); the message names the repository.
    """
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a Hub repository id such as 'user/msrn-voc', got {repo_id!r}.")
    model = _unwrap(model)
    _config_of(model)  # fail on a wrong model before touching the network
    purpose = f"to push to Hub repository {repo_id!r}"
    if hub_offline():
        raise ConnectionError(
            f"Cannot push to Hub repository {repo_id!r}: Hugging Face Hub offline mode is on "
            f"(HF_HUB_OFFLINE=1); {_PUSH_OFFLINE_OPTIONS}"
        )
    check_hub_reachable(repo_id, _MODEL_CARD_NAME, purpose, _PUSH_OFFLINE_OPTIONS, revision, cached=False)
    try:
        api = HfApi(token=token, library_name="msrn", library_version=__version__)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        write_card = overwrite_model_card or not api.file_exists(repo_id, _MODEL_CARD_NAME, revision=revision)
        with tempfile.TemporaryDirectory() as folder:
            save_pretrained(model, folder)
            if write_card:
                card = model_card(model, repo_id, dataset=dataset, metrics=metrics, description=description)
                pathlib.Path(folder, _MODEL_CARD_NAME).write_text(card, encoding="utf-8")
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                revision=revision,
                create_pr=create_pr,
                commit_message=commit_message,
            )
    except Exception as error:
        if is_network_error(error):  # the network went away after the first answer
            raise unreachable_error(purpose, error, _PUSH_OFFLINE_OPTIONS, cached=False) from error
        raise
