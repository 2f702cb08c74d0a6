"""docs/benchmarks.md stays true: its snippets run on trees in the documented layouts, its training
commands parse, and its figures are the paper's."""

import pathlib
import re
import shlex
import textwrap

import pytest
import torch
from PIL import Image
from test_openimages import CLASSES, TRAINABLE, write_tree

import msrn.labels
from msrn.cli import build_parser
from msrn.data import apparel_authors_split

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (REPO_ROOT / "docs" / "benchmarks.md").read_text()


def _blocks(language: str):
    """The page's fenced blocks of ``language``, indented ones (inside a list item) dedented."""
    return [
        textwrap.dedent(block)
        for _, block in re.findall(rf"^( *)```{language}\n(.*?)^\1```", PAGE, flags=re.S | re.M)
    ]


def _write_nuswide(root: pathlib.Path) -> None:
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    (root / "ImageList").mkdir()
    for split in ("Train", "Test"):
        (root / "ImageList" / f"{split}Imagelist.txt").write_text(
            "actor\\0001_1.jpg\r\nactor\\0002_2.jpg\r\n"
        )
        for concept in msrn.labels.load("nuswide").names:
            (labels_dir / f"Labels_{concept}_{split}.txt").write_text(
                "1\n0\n" if concept == "sky" else "0\n0\n"
            )
    (root / "Flickr" / "actor").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "Flickr" / "actor" / "0001_1.jpg")  # the second one is missing


def _write_apparel(root: pathlib.Path) -> None:
    for image, labels, _ in apparel_authors_split():  # every image, as empty files: only names are read
        folder = root / "_".join(labels)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image).touch()


def test_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_nuswide(tmp_path / "data" / "NUS-WIDE")
    _write_apparel(tmp_path / "data" / "apparel-dataset")
    write_tree(tmp_path / "data" / "open-images")
    namespace: dict = {}
    for block in _blocks("python"):
        exec(compile(block, "docs/benchmarks.md", "exec"), namespace)
    voc = namespace["voc"]
    assert voc.names[:3] == ("aeroplane", "bicycle", "bird") and voc.features.shape == torch.Size([20, 300])
    assert voc.graph().shape == torch.Size([20, 20]) and voc.num_edges() == 6
    assert len(namespace["test"]) == 5692  # Apparel's; "train" is Open Images' by then
    assert "('177310972ad6bec43a71ba3ac69693278c0e61e2.jpg', ('green', 'shoes'), 'trainval')" in PAGE
    assert namespace["target"].tolist() == [1, 0, -1, -1, -1] and len(namespace["positives"][0]) == 5
    assert namespace["train"].classes[:2] == CLASSES[:2] and namespace["train"].label_ids[:2] == TRAINABLE[:2]
    assert apparel_authors_split()[0] == (
        "177310972ad6bec43a71ba3ac69693278c0e61e2.jpg",
        ("green", "shoes"),
        "trainval",
    )


def test_label_set_table_matches_the_package():
    for name in msrn.labels.available():
        labels = msrn.labels.load(name)
        row = re.search(rf"^\| `{name}`[^|]*\| (\d+) \|[^|]*\| (\d+) \|$", PAGE, flags=re.M)
        assert row, f"no table row for {name}"
        assert (int(row.group(1)), int(row.group(2))) == (labels.num_classes, labels.num_edges())
    assert ", ".join(msrn.labels.load("apparel").names) in PAGE


def test_training_commands_parse():
    parser = build_parser()
    commands = [line.strip() for block in _blocks("bash") for line in block.splitlines() if line.strip()]
    assert len(commands) == 5 and all(command.startswith("msrn train") for command in commands)
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.data and args.data.startswith("~/data/")
    evaluate = re.search(r"`(msrn evaluate [^`]+)`", PAGE).group(1)
    assert parser.parse_args(shlex.split(evaluate.replace("DATASET", "apparel").replace("DIR", "x"))[1:])


@pytest.mark.parametrize(
    "figure",
    [
        "**94.9**",
        "96.0",
        "**83.4**",
        "CP 86.5, CR 71.5, CF1 78.3, OP 86.1, OR 75.5, OF1 80.4",
        "CP-3 84.5, CR-3 72.9, CF1-3 78.3, OP-3 84.3, OR-3 76.8, OF1-3 80.4",
        "**61.5**",
        "CF1 60.7, OF1 74.0, CF1-3 56.1, OF1-3 69.5",
        "**99.65**",
        "CF1 98.21, OF1 98.36, CF1-3 98.21, OF1-3 98.36",
    ],
)
def test_paper_figures_are_on_the_page(figure, shared_dir):
    assert figure in PAGE
    paper = (shared_dir / "paper" / "msrn-paper.txt").read_text()
    numbers = " ".join(re.findall(r"\d+\.\d+", figure))
    if numbers in ("94.9", "96.0"):  # Table 1's last row ends with MSRN, MSRN(pre)
        assert re.search(r"^mAP\t.*\t94\.9\t96\.0$", paper, flags=re.M)
        return
    msrn_rows = [
        re.sub(r"</?u>", "", line).split("\t")[1:] for line in paper.splitlines() if line.startswith("MSRN\t")
    ]
    assert any(numbers in " ".join(row) for row in msrn_rows), f"{figure} is in no MSRN row: {msrn_rows}"
