"""Hostile model folders (issue 22): one check of config.json and the state dict before any weights
load, through every public entry point: ``msrn.load_model``, ``msrn.Predictor``, ``msrn predict``
(and ``msrn evaluate``), and ``timm.create_model("local-dir:...")`` where timm's own parsing of
config.json lets msrn's code run (see docs/weights.md). Each failure is one line naming the file
and the field; a model's thresholds are used as saved or refused, never replaced by 0.5.
"""

import inspect
import json
import logging
import os
import pathlib
import re
import resource
import subprocess
import sys

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data.transforms import str_to_interp_mode

import msrn
from msrn import save_pretrained
from msrn.cli import main
from msrn.engine import evaluate_checkpoint
from msrn.models._folder import INTERPOLATIONS, MAX_CONFIG_BYTES, MODEL_ARG_TYPES

NAMES = ["cat", "dog", "person"]
THRESHOLDS = [0.3, 0.4, 0.6]
SIZE = 64
TINY = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("folder")
    torch.manual_seed(0)
    model = timm.create_model("msrn_custom", backbone="test_resnet", num_classes=3, label_names=NAMES, **TINY)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}
    model.pretrained_cfg["label_thresholds"] = list(THRESHOLDS)
    save_pretrained(model.eval(), root / "model")
    images = root / "images"
    images.mkdir()
    for k, colour in enumerate(["red", "green", "blue"]):
        Image.new("RGB", (40, 30), colour).save(images / f"{k}.png")
    (root / "test.csv").write_text(
        "image,labels\nimages/0.png,cat\nimages/1.png,dog;person\nimages/2.png,person\n"
    )
    return dict(root=root, model=root / "model", image=images / "0.png", csv=root / "test.csv")


def _copy(saved: dict, tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((saved["model"] / name).read_bytes())
    return folder


def _edit_config(folder: pathlib.Path, edit) -> pathlib.Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    replaced = edit(config)
    path.write_text(replaced if isinstance(replaced, str) else json.dumps(config))
    return path


def _cfg(key, value):
    return lambda config: config["pretrained_cfg"].__setitem__(key, value)


def _arg(key, value):
    return lambda config: config["model_args"].__setitem__(key, value)


def _top(key, value):
    return lambda config: config.__setitem__(key, value)


def _one_line_cli_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# Edits of config.json and the field the one-line error must name. Cases marked "timm parses first"
# fail inside timm.create_model("local-dir:...") before any msrn code runs (docs/weights.md).
CONFIG_CASES = {
    # thresholds: used as saved or refused, never silently 0.5 (they were dropped before)
    "thresholds of another length": (
        _cfg("label_thresholds", [0.3, 0.4]),
        r"pretrained_cfg\.label_thresholds",
    ),
    "thresholds []": (_cfg("label_thresholds", []), r"pretrained_cfg\.label_thresholds"),
    "thresholds a scalar": (_cfg("label_thresholds", 0.3), r"pretrained_cfg\.label_thresholds"),
    "thresholds a dict": (_cfg("label_thresholds", {"cat": 0.3}), r"pretrained_cfg\.label_thresholds"),
    "thresholds a string": (_cfg("label_thresholds", "0.3"), r"pretrained_cfg\.label_thresholds"),
    "threshold above 1": (_cfg("label_thresholds", [0.3, 0.4, 1.5]), r"pretrained_cfg\.label_thresholds"),
    "threshold NaN": (
        _cfg("label_thresholds", [0.3, float("nan"), 0.6]),
        r"pretrained_cfg\.label_thresholds",
    ),
    # labels
    "duplicate label_names": (_top("label_names", ["a", "a", "b"]), r"label_names holds 'a' twice"),
    "label_names not a list": (_top("label_names", 5), r"label_names must be a list of 3 strings"),
    # preprocessing
    "mean of length 2": (_cfg("mean", [0.5, 0.5]), r"pretrained_cfg\.mean must be 3 numbers"),
    "mean of strings": (_cfg("mean", ["a", "b", "c"]), r"pretrained_cfg\.mean must be 3 numbers"),
    "std of zeros": (_cfg("std", [0, 0, 0]), r"pretrained_cfg\.std must be 3 positive numbers"),
    "input_size [3, 0, 0]": (_cfg("input_size", [3, 0, 0]), r"pretrained_cfg\.input_size must be"),
    "input_size a string": (_cfg("input_size", "big"), r"pretrained_cfg\.input_size must be"),
    "interpolation evil": (_cfg("interpolation", "evil"), r"pretrained_cfg\.interpolation must be one of"),
    "crop_pct 0": (_cfg("crop_pct", 0), r"pretrained_cfg\.crop_pct must be a number in \(0, 1\]"),
    "crop_mode evil": (_cfg("crop_mode", "evil"), r"pretrained_cfg\.crop_mode must be one of"),
    # constructor arguments
    "model_args.embed_dim a string": (
        _arg("embed_dim", "x"),
        r"model_args\.embed_dim must be a JSON integer",
    ),
    "model_args.backbone a number": (_arg("backbone", 5), r"model_args\.backbone must be a JSON string"),
    "model_args.backbone_kwargs a list": (
        _arg("backbone_kwargs", [1]),
        r"model_args\.backbone_kwargs must be",
    ),
}
TIMM_PARSES_FIRST = {
    "model_args [1]": (_top("model_args", [1]), r"model_args must be a JSON object"),
    "no architecture": (
        lambda config: config.pop("architecture") and None,
        r"missing the key\(s\) \['architecture'\]",
    ),
    "architecture a number": (_top("architecture", 5), r"names the architecture 5, which is not"),
    "pretrained_cfg a list": (_top("pretrained_cfg", [1]), r"pretrained_cfg must be a JSON object"),
    "100,000 nested [": (lambda config: "[" * 100_000, r"nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES) + sorted(TIMM_PARSES_FIRST))
def test_bad_config_is_one_line_naming_file_and_field(saved, tmp_path, capsys, case):
    edit, field = {**CONFIG_CASES, **TIMM_PARSES_FIRST}[case]
    folder = _copy(saved, tmp_path)
    path = _edit_config(folder, edit)
    message = rf"{re.escape(str(path))}:? .*{field}"
    with pytest.raises(ValueError, match=message):
        msrn.load_model(f"local-dir:{folder}")
    with pytest.raises(ValueError, match=message):
        msrn.Predictor(f"local-dir:{folder}")
    if case in CONFIG_CASES:
        with pytest.raises(ValueError, match=message):
            timm.create_model(f"local-dir:{folder}")
    err = _one_line_cli_error(capsys, ["predict", str(saved["image"]), "--model", f"local-dir:{folder}"])
    assert re.search(message, err)


@pytest.mark.parametrize(
    "damage", ["negative running_var", "float label_graph", "label_graph of 2 x 2", "edge list out of range"]
)
def test_bad_state_dict_is_refused_before_use(saved, tmp_path, capsys, damage):
    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    if damage == "negative running_var":
        tensors["backbone.trunk.bn1.running_var"][0] = -1.0
        message = r"BatchNorm running_var holds negative values in backbone\.trunk\.bn1\.running_var"
    elif damage == "float label_graph":
        tensors["label_graph"] = tensors["label_graph"].float()
        message = r"label_graph must be a bool \[3, 3\] mask .* got float32 \[3, 3\]"
    elif damage == "label_graph of 2 x 2":
        tensors["label_graph"] = tensors["label_graph"][:2, :2].contiguous()
        message = r"label_graph must be a bool \[3, 3\] mask .* got bool \[2, 2\]"
    else:
        tensors["label_graph"] = torch.tensor([[0, 1, 2], [0, 3, 2]])
        message = r"label_graph as an edge list must hold label indices in \[0, 3\), got 0 to 3"
    save_file(tensors, str(weights))
    message = rf"{re.escape(str(weights))}: {message}"
    with pytest.raises(ValueError, match=message):
        timm.create_model(f"local-dir:{folder}")
    with pytest.raises(ValueError, match=message):
        msrn.load_model(f"local-dir:{folder}")
    with pytest.raises(ValueError, match=message):  # a state dict given on its own is checked too
        msrn.Predictor(f"local-dir:{saved['model']}", checkpoint=weights)
    assert re.search(
        message,
        _one_line_cli_error(capsys, ["predict", str(saved["image"]), "--model", f"local-dir:{folder}"]),
    )


def test_complete_label_graph_loads_with_a_warning(saved, tmp_path, caplog):
    folder = _copy(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["label_graph"] = torch.ones_like(tensors["label_graph"])
    save_file(tensors, str(folder / "model.safetensors"))
    with caplog.at_level(logging.WARNING, logger="msrn"):
        model = timm.create_model(f"local-dir:{folder}")
    assert bool(model.label_graph.all())
    assert "links each of the 3 labels to every other (a complete graph)" in caplog.text


@pytest.mark.skipif(
    not (os.path.exists("/dev/zero") and hasattr(os, "mkfifo")), reason="needs /dev/zero, FIFOs"
)
def test_config_that_is_not_a_file_or_too_big(saved, tmp_path, capsys):
    """A device, a FIFO (tried in a child process with a memory cap, as a regression would hang or
    read without end) and an oversized regular file are refused before reading."""
    devzero, fifo, big = (_copy(saved, tmp_path / name) for name in ("devzero", "fifo", "big"))
    (devzero / "config.json").unlink()
    (devzero / "config.json").symlink_to("/dev/zero")
    (fifo / "config.json").unlink()
    os.mkfifo(fifo / "config.json")
    with open(big / "config.json", "r+b") as handle:
        handle.truncate(MAX_CONFIG_BYTES + 1)
    script = (
        "import json, sys, msrn\n"
        "from msrn.cli import main\n"
        "out = {}\n"
        "for folder in sys.argv[2:]:\n"
        "    code = main(['predict', sys.argv[1], '--model', 'local-dir:' + folder])\n"
        "    try:\n"
        "        msrn.load_model('local-dir:' + folder)\n"
        "        out[folder] = [code, 'loaded']\n"
        "    except ValueError as error:\n"
        "        out[folder] = [code, str(error)]\n"
        "print(json.dumps(out))\n"
    )

    def cap_memory():  # 4 GiB of address space: enough for torch, far from reading /dev/zero whole
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    result = subprocess.run(
        [sys.executable, "-c", script, str(saved["image"]), str(devzero), str(fifo), str(big)],
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang, not a speed test
        preexec_fn=cap_memory,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    for folder in (devzero, fifo):
        code, error = outcome[str(folder)]
        assert code == 2 and f"{folder / 'config.json'} is not a regular file" in error
    code, error = outcome[str(big)]
    assert code == 2 and re.search(rf"{re.escape(str(big / 'config.json'))} is \d+ bytes, more than", error)
    errors = [line for line in result.stderr.splitlines() if line.startswith("msrn predict: error: ")]
    assert len(errors) == 3 and "Traceback" not in result.stderr  # one line per `msrn predict`


# ------------------------------------------------------------------------- thresholds all or nothing
def test_predict_and_evaluate_state_the_thresholds_they_used(saved, capsys):
    predictor = msrn.Predictor(f"local-dir:{saved['model']}")
    assert predictor.threshold_source == "model" and predictor.thresholds.tolist() == THRESHOLDS
    assert main(["predict", str(saved["image"]), "--model", f"local-dir:{saved['model']}", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["thresholds"] == "model"
    assert all(found["threshold"] == THRESHOLDS[NAMES.index(found["label"])] for found in record["labels"])

    command = [
        "evaluate",
        str(saved["model"]),
        "--data",
        str(saved["csv"]),
        "--dataset",
        "csv",
        "--workers",
        "0",
    ]
    assert main([*command, "--image-size", str(SIZE), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["thresholds"] == "model" and result["label_thresholds"] == dict(
        zip(NAMES, THRESHOLDS, strict=True)
    )
    assert main([*command, "--image-size", str(SIZE), "--json", "--threshold", "0.25"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["thresholds"] == "override" and set(result["label_thresholds"].values()) == {0.25}


def test_evaluate_refuses_thresholds_it_cannot_apply(saved, tmp_path, capsys):
    """It used to report "thresholds": "model" while scoring at 0.5."""
    folder = _copy(saved, tmp_path)
    path = _edit_config(folder, _cfg("label_thresholds", [0.3, 0.4]))
    command = ["evaluate", str(folder), "--data", str(saved["csv"]), "--dataset", "csv", "--workers", "0"]
    err = _one_line_cli_error(capsys, [*command, "--image-size", str(SIZE), "--json"])
    assert f"{path}: pretrained_cfg.label_thresholds must be 3 probabilities" in err
    with pytest.raises(ValueError, match=r"pretrained_cfg\.label_thresholds"):
        evaluate_checkpoint(folder, saved["csv"], dataset="csv", image_size=SIZE, workers=0)


def test_thresholds_edited_in_memory_are_refused_not_replaced(saved):
    model = msrn.load_model(f"local-dir:{saved['model']}")
    model.pretrained_cfg["label_thresholds"] = "0.3"
    with pytest.raises(ValueError, match=r"pretrained_cfg\['label_thresholds'\] must be 3 probabilities"):
        msrn.Predictor(model)


@pytest.mark.parametrize(
    "info, message",
    [
        ("[]", r"must be a JSON object"),
        ('{"image_size": "x"}', r"must be a JSON object whose image_size is a positive integer"),
    ],
)
def test_bad_checkpoint_json_is_one_line(saved, tmp_path, capsys, info, message):
    folder = _copy(saved, tmp_path)
    (folder / "checkpoint.json").write_text(info)
    command = ["evaluate", str(folder), "--data", str(saved["csv"]), "--dataset", "csv", "--workers", "0"]
    err = _one_line_cli_error(capsys, command)
    assert re.search(rf"{re.escape(str(folder / 'checkpoint.json'))} {message}", err)


# ------------------------------------------------------------------------- the check's own tables
def test_model_arg_types_cover_the_constructor():
    label_inputs = {"self", "label_features", "label_graph", "pretrained_backbone"}
    assert set(MODEL_ARG_TYPES) == set(inspect.signature(msrn.MSRN.__init__).parameters) - label_inputs


def test_known_interpolations_are_timms():
    for name in INTERPOLATIONS:
        str_to_interp_mode(name)
