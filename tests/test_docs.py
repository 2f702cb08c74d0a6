"""The docs stay true to the code: links resolve, documented options exist, the API page is complete."""

import importlib
import importlib.util
import pathlib
import re

import pytest

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


@pytest.mark.parametrize(
    "module_name",
    [
        "msrn.layers",
        "msrn.graph",
        "msrn.loss",
        "msrn.optim",
        "msrn.visualize",
        "msrn.export",
        "msrn.labels",
        "msrn.data",
        "msrn.predictor",
    ],
)
def test_api_reference_lists_every_public_name(module_name):
    text = (DOCS / "api.md").read_text()
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not re.search(rf"`(class )?{re.escape(name)}[(` ]", text)]
    assert not missing, f"docs/api.md lacks {module_name}.{missing}: run python docs/generate_api.py"


def _bash_lines(page: pathlib.Path) -> list:
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


@pytest.mark.parametrize("page", [REPO_ROOT / "README.md", DOCS / "training.md"], ids=lambda p: p.name)
def test_training_commands_parse_and_options_exist(page):
    import shlex

    parser = build_parser()
    commands = []
    for line in _bash_lines(page):
        words = shlex.split(line.replace("~", "/home/user"))
        if "msrn" in words and words[words.index("msrn") + 1 : words.index("msrn") + 2] == ["train"]:
            commands.append(words[words.index("msrn") :])
        elif words[:2] == ["python", "examples/train_voc.py"]:
            commands.append(["msrn", "train", *words[2:]])
    assert commands, f"no training command in {page.name}"
    for words in commands:
        args = parser.parse_args(words[1:])
        assert args.command == "train", words
    if page.name == "training.md":
        known = _options("train") | _options("evaluate") | {"--field-name"}  # the naming rule itself
        flags = set(re.findall(r"`(--[a-z][a-z-]*)", page.read_text()))
        assert not flags - known, f"training.md documents unknown options: {sorted(flags - known)}"


def _benchmark_parser(script: str):
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


@pytest.mark.parametrize("script", ["bench.py", "bench_predict.py", "bench_openimages.py"])
def test_documented_benchmark_options_exist(script):
    text = (DOCS / "performance.md").read_text() + (REPO_ROOT / "README.md").read_text()
    lines = re.findall(rf"python benchmarks/{re.escape(script)}[^\n`#]*", text)
    assert lines, f"performance.md does not show how to run benchmarks/{script}"
    flags = {flag for line in lines for flag in re.findall(r"(--[a-z][a-z-]*)", line)}
    options = {s for action in _benchmark_parser(script)._actions for s in action.option_strings}
    assert not flags - options, f"docs use options that benchmarks/{script} lacks: {sorted(flags - options)}"


def test_predict_page_python_predictor_snippet_runs(tmp_path, monkeypatch):
    import numpy as np
    import timm
    from PIL import Image

    import msrn

    text = (DOCS / "predict.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "msrn.Predictor" in b)
    monkeypatch.chdir(tmp_path)
    model = timm.create_model(
        "msrn_resnet18", labels="voc2007", embed_dim=16, hidden_dim=32, gat_hidden_dim=16, num_groups=2
    )
    model.pretrained_cfg["input_size"] = (3, 64, 64)
    model.pretrained_cfg["label_thresholds"] = [0.4] * 20
    msrn.save_pretrained(model, "out/msrn-voc")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "photos" / name)
    namespace: dict = {}
    exec(compile(block, "<predict.md>", "exec"), namespace)
    assert namespace["probabilities"].shape == (2, 20)
    assert list(namespace["scores"][0]) == list(msrn.labels.load("voc2007").names)
    assert namespace["predictor"].threshold_source == "model"
