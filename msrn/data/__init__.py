"""Multi-label data sets (PASCAL VOC, MS-COCO, NUS-WIDE, Apparel, Open Images, CSV, a generated
VOC-format set), transforms, and the one image decoder (:func:`load_rgb_image`) that data sets,
``msrn predict`` and ``msrn evaluate`` share.

Every data set yields ``(image, target)`` pairs: ``target`` is a float ``[n]`` tensor of 1 (present),
0 (absent) and -1 (unknown; :mod:`msrn.targets`), which :class:`msrn.MSRNLoss`, :mod:`msrn.metrics`
and the label graph leave out by themselves. A data set also exposes ``classes``, ``targets`` (the
``[N, n]`` matrix, e.g. for :func:`msrn.graph.label_graph_from_targets`) and ``unknown`` (its -1
entries); a VOC set also ``difficult`` and ``difficult_as`` (:class:`VOCDataset`). Open Images
(:class:`OpenImagesDataset`, millions of images and thousands of labels) keeps its labels sparse and
gives them as per-image rows (``label_lists()``); its dense ``targets`` are for small sets only.
"""

from ..targets import known_mask, positive_mask
from ._base import DIFFICULT_AS, MultiLabelDataset
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
from .synthetic_coco import generate_synthetic_coco
from .transforms import (
    PAPER_CROP_SCALES,
    MultiScaleCrop,
    eval_transform,
    randaugment_transform,
    train_transform,
)
from .voc import VOC_CLASSES, VOCDataset, voc_difficult_as

__all__ = [
    "MultiLabelDataset",
    "known_mask",
    "positive_mask",
    "DIFFICULT_AS",
    "create_dataset",
    "DATASET_KINDS",
    "VOCDataset",
    "COCODataset",
    "CSVDataset",
    "VOC_CLASSES",
    "voc_difficult_as",
    "generate_synthetic_voc",
    "generate_synthetic_coco",
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
