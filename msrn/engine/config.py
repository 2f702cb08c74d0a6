"""The options of a training run: :class:`TrainConfig`, its two profiles and :func:`resume_config`.

Each field of :class:`TrainConfig` is also a command-line option of ``msrn train`` (its help text and
``--help`` group are the field's metadata). :func:`paper_config` is the paper's recipe,
:func:`cpu_config` a CPU-sized run on the generated VOC-format set; :func:`resume_config` is the
configuration that continues a saved run.
"""

import dataclasses
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

from .._cache import default_cache_dir
from ..data import DATASET_KINDS
from ..data.transforms import PAPER_CROP_SCALES
from ..loss import LOSSES
from ..models.msrn import HEADS
from .loop import AMP_MODES
from .options import check_option_ranges
from .resume import (
    check_resume_changes,
    config_fields,
    damaged_advice,
    resume_folder,
    saved_train_config,
    settings_file,
)

__all__ = ["TrainConfig", "paper_config", "cpu_config", "resume_config", "saved_config", "default_cache_dir"]


def default_workers() -> int:
    """The default number of data-loading processes: 4, or fewer when this process may use fewer CPU
    cores (``os.sched_getaffinity``; PyTorch warns about more workers than cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _option(default: Any = None, help: str = "", group: str = "", **argparse_kwargs: Any) -> Any:
    """A :class:`TrainConfig` field and its command-line option: ``help``, the ``--help`` ``group``
    and other ``add_argument`` keywords (``choices``). A bool field gets ``--name`` when it has
    ``help`` and ``--no-name`` when it has ``negation`` (that flag's help). A function ``default`` is
    called for each new config."""
    metadata = dict(help=help, group=group, **argparse_kwargs)
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _data(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "data", **kwargs)


def _model(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "model", **kwargs)


def _recipe(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "recipe", **kwargs)


def _execution(default: Any = None, help: str = "", **kwargs: Any) -> Any:
    return _option(default, help, "execution", **kwargs)


@dataclass
class TrainConfig:
    """Every setting of a training run (defaults: the paper's recipe, docs/design.md section 6).

    Each field is also a command-line option of ``msrn train`` and ``examples/train_voc.py``
    (``--field-name``); its help text and ``--help`` group are the field's metadata.
    """

    data: str | None = _data(
        help="VOCdevkit folder (COCO root, NUS-WIDE folder, Apparel folder, Open Images folder or "
        "train CSV with --dataset); omit to use a generated set (20 labels in VOC format, or with "
        "--dataset coco 80 labels in COCO format)"
    )
    dataset: str = _data("voc", "format of --data (default: voc)", choices=DATASET_KINDS)
    train_split: str | None = _data(help="voc, apparel: trainval (default); coco, nuswide, openimages: train")
    test_split: str | None = _data(
        help="voc, apparel, nuswide, openimages: test (default); coco: val; openimages also "
        "validation; csv: path of the test CSV"
    )
    cache_dir: str | None = _data(
        help="where the generated set is written (default: $MSRN_CACHE or ~/.cache/msrn)"
    )
    synthetic_trainval: int = _data(2000, "training images of the generated set")
    synthetic_test: int = _data(1000, "test images of the generated set")
    synthetic_seed: int = _data(0, "seed of the generated set")
    skip_bad_images: bool = _data(
        False, "leave out unreadable images (and report how many) instead of stopping"
    )
    skip_missing_images: bool = _data(
        False,
        "nuswide, apparel, openimages: leave out listed images that are not on "
        "disk (and report how many) instead of stopping",
    )
    unknown_as_negative: bool = _data(
        False,
        "openimages: the labels an image's file does not list count as absent (0), as most Open Images "
        "baselines train, in the loss, the metrics and the label graph; by default they are unknown "
        "(-1) and left out of all three",
    )
    workers: int = _data(
        default_workers,
        "data-loading processes per training process (default: 4, at most the CPU cores available)",
    )
    val_fraction: float | None = _data(
        help="hold out this fraction of the training images for validation (stratified over the labels): "
        "best/ is chosen on it and per-class thresholds are fitted on it (default: none; best/ is then "
        "chosen on the test split, the paper's protocol)"
    )
    val_split: str | None = _data(
        help="hold out the training images listed in this text file (one path, file name or image id a "
        "line) for validation, instead of --val-fraction",
        metavar="FILE",
    )
    val_seed: int = _data(0, "seed of the --val-fraction hold-out (independent of --seed)")
    model: str = _model(
        "msrn_resnet101", "msrn_resnet101 (paper), msrn_resnet50, msrn_resnet18 or msrn_custom"
    )
    backbone: str | None = _model(help="timm CNN for msrn_custom, e.g. convnext_tiny")
    backbone_kwargs: dict[str, Any] = _model(
        {}, "JSON arguments of the timm backbone, e.g. '{\"channels\": [16, 32, 64, 128]}'"
    )
    pretrained: bool = _model(
        True, "start the backbone from ImageNet weights (paper default)", negation="random initialisation"
    )
    backbone_weights: str | None = _model(
        help="local ImageNet weight file of the backbone instead of the "
        "Hub (.safetensors; .pth read with weights_only=True)"
    )
    # The authors' code (which produced the paper's tables): the paper text's compactness loss
    # (1e-3 x squared distances) starts ~1e4 times larger than the BCE and diverges (docs/training.md).
    variant: str = _model(
        "official",
        "official (the authors' code, default) or paper (the paper's text)",
        choices=("paper", "official"),
    )
    compactness_weight: float | None = _model(
        help="lambda of the compactness loss (default by variant: official 1e-4, paper 1e-3; the paper "
        "variant trains at lr 0.01 with 1e-6, docs/variants.md)"
    )
    embed_dim: int = _model(512, "width d of the embeddings and branches (paper: 512)")
    hidden_dim: int = _model(
        2048, "width of fc1 (paper: 2048); --head label_wise: of each label's representation"
    )
    gat_hidden_dim: int = _model(300, "output width of the first GAT (paper: 300)")
    label_feature_dim: int = _model(300, "width of learnable label features (without --glove)")
    num_groups: int = _model(4, "label groups m (paper: 4)")
    head: str = _model(
        "paper",
        "paper (default: fc1 over one attention row per label) or label_wise (a bounded number of "
        "attention rows and a small, constant cost per label, for large label sets; docs/variants.md)",
        choices=HEADS,
    )
    num_query_groups: int = _model(32, "--head label_wise: learned query groups K, rows of the attention")
    label_features: str = _model(
        "auto",
        "auto (default): --glove FILE when given, else the built-in GloVe vectors when a built-in "
        "label set (voc2007, coco2014, nuswide, apparel) has every label, else learnable; learnable: "
        "learnable features",
        choices=("auto", "learnable"),
    )
    glove: str | None = _model(help="label features: a GloVe text file or a .npz with 'names' and 'glove'")
    graph_threshold: float = _model(0.4, "co-occurrence threshold of the label graph (0.4)")
    image_size: int = _recipe(448, "training and test image size in pixels (paper: 448)")
    crop_scales: tuple[float, ...] = _recipe(
        PAPER_CROP_SCALES, "multi-scale crop scales (paper: 1 .9 .8 .7 .6)"
    )
    randaugment: str | None = _recipe(
        help="timm RandAugment after the crop and flip, e.g. rand-m9-mstd0.5-inc1 (default: none, "
        "as in the paper)",
        metavar="SPEC",
    )
    cutout: float = _recipe(
        0.0,
        "probability of erasing one random rectangle of each training image (default 0: off)",
        metavar="P",
    )
    batch_size: int = _recipe(8, "per process")
    accum_steps: int = _recipe(
        1,
        "accumulate the gradients of K batches per optimizer step (effective batch: K x --batch-size "
        "per process)",
        metavar="K",
    )
    eval_batch_size: int | None = _recipe(help="per process (default: --batch-size)")
    optimizer: str = _recipe("sgd", "sgd (paper) or adamw", choices=("sgd", "adamw"))
    lr: float = _recipe(0.01, "learning rate of the MSRN layers (paper: 0.01)")
    backbone_lr_scale: float = _recipe(0.1, "backbone lr = lr x this (paper: 0.1)")
    momentum: float = _recipe(0.9, "SGD momentum")
    weight_decay: float = _recipe(1e-4, "weight decay (paper: 1e-4)")
    loss: str = _recipe(
        "bce",
        "classification loss: bce (paper), asl (asymmetric loss) or focal; the compactness loss is "
        "added to each (docs/training.md)",
        choices=LOSSES,
    )
    asl_gamma_neg: float = _recipe(4.0, "--loss asl: focusing exponent of negatives (4)")
    asl_gamma_pos: float = _recipe(1.0, "--loss asl: focusing exponent of positives (1)")
    asl_clip: float = _recipe(0.05, "--loss asl: probability margin of negatives, in [0, 1) (0.05; 0: off)")
    focal_gamma: float = _recipe(2.0, "--loss focal: focusing exponent (2)")
    focal_alpha: float | None = _recipe(
        help="--loss focal: weight of positives in [0, 1], negatives get 1 - alpha (default: none)"
    )
    epochs: int = _recipe(90, "training epochs (paper: 90)")
    schedule: str = _recipe("step", "learning-rate schedule", choices=("step", "cosine"))
    lr_steps: tuple[int, ...] = _recipe(
        (30, 60), "epochs where the step schedule multiplies lr by --lr-gamma", nargs="*"
    )
    lr_gamma: float = _recipe(0.1, "factor of each step of the step schedule")
    warmup_epochs: int = _recipe(0, "epochs of linear learning-rate warm-up")
    ema: float | None = _recipe(
        help="keep an exponential moving average of the weights with this decay (e.g. 0.9997), updated "
        "after each optimizer step; evaluation, best/ and last/ use it (default: off)",
        metavar="DECAY",
    )
    ema_warmup: bool = _recipe(
        True, negation="--ema without warm-up: the constant decay from the second update"
    )
    device: str | None = _execution(
        help="cpu or cuda (default: cuda when available)", choices=("cpu", "cuda")
    )
    amp: str = _execution("none", "mixed precision (bf16 on CPU)", choices=AMP_MODES)
    channels_last: bool = _execution(False, "channels-last memory format")
    compile: bool = _execution(False, "torch.compile the model")
    threads: int | None = _execution(help="torch CPU threads per process (CPU profile: 1)")
    keep_freed_memory: bool = _execution(
        True,
        "keep freed memory in the process, so that each CPU step reuses it without page faults (the "
        "default; msrn.engine.keep_freed_memory, docs/performance.md)",
        negation="return freed memory to the system (malloc's defaults: a smaller resident size between "
        "steps, page faults in every step)",
    )
    seed: int = _execution(0, "seed of the weights' init, the data order and the augmentation")
    output_dir: str = _execution("output/train_voc", "checkpoints and log.jsonl go here")
    resume: str | None = _execution(
        help="continue the run in this output folder, with its saved settings "
        "(see docs/training.md for what may change)",
        metavar="DIR",
    )
    overwrite: bool = _execution(
        False, "replace the run in --output-dir (its checkpoints and log) instead of refusing to touch it"
    )
    stop_after_epoch: int | None = _execution(
        help="end after this epoch as if interrupted (--resume continues)"
    )
    max_steps_per_epoch: int | None = _execution(help="cap the steps of each epoch (smoke tests)")
    progress: bool = _execution(True, negation="no progress bars")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def paper_config(**overrides: Any) -> TrainConfig:
    """The paper's recipe: ResNet-101 from ImageNet, 448 px, batch 8, SGD, 90 epochs, step decay."""
    return TrainConfig(**overrides)


# A ResNet-18 at a quarter of its width: about 2 M parameters, ~100 images/s of training at 96 px on
# two CPU cores, enough for the generated set, where it reaches a test mAP above 90 from scratch.
_CPU_BACKBONE_KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}


def cpu_config(**overrides: Any) -> TrainConfig:
    """A CPU-sized run for the generated VOC-format set (no pretrained weights, small images)."""
    settings = dict(
        model="msrn_resnet18",
        backbone_kwargs=dict(_CPU_BACKBONE_KWARGS),
        pretrained=False,
        embed_dim=64,
        hidden_dim=256,
        gat_hidden_dim=64,
        label_feature_dim=64,
        image_size=64,
        crop_scales=(1.0, 0.9, 0.8),
        batch_size=16,
        workers=1,
        optimizer="adamw",
        lr=2e-3,
        backbone_lr_scale=1.0,
        weight_decay=1e-4,
        epochs=14,
        schedule="cosine",
        lr_steps=(),
        warmup_epochs=1,
        device="cpu",
        output_dir="output/train_voc_cpu",
        # One compute thread plus one data-loading process fills two cores; with more threads
        # OpenMP spin-waits badly whenever the cores are shared with other work.
        threads=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def resume_config(resume: "os.PathLike[str] | str", **changes: Any) -> TrainConfig:
    """The configuration that continues the run in folder ``resume``: its saved settings, with
    ``changes`` applied where a run may change (:data:`msrn.engine.resume.CHANGEABLE_ON_RESUME`).

    Raises:
        FileNotFoundError: ``resume`` holds no run.
        ValueError: ``changes`` alter a setting that cannot change mid-run (the message says which
            and why), or name another output folder.
    """
    folder = resume_folder(str(resume))
    if not (folder / "train_state.pt").is_file():
        raise FileNotFoundError(
            f"--resume {resume}: no train_state.pt there. --resume takes the output folder of a run that "
            f"finished at least one epoch."
        )
    output_dir = changes.pop("output_dir", None)
    if output_dir is not None and pathlib.Path(output_dir).resolve() != folder.resolve():
        raise ValueError(f"--resume {resume} continues the run in {folder}; drop --output-dir {output_dir}.")
    if changes.pop("overwrite", False):
        raise ValueError(
            "--overwrite and --resume contradict each other: --resume continues the run, "
            "--overwrite starts a new one in its place."
        )
    saved = saved_train_config(folder)
    config = saved_config(folder, saved)
    check_resume_changes(TrainConfig, saved, changes, folder)
    return dataclasses.replace(config, **changes, output_dir=str(folder), resume=str(folder))


def saved_config(folder: "os.PathLike[str] | str", saved: dict[str, Any] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` a run folder was trained with (its ``train_config.json``, else the copy
    in ``train_state.pt``; ``saved``: that file's contents when already read).

    Raises:
        ValueError: naming the file, when it is damaged: not JSON, not an object, a value of the wrong
            type or out of its range.
    """
    folder = pathlib.Path(folder)
    source = settings_file(folder)
    config = TrainConfig(**config_fields(TrainConfig, saved or saved_train_config(folder), source))
    try:
        check_option_ranges(config)
    except ValueError as error:
        raise ValueError(f"{source}: {error} {damaged_advice(source).capitalize()}.") from None
    return config
