"""What the generated data sets share: a scene model of which labels appear together, drawing the
labels as coloured shapes on a noisy background, and writing a tree once (``msrn.data.synthetic``:
VOC format, 20 labels; ``msrn.data.synthetic_coco``: COCO format, 80 labels)."""

import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

__all__: list[str] = []

SHAPES = ("disk", "square", "triangle", "ring", "cross", "diamond", "frame", "bar")
_SIZES = ((128, 96), (96, 128), (112, 112), (128, 112))

Box = tuple[int, int, int, int]
DrawnObject = tuple[str, Box, bool]  # (class name, box, difficult)


@dataclass(frozen=True)
class SceneModel:
    """Which labels an image shows, and how each is drawn.

    Every image comes from one scene (chosen with the scenes' probabilities), which shows each of its
    classes with that class's probability (at least one); a class may bring a companion; now and then
    a class appears twice. Each class is drawn as its own (shape, colour), some objects small and
    faint (``difficult``).
    """

    scenes: tuple[tuple[float, Mapping[str, float]], ...]
    companions: Mapping[str, tuple[str, float]]
    appearance: Mapping[str, tuple[str, tuple[int, int, int]]]
    max_objects: int = 5
    difficult_rate: float = 0.06

    def sample_labels(self, rng: np.random.Generator) -> list[str]:
        weights = np.array([w for w, _ in self.scenes])
        scene = self.scenes[rng.choice(len(self.scenes), p=weights / weights.sum())][1]
        names = [name for name, p in scene.items() if rng.random() < p]
        if not names:
            probabilities = np.array(list(scene.values()))
            names = [list(scene)[rng.choice(len(scene), p=probabilities / probabilities.sum())]]
        for name in list(names):
            companion = self.companions.get(name)
            if companion and companion[0] not in names and rng.random() < companion[1]:
                names.append(companion[0])
        if len(names) > 1 and rng.random() < 0.15:  # occasionally two instances of one class
            names.append(names[rng.integers(len(names))])
        return names[: self.max_objects]

    def render(self, rng: np.random.Generator) -> tuple[Image.Image, list[DrawnObject]]:
        width, height = _SIZES[rng.integers(len(_SIZES))]
        base = rng.uniform(70, 190, size=3)
        pixels = base + rng.normal(0, 14, size=(height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        objects, boxes = [], []
        for name in self.sample_labels(rng):
            difficult = rng.random() < self.difficult_rate
            side = int(rng.integers(12, 17)) if difficult else int(rng.integers(26, 41))
            # Keep objects off the outer 10% so that the multi-scale crop rarely cuts one away entirely.
            margin_x, margin_y = int(0.1 * width), int(0.1 * height)
            for _ in range(20):
                x0 = int(rng.integers(margin_x, width - margin_x - side + 1))
                y0 = int(rng.integers(margin_y, height - margin_y - side + 1))
                box = (x0, y0, x0 + side, y0 + side)
                if all(_overlap(box, other) < 0.3 for other in boxes):
                    break
            shape, colour = self.appearance[name]
            if difficult:  # faint: half-way between the object's colour and the background
                colour = tuple(int(0.5 * c + 0.5 * b) for c, b in zip(colour, base, strict=True))
            draw_shape(draw, shape, box, tuple(int(c) for c in colour))
            boxes.append(box)
            objects.append((name, box, difficult))
        return image, objects


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "disk":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "ring":
        width = max(3, (x1 - x0) // 4)
        draw.ellipse(box, outline=colour, width=width)
    elif shape == "cross":
        third = (x1 - x0) // 3
        draw.rectangle((x0 + third, y0, x1 - third, y1), fill=colour)
        draw.rectangle((x0, y0 + third, x1, y1 - third), fill=colour)
    elif shape == "diamond":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "frame":
        draw.rectangle(box, outline=colour, width=max(3, (x1 - x0) // 4))
    else:  # bar: the middle third of the box's height
        third = (y1 - y0) // 3
        draw.rectangle((x0, y0 + third, x1, y1 - third), fill=colour)


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(1, smaller)


def _holds(tree: pathlib.Path, manifest_file: pathlib.Path, manifest: Mapping, kind: str) -> bool:
    """Whether ``tree`` is a finished tree of ``manifest``; False when absent, an error when it is
    something else."""
    if manifest_file.is_file():
        try:
            if json.loads(manifest_file.read_text()) == manifest:
                return True
        except json.JSONDecodeError:
            pass
        raise FileExistsError(
            f"{tree} holds a different data set than requested ({dict(manifest)}); pass another cache folder "
            f"or delete {tree}."
        )
    if tree.exists():
        raise FileExistsError(f"{tree} exists but is not a generated {kind} set; pass another cache folder.")
    return False


def write_once(
    root: "os.PathLike[str] | str",
    tree_name: str,
    manifest_path: Sequence[str],
    manifest: Mapping,
    write: Callable[[pathlib.Path], None],
    kind: str,
) -> pathlib.Path:
    """``root / tree_name``, written by ``write(folder)`` unless a finished tree of ``manifest`` is there.

    ``write`` fills a temporary folder that is then moved into place, so an interrupted run leaves no
    half-written tree; a lock file in ``root`` makes processes generating the same tree at once write
    it once. ``write`` must write ``manifest`` (as JSON) to ``folder / manifest_path`` last.
    """
    root = pathlib.Path(root).expanduser()
    tree = root / tree_name
    manifest_file = tree.joinpath(*manifest_path)
    if _holds(tree, manifest_file, manifest, kind):
        return tree
    root.mkdir(parents=True, exist_ok=True)
    # Two first runs at once (two trainings, or two tests) must not both write: the second waits here
    # and then finds the finished tree.
    with FileLock(str(root / f".{kind}.lock")):
        if _holds(tree, manifest_file, manifest, kind):
            return tree
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
        try:
            write(staging / tree_name)
            try:
                os.replace(staging / tree_name, tree)
            except OSError:
                # A process that could not take the lock (a file system without locks) finished first.
                if not _holds(tree, manifest_file, manifest, kind):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree
