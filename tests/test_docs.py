"""The docs stay true to the code: links resolve, documented options exist, the API page is complete."""

import importlib
import importlib.util
import pathlib
import re
import types

import doc_blocks
import pytest
from doc_blocks import MARK_REASONS, marked_blocks, parse_shell_block

from msrn.cli import build_parser

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
# Pages that other work items write; until they are merged a link to them may dangle.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _markdown_files():
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        assert path.exists(), f"{page.name} links to {target}, which does not exist"


def _options(command: str) -> set:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {s for action in subparsers.choices[command]._actions for s in action.option_strings}


@pytest.mark.parametrize("page, command", [("predict.md", "predict"), ("export.md", "export")])
def test_documented_options_exist(page, command):
    text = (DOCS / page).read_text()
    mentioned = set(re.findall(rf"msrn {command}[^\n`]*", text))
    flags = {f for line in mentioned for f in re.findall(r"(--[a-z][a-z-]*)", line)}
    if command == "predict":  # the option table of predict.md
        flags |= set(re.findall(r"^\| `(--[a-z-]+)", text, flags=re.M))
    else:
        flags |= set(re.findall(r"`(--[a-z-]+)`", text))
    assert flags, f"no options found in {page}"
    unknown = flags - _options(command)
    assert not unknown, f"{page} documents options that `msrn {command}` lacks: {sorted(unknown)}"


def _generate_api():
    spec = importlib.util.spec_from_file_location("generate_api", DOCS / "generate_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _api_modules() -> list[str]:
    return [name for name, _ in _generate_api().MODULES]


def test_api_reference_is_generated_from_the_current_code():
    assert (DOCS / "api.md").read_text() == _generate_api().generate(), "run python docs/generate_api.py"


def test_api_reference_covers_every_public_module():
    import pkgutil

    import msrn

    public = {
        f"msrn.{info.name}"
        for info in pkgutil.iter_modules(msrn.__path__)
        if not info.name.startswith("_") and hasattr(importlib.import_module(f"msrn.{info.name}"), "__all__")
    }
    assert {"msrn.engine", "msrn.cli"} <= public
    assert not public - set(_api_modules()), "add the module to MODULES in docs/generate_api.py"


@pytest.mark.parametrize("module_name", [m for m in _api_modules() if m != "msrn"])
def test_api_reference_lists_every_public_name(module_name):
    text = (DOCS / "api.md").read_text()
    assert f"## `{module_name}`" in text, (
        f"docs/api.md has no section {module_name}: run docs/generate_api.py"
    )
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not re.search(rf"`(class )?{re.escape(name)}[(` ]", text)]
    assert not missing, f"docs/api.md lacks {module_name}.{missing}: run python docs/generate_api.py"


def test_training_page_options_exist():
    """Options named in training.md's prose (its command lines are parsed by tests/doc_blocks.py)."""
    known = _options("train") | _options("evaluate") | {"--field-name"}  # the naming rule itself
    flags = set(re.findall(r"`(--[a-z][a-z-]*)", (DOCS / "training.md").read_text()))
    assert not flags - known, f"training.md documents unknown options: {sorted(flags - known)}"


def test_marked_blocks_say_why_and_mark_a_block():
    """Each block kept from running names its reason; the list is printed at the end of every run."""
    marked = marked_blocks()
    assert marked, "no marked block: the list printed at the end of the run would be empty"
    for where, reason in marked:
        assert reason.startswith(MARK_REASONS), f"{where}: the reason must start with one of {MARK_REASONS}"
        page, line = where.rsplit(":", 1)
        assert (REPO_ROOT / page).read_text().splitlines()[int(line) - 1].lstrip() == "```python", where


def test_every_page_is_collected_and_names_only_known_fixtures():
    from doc_blocks import PAGES, page_fixtures

    assert {p.name for p in PAGES} >= {"README.md", "finetuning.md", "weights.md"}
    for page in PAGES:
        for name in page_fixtures(page):
            assert callable(getattr(doc_blocks, name, None)), f"{page.name} names an unknown fixture {name}"


@pytest.mark.parametrize(
    "line, error",
    [
        ("msrn train --epoch 3", "does not parse"),  # a misspelt option
        ("msrn train --loss hinge", "does not parse"),  # a value outside the choices
        ("torchrun --nproc_per_node=2 -m msrn predict", "does not parse"),  # predict needs its inputs
        ("python benchmarks/bench.py --no-such-option", "does not parse"),
    ],
)
def test_a_wrong_command_line_in_a_bash_block_fails(line, error):
    example = types.SimpleNamespace(parsed=f"pip install x && {line}  # comment\n", path="page.md", line=3)
    with pytest.raises(AssertionError, match=error):
        parse_shell_block(example)
    parse_shell_block(types.SimpleNamespace(parsed="msrn train --epochs 3 \\\n  --lr 0.1\nruff check .\n"))


def _benchmark_parser(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


@pytest.mark.parametrize(
    "script", ["bench.py", "bench_predict.py", "bench_openimages.py", "bench_labels.py", "bench_eval.py"]
)
def test_documented_benchmark_options_exist(script):
    text = (DOCS / "performance.md").read_text() + (REPO_ROOT / "README.md").read_text()
    lines = re.findall(rf"python benchmarks/{re.escape(script)}[^\n`#]*", text)
    assert lines, f"performance.md does not show how to run benchmarks/{script}"
    flags = {flag for line in lines for flag in re.findall(r"(--[a-z][a-z-]*)", line)}
    options = {s for action in _benchmark_parser(script)._actions for s in action.option_strings}
    assert not flags - options, f"docs use options that benchmarks/{script} lacks: {sorted(flags - options)}"
