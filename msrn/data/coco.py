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

A malformed file (an entry without ``id``/``file_name``/``name``, ids mixing integers and strings, a
repeated image or category id, two categories with one name, a ``file_name`` outside the image folder)
raises a ``ValueError`` naming the file and the entry.
"""

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ._base import MultiLabelDataset, join_inside, read_utf8_text

__all__ = ["COCODataset"]

_ENTRY_EXAMPLE = {
    "images": '[{"id": 1, "file_name": "a.jpg"}, ...]',
    "categories": '[{"id": 1, "name": "person"}, ...]',
    "annotations": '[{"id": 1, "image_id": 1, "category_id": 1}, ...]',
}


def _read_json(annotation_file: pathlib.Path) -> dict[str, Any]:
    try:
        data = json.loads(read_utf8_text(annotation_file))
    except json.JSONDecodeError as error:
        raise ValueError(f"COCO annotation file {annotation_file} is not valid JSON: {error}.") from error
    if not isinstance(data, dict):
        raise ValueError(
            f"COCO annotation file {annotation_file} holds a {type(data).__name__}, not an "
            f"object with 'images', 'annotations' and 'categories'; is it an instances_*.json "
            f"file?"
        )
    for key, example in _ENTRY_EXAMPLE.items():
        if key not in data:
            raise ValueError(
                f"COCO annotation file {annotation_file} has no {key!r} entry; is it an "
                f"instances_*.json file?"
            )
        if not isinstance(data[key], list):
            raise ValueError(
                f"COCO annotation file {annotation_file}: {key!r} is a "
                f"{type(data[key]).__name__}; it must be a list of objects, e.g. {example}."
            )
    return data


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _checked_entries(entries: list[Any], key: str, fields: tuple[str, ...], annotation_file: pathlib.Path):
    """Entries of ``key`` as dicts that have ``fields``, with ids that are all int or all str and unique."""
    first_index: dict[Any, int] = {}
    for number, entry in enumerate(entries):
        where = f"COCO annotation file {annotation_file}: {key}[{number}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is {entry!r}, not an object like {_ENTRY_EXAMPLE[key][1:-6]}.")
        for field in fields:
            if field not in entry:
                raise ValueError(f"{where} has no {field!r} (every entry needs {' and '.join(fields)}).")
        identifier = entry["id"]
        if not _is_id(identifier):
            raise ValueError(f"{where} has id {identifier!r}; ids must be integers or strings.")
        if identifier in first_index:
            raise ValueError(
                f"{where} repeats the id {identifier!r} of {key}[{first_index[identifier]}]; "
                f"ids must be unique."
            )
        first_index[identifier] = number
    kinds = {type(entry["id"]) for entry in entries}
    if len(kinds) > 1:
        integer = next(e["id"] for e in entries if isinstance(e["id"], int))
        text = next(e["id"] for e in entries if isinstance(e["id"], str))
        raise ValueError(
            f"COCO annotation file {annotation_file}: the {key} ids mix integers and strings "
            f"(e.g. {integer!r} and {text!r}); use one type."
        )
    return entries


def _parse_categories(entries: list[Any], annotation_file: pathlib.Path):
    """``(classes sorted by name, {category id: class index})``."""
    categories = _checked_entries(entries, "categories", ("id", "name"), annotation_file)
    by_name: dict[str, Any] = {}
    for category in categories:
        name = category["name"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"COCO annotation file {annotation_file}: category {category['id']!r} has name "
                f"{name!r}; names must be non-empty strings."
            )
        if name in by_name:
            raise ValueError(
                f"COCO annotation file {annotation_file}: categories {by_name[name]!r} and "
                f"{category['id']!r} are both named {name!r}; class names must be unique (merge "
                f"the two categories or rename one)."
            )
        by_name[name] = category["id"]
    classes = sorted(by_name)
    return classes, {by_name[name]: index for index, name in enumerate(classes)}


def _parse_images(entries: list[Any], annotation_file: pathlib.Path) -> list[dict[str, Any]]:
    images = _checked_entries(entries, "images", ("id", "file_name"), annotation_file)
    for image in images:
        if not isinstance(image["file_name"], str) or not image["file_name"].strip():
            raise ValueError(
                f"COCO annotation file {annotation_file}: image {image['id']!r} has file_name "
                f"{image['file_name']!r}; it must be a non-empty string."
            )
    return sorted(images, key=lambda image: image["id"])


def _type_hint(identifier: Any, known: dict[Any, Any]) -> str:
    """Why an id is not found when only its type differs (``"7"`` against ``7``)."""
    if not known:
        return ""
    known_type = type(next(iter(known)))
    if type(identifier) is not known_type and str(identifier) in {str(k) for k in known}:
        return (
            f" (it is a {type(identifier).__name__} while the ids there are {known_type.__name__}s; "
            f"use one type)"
        )
    return ""


def _image_path(image_dir: pathlib.Path, file_name: str, annotation_file: pathlib.Path) -> pathlib.Path:
    path = join_inside(image_dir, file_name)
    if path is None:
        raise ValueError(
            f"COCO annotation file {annotation_file}: file_name {file_name!r} is not a path "
            f"inside the image folder {image_dir}; write it relative to that folder "
            f"(e.g. 'a.jpg')."
        )
    return path


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
        transform: Callable | None = None,
        annotation_file: "os.PathLike[str] | str | None" = None,
        image_dir: "os.PathLike[str] | str | None" = None,
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
        data = _read_json(annotation_file)
        classes, category_index = _parse_categories(data["categories"], annotation_file)
        images = _parse_images(data["images"], annotation_file)
        image_row = {im["id"]: row for row, im in enumerate(images)}
        targets = np.zeros((len(images), len(classes)), dtype=np.int64)
        for number, annotation in enumerate(data["annotations"]):
            if not isinstance(annotation, dict):
                raise ValueError(
                    f"COCO annotation file {annotation_file}: annotations[{number}] is "
                    f"{annotation!r}, not an object like {_ENTRY_EXAMPLE['annotations'][1:-6]}."
                )
            category = annotation.get("category_id")
            if not _is_id(category) or category not in category_index:
                raise ValueError(
                    f"COCO annotation file {annotation_file}: annotation {annotation.get('id')} has "
                    f"category_id {category!r}, which is not in its 'categories' list"
                    f"{_type_hint(category, category_index)}."
                )
            image_id = annotation.get("image_id")
            row = image_row.get(image_id) if _is_id(image_id) else None
            if row is None:
                raise ValueError(
                    f"COCO annotation file {annotation_file}: annotation {annotation.get('id')} refers to "
                    f"image_id {image_id!r}, which is not in its 'images' list"
                    f"{_type_hint(image_id, image_row)}."
                )
            targets[row, category_index[category]] = 1
        keep = np.ones(len(images), dtype=bool) if keep_empty else targets.any(axis=1)
        self.num_empty_images = int((~targets.any(axis=1)).sum())
        kept_images = [im for im, k in zip(images, keep, strict=True) if k]
        self.image_ids = [im["id"] for im in kept_images]
        paths = [str(_image_path(image_dir, im["file_name"], annotation_file)) for im in kept_images]
        if not paths:
            raise ValueError(f"COCO annotation file {annotation_file} lists no image with annotations.")
        super().__init__(paths, targets[keep], classes, transform=transform, skip_bad_images=skip_bad_images)
