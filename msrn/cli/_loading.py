"""How the ``--model SPEC [--checkpoint FILE]`` options of the commands become a trained MSRN.

``SPEC`` is one of
- ``local-dir:DIR``: a folder written by ``msrn.save_pretrained`` (``config.json`` +
  ``model.safetensors``, timm's layout);
- ``hf-hub:USER/REPO``: the same files on the Hugging Face Hub (or in the local HF cache);
- ``NAME``: a registered architecture (``msrn_resnet101``...) whose weights come from a safetensors
  ``--checkpoint``; the sizes (labels, groups, widths, branches, variant) are read off the tensors.

Only safetensors files are read: no weight file is ever unpickled.
"""
import json
import logging
import pathlib
from typing import Any, Dict, List, Optional

import torch

from ..hub import CONFIG_NAME, WEIGHTS_NAME
from . import CommandError

_logger = logging.getLogger(__name__)


def _read_safetensors(path: pathlib.Path) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CommandError(f"checkpoint {path} does not exist.")
    if path.suffix != ".safetensors":
        raise CommandError(
            f"checkpoint {path} is not a .safetensors file; only safetensors weights are read "
            f"(save them with safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))."
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CommandError(f"cannot read checkpoint {path}: {error}") from error


def _safetensors_label_names(path: pathlib.Path) -> Optional[List[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        names = (handle.metadata() or {}).get("label_names")
    return json.loads(names) if names else None


def infer_model_args(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The constructor arguments of :class:`msrn.MSRN` that fix the tensor shapes of ``state_dict``."""
    try:
        fc2 = state_dict["head.fc2.weight"]
        fc1 = state_dict["head.fc1.weight"]
        features = state_dict["label_features"]
    except KeyError as error:
        raise CommandError(
            f"the checkpoint is not an MSRN state dict: it has no {error.args[0]!r} tensor."
        ) from None
    num_branches = sum(
        1 for key in state_dict if key.startswith("backbone.projections.") and key.endswith(".weight")
    )
    embed_dim = state_dict["backbone.projections.0.weight"].shape[0]
    args: Dict[str, Any] = dict(
        num_classes=fc2.shape[0], hidden_dim=fc2.shape[1], label_feature_dim=features.shape[1],
        embed_dim=embed_dim, num_branches=num_branches,
        variant="official" if "lge.input_proj.weight" in state_dict else "paper",
    )
    if "label_projection.weight" in state_dict:
        args["embeddings"] = "none"
        return args
    if "lge.gats.0.weight" in state_dict:
        args["gat_hidden_dim"] = state_dict["lge.gats.0.weight"].shape[0]
    rows = fc1.shape[1] // (num_branches * embed_dim)
    if "lge.diffpool.assign.weight" in state_dict:
        args["num_groups"] = state_dict["lge.diffpool.assign.weight"].shape[0]
        args["embeddings"] = "both" if rows == args["num_classes"] + args["num_groups"] else "group"
    else:
        args["embeddings"] = "label"
    return args


def _load_checkpoint(
    model: torch.nn.Module, path: pathlib.Path, state_dict: Optional[Dict[str, torch.Tensor]] = None
) -> None:
    if state_dict is None:
        state_dict = _read_safetensors(path)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()
        raise CommandError(f"checkpoint {path} does not fit the model: {' '.join(first_line[:3])}") from None


def _from_saved(spec: str) -> torch.nn.Module:
    """A folder or Hub repo written by ``msrn.save_pretrained``, through timm's own resolution."""
    import timm

    try:
        return timm.create_model(spec)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise CommandError(f"cannot load --model {spec}: {error}") from None


def load_model(spec: str, checkpoint: Optional[str] = None) -> torch.nn.Module:
    """Build the model named by ``spec`` (see the module docstring), load its weights, eval mode."""
    import timm

    from ..models import MSRN  # importing it registers the msrn_* architectures

    if spec.startswith("local-dir:"):
        folder = pathlib.Path(spec[len("local-dir:"):]).expanduser()
        if not folder.is_dir():
            raise CommandError(f"--model {spec}: folder {folder} does not exist.")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise CommandError(
                    f"--model {spec}: {folder} has no {name} (write it with msrn.save_pretrained)."
                )
        model = _from_saved(f"local-dir:{folder}")
    elif spec.startswith("hf-hub:"):
        model = _from_saved(spec)
    else:
        name = spec.split(".", 1)[0]
        if not name.startswith("msrn_") or not timm.is_model(name):
            raise CommandError(
                f"--model {spec!r} is not an MSRN architecture ({', '.join(timm.list_models('msrn*'))}), "
                f"nor local-dir:DIR or hf-hub:ID."
            )
        if checkpoint is None:
            raise CommandError(
                f"--model {spec} names an architecture without trained weights: add "
                f"--checkpoint FILE.safetensors, or use local-dir:DIR / hf-hub:ID for a saved model."
            )
        if name == "msrn_custom":
            raise CommandError(
                "msrn_custom needs its backbone: save the model with msrn.save_pretrained and use "
                "local-dir:DIR."
            )
        path = pathlib.Path(checkpoint).expanduser()
        state_dict = _read_safetensors(path)
        kwargs = infer_model_args(state_dict)
        names = _safetensors_label_names(path)
        if names is not None:
            kwargs["label_names"] = names
        _logger.info("%s from %s with %s", name, path, kwargs)
        model = timm.create_model(name, **kwargs)
        _load_checkpoint(model, path, state_dict)
        checkpoint = None
    if not isinstance(model, MSRN):
        raise CommandError(f"--model {spec} is a {type(model).__name__}, not an MSRN model.")
    if checkpoint is not None:
        _load_checkpoint(model, pathlib.Path(checkpoint).expanduser())
    return model.eval()


def label_names(model: torch.nn.Module) -> List[str]:
    """The model's label names: its own, its pretrained_cfg's, or ``label_<i>``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = getattr(model, "label_names", None) or cfg.get("label_names")
    if names and len(names) == model.num_classes:
        return list(names)
    return [f"label_{i}" for i in range(model.num_classes)]
