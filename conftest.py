"""Collects the code blocks of README.md and docs/*.md as tests (Sybil; the rules are in
tests/doc_blocks.py) and prints, after every run, the blocks that are marked not to run."""

from sybil.sybil import SybilCollection

from tests.doc_blocks import (  # noqa: F401  (fixtures the pages name)
    backbone_file,
    benchmark_data,
    docs_workdir,
    exported_model,
    marked_blocks,
    own_photos,
    saved_model,
    sybils,
    voc_home,
)

pytest_collect_file = SybilCollection(sybils()).pytest()


def pytest_terminal_summary(terminalreporter) -> None:
    marked = marked_blocks()
    terminalreporter.section(f"code blocks in README.md and docs/ that the tests do not run ({len(marked)})")
    for where, reason in marked:
        terminalreporter.write_line(f"{where}: {reason}")
