"""The ranges of the numeric settings of a training run, checked before any work.

Each error names the command-line option (``--val-seed``), which is also how the field of
:class:`~msrn.engine.config.TrainConfig` is written in ``train_config.json`` with ``_`` for ``-``.
"""

from collections.abc import Callable
from typing import Any

__all__ = ["check_option_ranges", "option_name"]

_SEED_LIMIT = 2**32  # numpy's seeds are 32-bit

# (field, test of one value, what the value must be). A tuple field's values are tested one by one;
# an unset (None) optional field is not tested.
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("epochs", lambda v: v >= 1, ">= 1"),
    ("batch_size", lambda v: v >= 1, ">= 1"),
    ("eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("accum_steps", lambda v: v >= 1, ">= 1 (batches whose gradients make one optimizer step)"),
    ("lr", lambda v: v > 0, "> 0"),
    ("backbone_lr_scale", lambda v: v >= 0, ">= 0 (0 freezes the backbone)"),
    ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("lr_gamma", lambda v: v > 0, "> 0"),
    ("lr_steps", lambda v: v >= 1, "epochs >= 1"),
    ("warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("compactness_weight", lambda v: v >= 0, ">= 0"),
    ("crop_scales", lambda v: 0 < v <= 1, "fractions in (0, 1]"),
    ("cutout", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("asl_gamma_neg", lambda v: v >= 0, ">= 0"),
    ("asl_gamma_pos", lambda v: v >= 0, ">= 0"),
    ("asl_clip", lambda v: 0 <= v < 1, "in [0, 1) (0 turns the clipping off)"),
    ("focal_gamma", lambda v: v >= 0, ">= 0"),
    ("focal_alpha", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("image_size", lambda v: v >= 1, "a positive number of pixels"),
    ("embed_dim", lambda v: v >= 1, ">= 1"),
    ("hidden_dim", lambda v: v >= 1, ">= 1"),
    ("gat_hidden_dim", lambda v: v >= 1, ">= 1"),
    ("label_feature_dim", lambda v: v >= 1, ">= 1"),
    ("num_groups", lambda v: v >= 1, ">= 1"),
    ("graph_threshold", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("synthetic_trainval", lambda v: v >= 1, ">= 1"),
    ("synthetic_test", lambda v: v >= 1, ">= 1"),
    ("synthetic_seed", lambda v: 0 <= v < _SEED_LIMIT, "in [0, 2**32)"),
    ("seed", lambda v: 0 <= v < _SEED_LIMIT, "in [0, 2**32)"),
    ("val_seed", lambda v: 0 <= v < _SEED_LIMIT, "in [0, 2**32)"),
    ("val_fraction", lambda v: 0 < v < 1, "between 0 and 1 (exclusive)"),
    ("ema", lambda v: 0 < v < 1, "a decay between 0 and 1 (exclusive, e.g. 0.9997)"),
    ("workers", lambda v: v >= 0, ">= 0 (0 loads data in the training process)"),
    ("threads", lambda v: v >= 1, ">= 1 (torch CPU threads per process)"),
    ("max_steps_per_epoch", lambda v: v >= 1, ">= 1"),
    ("stop_after_epoch", lambda v: v >= 1, ">= 1"),
)


def option_name(field: str) -> str:
    """The command-line option of a :class:`~msrn.engine.config.TrainConfig` field: ``--val-seed``."""
    return "--" + field.replace("_", "-")


def check_option_ranges(config: Any) -> None:
    """Raise a one-line ``ValueError`` naming the option of the first setting of ``config`` out of
    its range (``--val-seed must be in [0, 2**32), got -5.``)."""
    for name, fits, wanted in _RANGES:
        value = getattr(config, name)
        if value is None:
            continue
        values = value if isinstance(value, (tuple, list)) else (value,)
        numbers = all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in values)
        if not numbers or not all(fits(item) for item in values):
            shown = " ".join(map(str, values)) if isinstance(value, (tuple, list)) else value
            raise ValueError(f"{option_name(name)} must be {wanted}, got {shown}.")
