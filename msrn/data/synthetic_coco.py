"""A generated MS-COCO-format data set with COCO's 80 labels: deterministic from a seed, small enough
for a CPU, for trying what changes with 80 labels instead of the generated VOC set's 20.

Built like :mod:`msrn.data.synthetic`: each of the 80 COCO classes is drawn as its own (shape, colour)
pair (8 shapes x 10 colours) on a noisy background; every image comes from one of eight scenes
(street, travel, animals, sports, dining, kitchen, living room, bedroom and bathroom) that favour their
own classes, and some classes bring a companion (a dining table comes with chairs, skis with a
person, a keyboard with a mouse, ...). A few objects are small and faint (their annotations carry
``"difficult": 1``, which COCO readers ignore: they count as present, as crowd objects do).

The output is a real COCO tree, read back with :class:`msrn.data.COCODataset` like the real data set
(``msrn train --dataset coco`` without ``--data`` trains on it)::

    <root>/coco/annotations/instances_{train,val}2014.json
    <root>/coco/{train,val}2014/COCO_{train,val}2014_<id>.jpg
"""

import json
import logging
import os
import pathlib

import numpy as np

from ._generated import SHAPES, SceneModel, write_once

__all__ = ["generate_synthetic_coco", "SYNTHETIC_COCO_CLASSES"]

_logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1

# COCO's categories in COCO's own id order (the reader orders them by name).
SYNTHETIC_COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_COLOURS = (
    (220, 30, 30),  # red
    (30, 170, 50),  # green
    (40, 80, 230),  # blue
    (240, 220, 30),  # yellow
    (210, 40, 210),  # magenta
    (30, 205, 215),  # cyan
    (250, 130, 20),  # orange
    (250, 250, 250),  # white
    (10, 10, 10),  # black
    (110, 40, 150),  # purple
)
# Class c is drawn as shape c % 8 in colour c // 8: all 80 (shape, colour) pairs are distinct.
_APPEARANCE = {name: (SHAPES[i % 8], _COLOURS[i // 8]) for i, name in enumerate(SYNTHETIC_COCO_CLASSES)}

# (scene probability, {class: probability of appearing in that scene})
_SCENES: tuple[tuple[float, dict[str, float]], ...] = (
    (0.16, {"person": 0.6, "car": 0.5, "bus": 0.2, "truck": 0.25, "bicycle": 0.2, "motorcycle": 0.2,
            "traffic light": 0.3, "fire hydrant": 0.12, "stop sign": 0.12, "parking meter": 0.1,
            "bench": 0.15, "backpack": 0.1, "handbag": 0.15, "umbrella": 0.12}),
    (0.1, {"airplane": 0.4, "train": 0.4, "boat": 0.4, "person": 0.4, "suitcase": 0.25,
           "backpack": 0.15, "bird": 0.1}),
    (0.12, {"horse": 0.2, "sheep": 0.25, "cow": 0.25, "elephant": 0.2, "bear": 0.12, "zebra": 0.2,
            "giraffe": 0.2, "bird": 0.2, "dog": 0.15, "person": 0.25}),
    (0.14, {"person": 0.8, "frisbee": 0.12, "skis": 0.12, "snowboard": 0.1, "sports ball": 0.2,
            "kite": 0.15, "baseball bat": 0.12, "baseball glove": 0.1, "skateboard": 0.12,
            "surfboard": 0.12, "tennis racket": 0.12, "tie": 0.06}),
    (0.13, {"dining table": 0.45, "chair": 0.4, "cup": 0.35, "bowl": 0.3, "bottle": 0.3,
            "wine glass": 0.15, "fork": 0.2, "knife": 0.2, "spoon": 0.15, "pizza": 0.12,
            "sandwich": 0.12, "cake": 0.12, "donut": 0.1, "hot dog": 0.08, "person": 0.3}),
    (0.1, {"oven": 0.25, "microwave": 0.2, "refrigerator": 0.25, "sink": 0.3, "toaster": 0.08,
           "banana": 0.15, "apple": 0.12, "orange": 0.12, "broccoli": 0.12, "carrot": 0.12,
           "bowl": 0.2, "bottle": 0.2, "knife": 0.1}),
    (0.15, {"couch": 0.35, "tv": 0.35, "remote": 0.2, "potted plant": 0.25, "book": 0.3, "clock": 0.2,
            "vase": 0.15, "laptop": 0.3, "keyboard": 0.2, "mouse": 0.15, "cell phone": 0.2,
            "chair": 0.3, "person": 0.35, "cat": 0.15, "dog": 0.12}),
    (0.1, {"bed": 0.45, "toilet": 0.3, "sink": 0.25, "teddy bear": 0.15, "hair drier": 0.08,
           "toothbrush": 0.12, "scissors": 0.08, "book": 0.15, "clock": 0.1, "tie": 0.08,
           "cat": 0.15, "person": 0.25}),
)  # fmt: skip
# class -> (companion class, probability that the companion is added when the class is present)
_COMPANIONS: dict[str, tuple[str, float]] = {
    "dining table": ("chair", 0.8),
    "keyboard": ("mouse", 0.6),
    "mouse": ("keyboard", 0.6),
    "skis": ("person", 0.9),
    "snowboard": ("person", 0.9),
    "surfboard": ("person", 0.85),
    "tennis racket": ("sports ball", 0.6),
    "baseball bat": ("baseball glove", 0.6),
    "toothbrush": ("sink", 0.6),
    "tv": ("remote", 0.4),
    "motorcycle": ("person", 0.8),
    "bicycle": ("person", 0.8),
    "horse": ("person", 0.5),
    "fork": ("knife", 0.7),
}
_MODEL = SceneModel(_SCENES, _COMPANIONS, _APPEARANCE, max_objects=6, difficult_rate=0.06)
_SPLITS = ("train", "val")


def _write_tree(coco: pathlib.Path, manifest: dict[str, int]) -> None:
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SYNTHETIC_COCO_CLASSES)]
    category_id = {entry["name"]: entry["id"] for entry in categories}
    (coco / "annotations").mkdir(parents=True)
    counts = (manifest["num_train"], manifest["num_val"])
    for split_number, (split, count) in enumerate(zip(_SPLITS, counts, strict=True)):
        folder = coco / f"{split}2014"
        folder.mkdir()
        images, annotations = [], []
        for k in range(count):
            image_id = split_number * 1_000_000 + k + 1
            rng = np.random.default_rng([manifest["seed"], split_number, k])
            image, objects = _MODEL.render(rng)
            file_name = f"COCO_{split}2014_{image_id:012d}.jpg"
            image.save(folder / file_name, quality=92)
            images.append(
                {"id": image_id, "file_name": file_name, "width": image.width, "height": image.height}
            )
            for name, (x0, y0, x1, y1), difficult in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_id[name],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                        "difficult": int(difficult),
                    }
                )
        content = {"images": images, "annotations": annotations, "categories": categories}
        (coco / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(content))
    (coco / "synthetic.json").write_text(json.dumps(manifest))


def generate_synthetic_coco(
    root: "os.PathLike[str] | str",
    num_train: int = 2000,
    num_val: int = 1000,
    seed: int = 0,
) -> pathlib.Path:
    """Write (or reuse) a synthetic COCO 2014 tree with COCO's 80 labels under ``root``; returns its
    folder (``<root>/coco``, the ``root`` of :class:`msrn.data.COCODataset`).

    The same arguments always give the same files; a tree generated earlier with the same arguments
    is reused. It is written to a temporary folder first and moved into place, under a lock file in
    ``root`` (as :func:`msrn.data.generate_synthetic_voc`).

    Args:
        root: cache folder (created when missing).
        num_train: images in ``train2014``.
        num_val: images in ``val2014`` (the test split).
        seed: seed of the whole set; image ``k`` of a split depends only on ``(seed, split, k)``.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}.")
    manifest = {"format": _FORMAT_VERSION, "num_train": num_train, "num_val": num_val, "seed": seed}
    existed = (pathlib.Path(root).expanduser() / "coco" / "synthetic.json").is_file()
    folder = write_once(
        root,
        "coco",
        ("synthetic.json",),
        manifest,
        lambda tree: _write_tree(tree, manifest),
        "synthetic-coco",
    )
    if not existed:
        _logger.info(
            "Generated a synthetic COCO set (%d train, %d val images) in %s", num_train, num_val, folder
        )
    return folder
