"""Runs the code blocks of README.md and docs/*.md as tests, through Sybil (loaded by the repository's
root conftest.py).

- A ``python`` block runs as written, in order, in one namespace per page (so a block sees what the
  blocks above it defined). ``<!-- invisible-code-block: python ... -->`` comments on a page hold set-up
  and checks that the rendered page does not show.
- A page runs in its own empty working folder, which is also its ``HOME`` (so ``out/...`` and
  ``~/data/...`` land there). A page that needs more names the fixtures below in a
  ``<!-- fixtures: NAME, ... -->`` comment; each builds its files once per page.
- A ``bash`` block: every ``msrn`` command line in it (also ``python -m msrn``, ``torchrun ... -m msrn``,
  ``python examples/train_voc.py`` and ``python benchmarks/*.py``) is parsed by the real argument
  parser, so a wrong option or value fails; the commands are not run. Other lines (pip, pytest, ruff)
  are not checked.
- A block that cannot run here (it needs the network, a real data set or the authors' files) is
  marked ``<!-- skip: next "needs ...: why" -->``; :func:`marked_blocks` lists them and the root
  conftest prints the list at the end of every test run.
"""

import contextlib
import gc
import importlib.util
import io
import os
import pathlib
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
FIXTURES = re.compile(r"^<!-- fixtures: ([\w, ]+) -->$", flags=re.M)
SKIP = re.compile(r"^[ \t]*<!-- skip: next (.*?) -->[ \t]*$", flags=re.M)  # as Sybil: at a line's start
# What a marked block may need; each reason starts with one of these.
MARK_REASONS = ("needs the network", "needs a data set", "needs the authors' files", "slow", "fragment")


def page_fixtures(page: pathlib.Path) -> list[str]:
    """The fixtures a page names in ``<!-- fixtures: a, b -->``, after the working folder of every page."""
    names = [name.strip() for line in FIXTURES.findall(page.read_text()) for name in line.split(",")]
    return ["docs_workdir", *[name for name in names if name]]


def marked_blocks() -> list[tuple[str, str]]:
    """``(page:line, reason)`` of every block that a ``skip`` marker keeps from running."""
    marked = []
    for page in PAGES:
        text = page.read_text()
        for match in SKIP.finditer(text):
            line = text.count("\n", 0, match.end()) + 2  # the block's opening fence follows the marker
            reason = match.group(1).strip().strip("\"'")
            marked.append((f"{page.relative_to(REPO_ROOT)}:{line}", reason))
    return marked


# ----------------------------------------------------------------------------------- bash blocks
def _logical_lines(source: str) -> list[str]:
    return [line for line in source.replace("\\\n", " ").splitlines() if line.strip()]


def _benchmark_parser(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _command_line(words: list[str]):
    """``(parser, argv)`` for a command line that the docs' tests parse, or None for any other command."""
    from msrn.cli import build_parser

    if words[:1] == ["msrn"]:
        return build_parser(), words[1:]
    if "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["msrn"]:
        return build_parser(), words[words.index("-m") + 2 :]  # python -m msrn, torchrun ... -m msrn
    if words[:2] == ["python", "examples/train_voc.py"]:
        return build_parser(), ["train", *words[2:]]
    if len(words) > 1 and words[0] == "python" and re.fullmatch(r"benchmarks/\w+\.py", words[1]):
        return _benchmark_parser(words[1].split("/")[1]), words[2:]
    return None


def _option_strings(parser) -> set[str]:
    """Every option string of ``parser`` and of its sub-commands."""
    options = set()
    for action in parser._actions:
        options |= set(action.option_strings)
        for sub in (getattr(action, "choices", None) or {}).values() if action.nargs == "A..." else ():
            options |= _option_strings(sub)
    return options


def parse_shell_block(example) -> None:
    """Parse every msrn command of a bash block with the real parser; a line that fails is named."""
    for line in _logical_lines(str(example.parsed)):
        for command in re.split(r"&&|;", line):
            words = shlex.split(command, comments=True)
            found = _command_line(words) if words else None
            if found is None:
                continue
            parser, argv = found
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors):
                    parser.parse_args(argv)
            except SystemExit as exit_:
                raise AssertionError(
                    f"{example.path}:{example.line}: `{command.strip()}` does not parse "
                    f"(exit {exit_.code}): {errors.getvalue().strip().splitlines()[-1:]}"
                ) from None
            # argparse takes an unambiguous prefix (--epoch for --epochs); the docs spell options out.
            shortened = {w.split("=")[0] for w in argv if w.startswith("--")} - _option_strings(parser)
            if shortened:
                raise AssertionError(
                    f"{example.path}:{example.line}: `{command.strip()}` does not parse as written: "
                    f"{sorted(shortened)} abbreviate options"
                )


def _forget_page(namespace: dict) -> None:
    """After a page: drop what its blocks made (models, optimizers), or every page's models add up."""
    namespace.clear()
    gc.collect()


def sybils() -> list[Sybil]:
    """One Sybil per page, requesting the fixtures that the page names."""
    parsers = [PythonCodeBlockParser(), SkipParser(), CodeBlockParser("bash", parse_shell_block)]
    return [
        Sybil(
            parsers=parsers,
            path=str(page.parent),
            filenames=[page.name],
            fixtures=page_fixtures(page),
            teardown=_forget_page,
            name=page.stem,
        )
        for page in PAGES
    ]


# -------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def docs_workdir(tmp_path_factory):
    """Every page: an empty working folder, also ``HOME``, and torch's generator seeded."""
    folder = tmp_path_factory.mktemp("page")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("HOME", str(folder))
        torch.manual_seed(0)
        yield folder


@pytest.fixture(scope="module")
def voc_home(docs_workdir):
    """``~/data/VOCdevkit``: a small generated PASCAL VOC 2007 tree (msrn.data.generate_synthetic_voc),
    2 training and 2 test images (one training step of the README's ResNet-101 at 448 px), read like
    the real data set."""
    from msrn.data import generate_synthetic_voc

    return generate_synthetic_voc(docs_workdir / "data", num_trainval=2, num_test=2)


@pytest.fixture(scope="module")
def backbone_file(docs_workdir):
    """``resnet101.safetensors`` in the working folder: a timm ResNet-101 state dict (random weights),
    the file a user downloads once for offline use."""
    import timm
    from safetensors.torch import save_file

    state = timm.create_model("resnet101").state_dict()
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(state, str(docs_workdir / "resnet101.safetensors"))


def _photo(path: pathlib.Path, seed: int, **save_kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save_kwargs)


@pytest.fixture(scope="module")
def saved_model(docs_workdir):
    """``out/msrn-voc``: a small trained-looking VOC model saved by msrn.save_pretrained (ResNet-18
    trunk, 64 px, per-label thresholds), and photos ``photos/a.jpg``, ``photos/b.jpg``, ``photo.jpg``
    (that one stored sideways with an EXIF orientation, as phones do)."""
    import timm

    import msrn

    model = timm.create_model(
        "msrn_resnet18", labels="voc2007", embed_dim=16, hidden_dim=32, gat_hidden_dim=16, num_groups=2
    )
    model.pretrained_cfg["input_size"] = (3, 64, 64)
    model.pretrained_cfg["label_thresholds"] = [0.4] * model.num_classes
    msrn.save_pretrained(model, docs_workdir / "out" / "msrn-voc")
    _photo(docs_workdir / "photos" / "a.jpg", 0)
    _photo(docs_workdir / "photos" / "b.jpg", 1)
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    _photo(docs_workdir / "photo.jpg", 2, exif=exif)
    return docs_workdir / "out" / "msrn-voc"


@pytest.fixture(scope="module")
def exported_model(saved_model):
    """``msrn-voc.onnx``: ``out/msrn-voc`` exported as ``msrn export --model local-dir:out/msrn-voc
    --onnx msrn-voc.onnx`` does."""
    pytest.importorskip("onnxruntime")
    import timm

    from msrn.export import export_onnx

    model = timm.create_model(f"local-dir:{saved_model}")
    return export_onnx(model, "msrn-voc.onnx")


@pytest.fixture(scope="module")
def own_photos(docs_workdir):
    """Your own labelled photos: ``photos/*.jpg`` with ``train.csv`` (3 images) and ``val.csv`` (2) in
    msrn.data.CSVDataset's list layout over cat, dog, person, sofa."""
    rows = {
        "train.csv": [
            ("cat.jpg", "cat"),
            ("dog.jpg", "dog;person"),
            ("sofa.jpg", "sofa;cat"),
        ],
        "val.csv": [("v1.jpg", "cat;sofa"), ("v2.jpg", "dog;person")],
    }
    for seed, (name, table) in enumerate(rows.items()):
        for index, (image, _) in enumerate(table):
            _photo(docs_workdir / "photos" / image, 10 * seed + index)
        lines = ["image,labels", *[f"photos/{image},{labels}" for image, labels in table]]
        (docs_workdir / name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def benchmark_data(docs_workdir):
    """``~/data/NUS-WIDE`` (its label files, one listed image missing) and ``~/data/apparel-dataset``
    (every image of the authors' split, as empty files: only names are read) and ``~/data/open-images``
    (tests/test_openimages.py's tree, one train image missing), in their real layouts."""
    import msrn.labels
    from msrn.data import apparel_authors_split

    nuswide = docs_workdir / "data" / "NUS-WIDE"
    labels_dir = nuswide / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    (nuswide / "ImageList").mkdir()
    for split in ("Train", "Test"):
        listed = "actor\\0001_1.jpg\r\nactor\\0002_2.jpg\r\n"
        (nuswide / "ImageList" / f"{split}Imagelist.txt").write_text(listed)
        for concept in msrn.labels.load("nuswide").names:
            (labels_dir / f"Labels_{concept}_{split}.txt").write_text(
                "1\n0\n" if concept == "sky" else "0\n0\n"
            )
    (nuswide / "Flickr" / "actor").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(nuswide / "Flickr" / "actor" / "0001_1.jpg")  # 0002_2.jpg is missing
    apparel = docs_workdir / "data" / "apparel-dataset"
    for image, labels, _ in apparel_authors_split():
        folder = apparel / "_".join(labels)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image).touch()
    from tests.test_openimages import write_tree  # the small Open Images tree, official file formats

    write_tree(docs_workdir / "data" / "open-images")
    return os.fspath(docs_workdir / "data")
