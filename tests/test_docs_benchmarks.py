"""docs/benchmarks.md stays true: its label-set table and figures are the package's and the paper's.
(Its code blocks run through tests/doc_blocks.py, on trees in the documented layouts.)"""

import pathlib
import re
import shlex

import pytest

import msrn.labels
from msrn.cli import build_parser

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (REPO_ROOT / "docs" / "benchmarks.md").read_text()


def test_label_set_table_matches_the_package():
    for name in msrn.labels.available():
        labels = msrn.labels.load(name)
        row = re.search(rf"^\| `{name}`[^|]*\| (\d+) \|[^|]*\| (\d+) \|$", PAGE, flags=re.M)
        assert row, f"no table row for {name}"
        assert (int(row.group(1)), int(row.group(2))) == (labels.num_classes, labels.num_edges())
    assert ", ".join(msrn.labels.load("apparel").names) in PAGE


def test_inline_evaluate_command_parses():
    """The prose's `msrn evaluate` line (the page's bash blocks are parsed by tests/doc_blocks.py)."""
    evaluate = re.search(r"`(msrn evaluate [^`]+)`", PAGE).group(1)
    words = shlex.split(evaluate.replace("DATASET", "apparel").replace("DIR", "x"))
    assert build_parser().parse_args(words[1:]).command == "evaluate"


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
