"""Write docs/api.md from the docstrings of the public modules.

Run from the repository root after changing a public signature or docstring:

    python docs/generate_api.py

Every name in a module's ``__all__`` is documented where it is defined; a class also lists the
public methods it defines itself. Modules that do not exist (yet) are skipped.
"""

import importlib
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (module, one-line role); in the order of the page.
MODULES = [
    ("msrn", "package entry points (importing it registers the `msrn_*` architectures in timm)"),
    ("msrn.models.msrn", "the MSRN model and its registered architectures"),
    ("msrn.models", "making and loading models by name"),
    ("msrn.layers", "reusable building blocks, pure PyTorch"),
    ("msrn.graph", "label co-occurrence graph"),
    ("msrn.features", "label features (GloVe)"),
    ("msrn.labels", "built-in label sets of the paper's benchmarks"),
    ("msrn.targets", "the label convention of targets: 1 present, 0 absent, -1 unknown"),
    ("msrn.loss", "training objective"),
    ("msrn.optim", "optimizer parameter groups"),
    ("msrn.hub", "weights: save and publish"),
    ("msrn.metrics", "mAP and threshold metrics"),
    ("msrn.data", "datasets and transforms"),
    ("msrn.convert", "converting the authors' checkpoints"),
    ("msrn.predictor", "labelling images from Python (what `msrn predict` runs)"),
    ("msrn.thresholds", "which decision thresholds label an image (predict and evaluate)"),
    ("msrn.backends", "inference backends: PyTorch, onnxruntime (fp32, int8)"),
    ("msrn.visualize", "attention maps as arrays and pictures"),
    ("msrn.export", "ONNX export"),
    ("msrn.engine", "the trainer (what `msrn train` and `msrn evaluate` run) and its parts"),
    ("msrn.cli", "the `msrn` command (its options: `msrn COMMAND --help`)"),
]


def _documented_in(home: str) -> str:
    """The page section that documents objects defined in module ``home``: the longest listed prefix."""
    candidates = [name for name, _ in MODULES if home == name or home.startswith(name + ".")]
    return max(candidates, key=len) if candidates else home


def _signature(obj) -> str:
    own_members = {
        k for c in getattr(obj, "__mro__", ())[:-1] if c.__module__.startswith("msrn") for k in c.__dict__
    }
    if inspect.isclass(obj) and "__init__" not in own_members:
        return "()"  # no constructor of its own (e.g. a parameter-free nn.Module)
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj) -> list[str]:
    doc = inspect.getdoc(obj)
    return ["```text", doc, "```", ""] if doc else []


def _class_methods(cls) -> list[str]:
    lines = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") or name in {"forward", "extra_repr", "training", "train"}:
            continue
        if isinstance(member, property):
            lines += [
                f"- `{cls.__name__}.{name}` (property)"
                + (f": {inspect.getdoc(member).splitlines()[0]}" if inspect.getdoc(member) else "")
            ]
        elif inspect.isfunction(member) or isinstance(member, (staticmethod, classmethod)):
            function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            summary = (inspect.getdoc(function) or "").split("\n\n")[0].replace("\n", " ")
            entry = f"- `{cls.__name__}.{name}{_signature(function)}`"
            lines += [entry + (f": {summary}" if summary else "")]
    return lines + ([""] if lines else [])


def generate() -> str:
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/generate_api.py`; do not edit by hand.",
        "Equation numbers refer to the paper; [paper_to_code.md](paper_to_code.md) maps them.",
        "",
    ]
    for module_name, role in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        out += [f"## `{module_name}`: {role}", ""]
        summary = (inspect.getdoc(module) or "").split("\n\n")[0]
        if summary:
            out += [summary, ""]
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            home = getattr(obj, "__module__", module_name)
            elsewhere = _documented_in(home)
            if (
                (inspect.isclass(obj) or inspect.isfunction(obj))
                and elsewhere != module_name
                and name in getattr(importlib.import_module(elsewhere), "__all__", ())
            ):
                out += [f"- `{module_name}.{name}`: see `{elsewhere}.{name}`", ""]
                continue
            if inspect.isclass(obj):
                out += [f"### class `{name}{_signature(obj)}`", ""] + _doc(obj) + _class_methods(obj)
            elif callable(obj):
                out += [f"### `{name}{_signature(obj)}`", ""] + _doc(obj)
            else:
                out += [f"### `{name}` = `{obj!r}`", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "api.md").write_text(generate())
    print("wrote docs/api.md")
