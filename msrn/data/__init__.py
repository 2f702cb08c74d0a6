"""Multi-label data sets (PASCAL VOC, MS-COCO, NUS-WIDE, Apparel, CSV, a generated VOC-format set),
transforms, and the one image decoder (:func:`load_rgb_image`) that data sets, ``msrn predict`` and
``msrn evaluate`` share.

Every data set yields ``(image, target [n] float, difficult [n] bool)`` and exposes ``classes``,
``targets`` (``[N, n]`` 0/1, e.g. for :func:`msrn.graph.label_graph_from_targets`), ``difficult`` (the
entries evaluation ignores) and ``unknown`` (the unknown labels of a partial-label CSV, left out of
the loss: :func:`unknown_entries`).
"""

from ._base import MultiLabelDataset, unknown_entries
from .apparel import APPAREL_SPLIT_SEED, ApparelDataset, apparel_authors_split
from .coco import COCODataset
from .csv_dataset import CSVDataset
from .dataset_factory import DATASET_KINDS, create_dataset
from .holdout import read_holdout_file, stratified_holdout
from .image import (
    DEFAULT_MAX_PIXELS,
    BadImageError,
    check_image_header,
    find_image_files,
    load_rgb_image,
    to_rgb_image,
)
from .nuswide import NUSWIDEDataset
from .openimages import OPENIMAGES_LABEL_FILES, OpenImagesDataset
from .seeded import SeededAugmentation, sample_seed
from .synthetic import generate_synthetic_voc
from .transforms import (
    PAPER_CROP_SCALES,
    MultiScaleCrop,
    eval_transform,
    randaugment_transform,
    train_transform,
)
from .voc import VOC_CLASSES, VOCDataset

__all__ = [
    "MultiLabelDataset",
    "unknown_entries",
    "create_dataset",
    "DATASET_KINDS",
    "VOCDataset",
    "COCODataset",
    "CSVDataset",
    "VOC_CLASSES",
    "generate_synthetic_voc",
    "NUSWIDEDataset",
    "OpenImagesDataset",
    "OPENIMAGES_LABEL_FILES",
    "ApparelDataset",
    "apparel_authors_split",
    "APPAREL_SPLIT_SEED",
    "MultiScaleCrop",
    "train_transform",
    "eval_transform",
    "randaugment_transform",
    "PAPER_CROP_SCALES",
    "load_rgb_image",
    "to_rgb_image",
    "BadImageError",
    "DEFAULT_MAX_PIXELS",
    "find_image_files",
    "check_image_header",
    "SeededAugmentation",
    "sample_seed",
    "stratified_holdout",
    "read_holdout_file",
]
