"""A generated PASCAL-VOC-format data set: deterministic from a seed, small enough for a CPU.

Each of the 20 VOC classes is drawn as its own (shape, colour) pair on a noisy background. Labels
co-occur with structure, so the label graph carries information: every image comes from one of four
scenes (street, home, farm, travel) that favour their own classes, and some classes bring a
companion (a dining table comes with chairs, a motorbike or bicycle with a person, ...). A few
objects are drawn small and faint and marked ``difficult``, as in VOC.

The output is a real VOCdevkit tree (XML annotations, JPEG images, ``ImageSets/Main`` split files),
read back with :class:`msrn.data.VOCDataset` like the real data set.
"""

import json
import logging
import os
import pathlib
from xml.sax.saxutils import escape

import numpy as np

from ._generated import SHAPES, SceneModel, write_once
from .voc import VOC_CLASSES

__all__ = ["generate_synthetic_voc", "SYNTHETIC_SCENES", "SYNTHETIC_COMPANIONS"]

_logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2
_COLOURS = ((225, 40, 40), (40, 175, 60), (45, 85, 225), (235, 205, 35), (195, 55, 205))
# Class c is drawn as shape c % 4 in colour c // 4: all 20 (shape, colour) pairs are distinct.
_APPEARANCE = {name: (SHAPES[i % 4], _COLOURS[i // 4]) for i, name in enumerate(VOC_CLASSES)}

# (scene probability, {class: probability of appearing in that scene})
SYNTHETIC_SCENES: tuple[tuple[float, dict[str, float]], ...] = (
    (0.25, {"person": 0.5, "car": 0.5, "bus": 0.4, "bicycle": 0.4, "motorbike": 0.4}),
    (
        0.25,
        {
            "chair": 0.5,
            "diningtable": 0.4,
            "sofa": 0.45,
            "tvmonitor": 0.4,
            "pottedplant": 0.45,
            "bottle": 0.4,
            "cat": 0.4,
            "person": 0.3,
        },
    ),
    (0.25, {"horse": 0.45, "cow": 0.5, "sheep": 0.5, "dog": 0.45, "person": 0.2, "bird": 0.3}),
    (0.25, {"aeroplane": 0.5, "boat": 0.5, "train": 0.5, "bird": 0.45, "person": 0.2}),
)
# class -> (companion class, probability that the companion is added when the class is present)
SYNTHETIC_COMPANIONS: dict[str, tuple[str, float]] = {
    "diningtable": ("chair", 0.9),
    "motorbike": ("person", 0.85),
    "bicycle": ("person", 0.85),
    "horse": ("person", 0.6),
    "tvmonitor": ("sofa", 0.6),
    "bus": ("car", 0.6),
}
_MODEL = SceneModel(SYNTHETIC_SCENES, SYNTHETIC_COMPANIONS, _APPEARANCE, max_objects=5, difficult_rate=0.06)


def _annotation_xml(image_id: str, size: tuple[int, int], objects) -> str:
    parts = [
        "<annotation>",
        "  <folder>VOC2007</folder>",
        f"  <filename>{image_id}.jpg</filename>",
        "  <source><database>msrn synthetic VOC</database></source>",
        f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for name, (x0, y0, x1, y1), difficult in objects:
        parts += [
            "  <object>",
            f"    <name>{escape(name)}</name>",
            "    <pose>Unspecified</pose>",
            "    <truncated>0</truncated>",
            f"    <difficult>{int(difficult)}</difficult>",
            f"    <bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _write_tree(voc: pathlib.Path, manifest: dict[str, int]) -> None:
    num_trainval, num_test, seed = manifest["num_trainval"], manifest["num_test"], manifest["seed"]
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    splits = {}
    for split_number, (split, count) in enumerate((("trainval", num_trainval), ("test", num_test))):
        ids = []
        for k in range(count):
            image_id = f"{split_number:01d}{k:05d}"
            rng = np.random.default_rng([seed, split_number, k])
            image, objects = _MODEL.render(rng)
            image.save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
            annotation = _annotation_xml(image_id, image.size, objects)
            (voc / "Annotations" / f"{image_id}.xml").write_text(annotation)
            ids.append(image_id)
        splits[split] = ids
    half = len(splits["trainval"]) // 2
    splits["train"], splits["val"] = splits["trainval"][:half], splits["trainval"][half:]
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (voc / "synthetic.json").write_text(json.dumps(manifest))


def generate_synthetic_voc(
    root: "os.PathLike[str] | str",
    num_trainval: int = 2000,
    num_test: int = 1000,
    seed: int = 0,
) -> pathlib.Path:
    """Write (or reuse) a synthetic VOC 2007 tree under ``root`` and return its ``VOCdevkit`` folder.

    The tree is ``<root>/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}`` with the split
    files ``trainval.txt``, ``test.txt`` (and ``train.txt``/``val.txt``, halves of trainval). The same
    arguments always give the same files; a tree generated earlier with the same arguments is reused.
    Generation writes to a temporary folder first, so an interrupted run leaves no half-written tree,
    and holds a lock file in ``root``, so that processes generating the same tree at once write it once.

    Args:
        root: cache folder (created when missing).
        num_trainval: images in the training split.
        num_test: images in the test split.
        seed: seed of the whole set; image ``k`` of a split depends only on ``(seed, split, k)``.
    """
    if num_trainval < 1 or num_test < 1:
        raise ValueError(f"num_trainval and num_test must be >= 1, got {num_trainval} and {num_test}.")
    manifest = {"format": _FORMAT_VERSION, "num_trainval": num_trainval, "num_test": num_test, "seed": seed}
    devkit = pathlib.Path(root).expanduser() / "VOCdevkit"
    existed = (devkit / "VOC2007" / "synthetic.json").is_file()
    devkit = write_once(
        root,
        "VOCdevkit",
        ("VOC2007", "synthetic.json"),
        manifest,
        lambda folder: _write_tree(folder / "VOC2007", manifest),
        "synthetic-voc",
    )
    if not existed:
        _logger.info(
            "Generated a synthetic VOC set (%d trainval, %d test images) in %s",
            num_trainval,
            num_test,
            devkit,
        )
    return devkit
