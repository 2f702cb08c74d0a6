"""MS-COCO 2014 classification labels from the detection annotations.

Expected tree::

    <root>/annotations/instances_{train,val}2014.json
    <root>/{train,val}2014/COCO_{train,val}2014_<id>.jpg

Choices (those of the authors' reference code, so that the paper's tables are comparable):

- Class order: the 80 category *names* sorted alphabetically (``airplane``, ``apple``,
  ``backpack``, ...), which is the order of ``names`` in ``coco_label_graph.npz``; not COCO's
  category-id order.
- Images without any object annotation are left out of both splits (82,081 of 82,783 train and
  40,137 of 40,504 val images remain). ``keep_empty=True`` keeps them as all-negative samples.
- Crowd annotations count like any other.
"""
import json
import os
import pathlib
from typing import Callable, Optional

import numpy as np

from ._base import MultiLabelDataset

__all__ = ["COCODataset"]


class COCODataset(MultiLabelDataset):
    """MS-COCO (2014 by default) as a multi-label classification set.

    Args:
        root: folder holding ``annotations/`` and the image folders.
        split: ``"train"`` or ``"val"`` (the paper trains on train2014 and tests on val2014).
        year: ``"2014"`` or ``"2017"``.
        transform: applied to the RGB PIL image.
        annotation_file: explicit ``instances_*.json`` (default ``annotations/instances_<split><year>.json``).
        image_dir: explicit image folder (default ``<root>/<split><year>``).
        keep_empty: keep images that have no annotation (all-negative targets).
        skip_bad_images: leave out missing or undecodable images instead of raising.
    """

    def __init__(
        self,
        root: "os.PathLike[str] | str",
        split: str = "train",
        year: str = "2014",
        transform: Optional[Callable] = None,
        annotation_file: "Optional[os.PathLike[str] | str]" = None,
        image_dir: "Optional[os.PathLike[str] | str]" = None,
        keep_empty: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        self.root = pathlib.Path(root).expanduser()
        self.split = split
        annotation_file = pathlib.Path(
            annotation_file or self.root / "annotations" / f"instances_{split}{year}.json"
        )
        image_dir = pathlib.Path(image_dir or self.root / f"{split}{year}")
        if not annotation_file.is_file():
            raise FileNotFoundError(
                f"COCO annotation file not found: {annotation_file} (download annotations_trainval{year}.zip "
                f"and unpack it under {self.root})."
            )
        try:
            with open(annotation_file, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"COCO annotation file {annotation_file} is not valid JSON: {error}.") from error
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"COCO annotation file {annotation_file} has no {key!r} entry; is it an "
                                 f"instances_*.json file?")
        categories = sorted(data["categories"], key=lambda c: c["name"])
        classes = [c["name"] for c in categories]
        category_index = {c["id"]: i for i, c in enumerate(categories)}
        images = sorted(data["images"], key=lambda im: im["id"])
        image_row = {im["id"]: row for row, im in enumerate(images)}
        targets = np.zeros((len(images), len(classes)), dtype=np.int64)
        for annotation in data["annotations"]:
            category = annotation.get("category_id")
            if category not in category_index:
                raise ValueError(
                    f"COCO annotation file {annotation_file}: annotation {annotation.get('id')} has category_id "
                    f"{category!r}, which is not in its 'categories' list."
                )
            row = image_row.get(annotation.get("image_id"))
            if row is None:
                raise ValueError(
                    f"COCO annotation file {annotation_file}: annotation {annotation.get('id')} refers to image_id "
                    f"{annotation.get('image_id')!r}, which is not in its 'images' list."
                )
            targets[row, category_index[category]] = 1
        keep = np.ones(len(images), dtype=bool) if keep_empty else targets.any(axis=1)
        self.num_empty_images = int((~targets.any(axis=1)).sum())
        self.image_ids = [im["id"] for im, k in zip(images, keep) if k]
        paths = [str(image_dir / im["file_name"]) for im, k in zip(images, keep) if k]
        if not paths:
            raise ValueError(f"COCO annotation file {annotation_file} lists no image with annotations.")
        super().__init__(paths, targets[keep], None, classes, transform=transform,
                         skip_bad_images=skip_bad_images)
