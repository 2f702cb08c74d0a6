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
import shutil
import tempfile
from xml.sax.saxutils import escape

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

from .voc import VOC_CLASSES

__all__ = ["generate_synthetic_voc", "SYNTHETIC_SCENES", "SYNTHETIC_COMPANIONS"]

_logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2
_SHAPES = ("disk", "square", "triangle", "ring")
_COLOURS = ((225, 40, 40), (40, 175, 60), (45, 85, 225), (235, 205, 35), (195, 55, 205))
# Class c is drawn as shape c % 4 in colour c // 4: all 20 (shape, colour) pairs are distinct.
_APPEARANCE = {name: (_SHAPES[i % 4], _COLOURS[i // 4]) for i, name in enumerate(VOC_CLASSES)}

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
_MAX_OBJECTS = 5
_DIFFICULT_RATE = 0.06
_SIZES = ((128, 96), (96, 128), (112, 112), (128, 112))


def _sample_labels(rng: np.random.Generator) -> list[str]:
    weights = np.array([w for w, _ in SYNTHETIC_SCENES])
    scene = SYNTHETIC_SCENES[rng.choice(len(SYNTHETIC_SCENES), p=weights / weights.sum())][1]
    names = [name for name, p in scene.items() if rng.random() < p]
    if not names:
        probabilities = np.array(list(scene.values()))
        names = [list(scene)[rng.choice(len(scene), p=probabilities / probabilities.sum())]]
    for name in list(names):
        companion = SYNTHETIC_COMPANIONS.get(name)
        if companion and companion[0] not in names and rng.random() < companion[1]:
            names.append(companion[0])
    if len(names) > 1 and rng.random() < 0.15:  # occasionally two instances of one class
        names.append(names[rng.integers(len(names))])
    return names[:_MAX_OBJECTS]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "disk":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # ring
        width = max(3, (x1 - x0) // 4)
        draw.ellipse(box, outline=colour, width=width)


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(1, smaller)


_Object = tuple[str, tuple[int, int, int, int], bool]  # (class name, box, difficult)


def _render(rng: np.random.Generator) -> tuple[Image.Image, list[_Object]]:
    width, height = _SIZES[rng.integers(len(_SIZES))]
    base = rng.uniform(70, 190, size=3)
    pixels = base + rng.normal(0, 14, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    objects, boxes = [], []
    for name in _sample_labels(rng):
        difficult = rng.random() < _DIFFICULT_RATE
        side = int(rng.integers(12, 17)) if difficult else int(rng.integers(26, 41))
        # Keep objects off the outer 10% so that the multi-scale crop rarely cuts one away entirely.
        margin_x, margin_y = int(0.1 * width), int(0.1 * height)
        for _ in range(20):
            x0 = int(rng.integers(margin_x, width - margin_x - side + 1))
            y0 = int(rng.integers(margin_y, height - margin_y - side + 1))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_overlap(box, other) < 0.3 for other in boxes):
                break
        shape, colour = _APPEARANCE[name]
        if difficult:  # faint: half-way between the object's colour and the background
            colour = tuple(int(0.5 * c + 0.5 * b) for c, b in zip(colour, base, strict=True))
        _draw_shape(draw, shape, box, tuple(int(c) for c in colour))
        boxes.append(box)
        objects.append((name, box, difficult))
    return image, objects


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


def _holds(devkit: pathlib.Path, manifest: dict[str, int]) -> bool:
    """Whether ``devkit`` is a finished tree of ``manifest``; False when absent, an error when it is
    something else."""
    manifest_file = devkit / "VOC2007" / "synthetic.json"
    if manifest_file.is_file():
        try:
            if json.loads(manifest_file.read_text()) == manifest:
                return True
        except json.JSONDecodeError:
            pass
        raise FileExistsError(
            f"{devkit} holds a different data set than requested ({manifest}); pass another cache folder "
            f"or delete {devkit}."
        )
    if devkit.exists():
        raise FileExistsError(
            f"{devkit} exists but is not a generated synthetic set; pass another cache folder."
        )
    return False


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
            image, objects = _render(rng)
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
    root = pathlib.Path(root).expanduser()
    devkit = root / "VOCdevkit"
    manifest = {"format": _FORMAT_VERSION, "num_trainval": num_trainval, "num_test": num_test, "seed": seed}
    if _holds(devkit, manifest):
        return devkit
    root.mkdir(parents=True, exist_ok=True)
    # Two first runs at once (two trainings, or two tests) must not both write: the second waits here
    # and then finds the finished tree.
    with FileLock(str(root / ".synthetic-voc.lock")):
        if _holds(devkit, manifest):
            return devkit
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".synthetic-voc-", dir=root))
        try:
            _write_tree(staging / "VOCdevkit" / "VOC2007", manifest)
            try:
                os.replace(staging / "VOCdevkit", devkit)
            except OSError:
                # A process that could not take the lock (a file system without locks) finished first.
                if not _holds(devkit, manifest):
                    raise
                return devkit
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _logger.info(
        "Generated a synthetic VOC set (%d trainval, %d test images) in %s", num_trainval, num_test, devkit
    )
    return devkit
