"""`msrn predict` end to end on a tiny saved model, against probabilities computed here."""

import json
import pathlib

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import msrn  # noqa: F401  registers the architectures
from msrn import save_pretrained
from msrn.cli import main
from msrn.models import infer_model_args

NAMES = ["cat", "dog", "person", "car"]
TINY = dict(num_classes=4, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)

SIZE = 128
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("msrn_resnet18", label_names=NAMES, **TINY).eval()
    with torch.no_grad():  # spread the probabilities so thresholds and top-k select different labels
        model.head.fc2.bias.copy_(torch.tensor([2.0, 0.6, -0.6, -2.0]))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model folder in timm's layout, a bare safetensors checkpoint, and a folder of images."""
    root = tmp_path_factory.mktemp("predict")
    model = _tiny_model()
    folder = root / "model"
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}  # predict's default size
    save_pretrained(model, folder)
    checkpoint = root / "weights.safetensors"
    save_file(model.state_dict(), str(checkpoint), metadata={"label_names": json.dumps(NAMES)})
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (90, 120), "b.png": (128, 128), "sub/c.jpg": (150, 100)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    return dict(model=model, folder=folder, checkpoint=checkpoint, images=images, root=root)


def _expected_probabilities(model, path: pathlib.Path) -> np.ndarray:
    """Squash-resize to the input size (bilinear), scale to [0, 1], normalise, sigmoid of the logits."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255
    x = torch.from_numpy(((pixels - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        return torch.sigmoid(model(x))[0].numpy()


def _json_lines(text: str) -> dict:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {pathlib.Path(r["image"]).name: r["labels"] for r in records}


def test_json_output_matches_reference(saved, capsys):
    code = main(
        [
            "predict",
            str(saved["images"]),
            "--model",
            f"local-dir:{saved['folder']}",
            "--json",
            "--threshold",
            "0.3",
            "--batch-size",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    records = _json_lines(out)
    assert sorted(records) == ["a.jpg", "b.png", "c.jpg"]
    for path in [saved["images"] / "a.jpg", saved["images"] / "b.png", saved["images"] / "sub" / "c.jpg"]:
        probabilities = _expected_probabilities(saved["model"], path)
        order = np.argsort(-probabilities)
        expected = [(NAMES[k], probabilities[k]) for k in order if probabilities[k] >= 0.3]
        got = records[path.name]
        assert [r["label"] for r in got] == [name for name, _ in expected]
        np.testing.assert_allclose([r["probability"] for r in got], [p for _, p in expected], atol=1e-4)
        assert len(got) >= 2  # the spread biases make cat and dog pass 0.3


def test_top_k_and_threshold_table(saved, capsys):
    image = saved["images"] / "a.jpg"
    probabilities = _expected_probabilities(saved["model"], image)
    code = main(
        [
            "predict",
            str(image),
            "--model",
            f"local-dir:{saved['folder']}",
            "--top-k",
            "1",
            "--threshold",
            "0.1",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    best = int(np.argmax(probabilities))
    assert lines[0].split() == ["image", "label", "probability"]
    assert len(lines) == 2 and lines[1].split() == [str(image), NAMES[best], f"{probabilities[best]:.4f}"]
    # nothing reaches 0.99: the table says so
    main(["predict", str(image), "--model", f"local-dir:{saved['folder']}", "--threshold", "0.99"])
    assert "(no label >= 0.99)" in capsys.readouterr().out


def test_name_with_checkpoint_gives_the_same_result(saved, capsys):
    image = str(saved["images"] / "b.png")
    main(["predict", image, "--model", f"local-dir:{saved['folder']}", "--json", "--threshold", "0.2"])
    from_folder = _json_lines(capsys.readouterr().out)
    code = main(
        [
            "predict",
            image,
            "--model",
            "msrn_resnet18",
            "--checkpoint",
            str(saved["checkpoint"]),
            "--img-size",
            str(SIZE),
            "--json",
            "--threshold",
            "0.2",
        ]
    )
    assert code == 0
    assert _json_lines(capsys.readouterr().out) == from_folder  # label names from the safetensors metadata


@pytest.mark.parametrize(
    "args",
    [
        dict(TINY),
        dict(TINY, variant="paper", num_groups=3, num_branches=2),
        dict(TINY, embeddings="label"),
        dict(TINY, embeddings="group"),
        dict(TINY, embeddings="none"),
    ],
)
def test_infer_model_args_round_trip(args):
    model = timm.create_model("msrn_resnet18", **args)
    inferred = infer_model_args(model.state_dict())
    rebuilt = timm.create_model("msrn_resnet18", **inferred)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert inferred["num_classes"] == args["num_classes"]
    assert inferred["embeddings"] == args.get("embeddings", "both")
    assert inferred["variant"] == args.get("variant", "official")


def test_attention_pictures(saved, tmp_path, capsys):
    out_dir = tmp_path / "maps"
    code = main(
        [
            "predict",
            str(saved["images"] / "a.jpg"),
            str(saved["images"] / "sub" / "c.jpg"),
            "--model",
            f"local-dir:{saved['folder']}",
            "--json",
            "--threshold",
            "0.3",
            "--attention",
            str(out_dir),
        ]
    )
    records = _json_lines(capsys.readouterr().out)
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "c.png"]
    for stem in ("a", "c"):
        picture = Image.open(out_dir / f"{stem}.png")
        rows = len(records[f"{stem}.jpg"])
        # grid of attention_grid at cell 224: 4 columns (image + 3 branches), one row per label
        assert picture.size == (4 * 228 + 4, 22 + rows * (22 + 224 + 4) + 4)


def test_unreadable_file_is_reported_and_skipped(saved, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    good = saved["images"] / "b.png"
    code = main(["predict", str(bad), str(good), "--model", f"local-dir:{saved['folder']}", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert str(bad) in captured.err and "Traceback" not in captured.err
    assert list(_json_lines(captured.out)) == ["b.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "1.5"], "--threshold must be between 0 and 1"),
        (["--threshold", "0"], "--threshold must be between 0 and 1"),
        (["--top-k", "0"], "--top-k must be at least 1"),
        (["--device", "abacus"], "is not a torch device"),
        (["--img-size", "32"], "(img_size, --img-size) is too small"),
    ],
)
def test_bad_options(saved, capsys, extra, message):
    code = main(["predict", str(saved["images"]), "--model", f"local-dir:{saved['folder']}", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_paths_and_models(saved, tmp_path, capsys):
    image = str(saved["images"] / "a.jpg")
    folder = f"local-dir:{saved['folder']}"
    cases = [
        (["predict", str(tmp_path / "missing.jpg"), "--model", folder], "does not exist"),
        (["predict", image, "--model", f"local-dir:{tmp_path / 'nowhere'}"], "does not exist"),
        (["predict", image, "--model", f"local-dir:{tmp_path}"], "has no config.json"),
        (["predict", image, "--model", "resnet50"], "is not an MSRN architecture"),
        (["predict", image, "--model", "msrn_resnet18"], "add --checkpoint"),
        (
            ["predict", image, "--model", "msrn_resnet18", "--checkpoint", str(tmp_path / "w.pth")],
            "does not exist",
        ),
        (
            ["predict", image, "--model", "msrn_resnet50", "--checkpoint", str(saved["checkpoint"])],
            "does not fit the model",
        ),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["predict", str(tmp_path / "empty"), "--model", folder], "no image files"))
    for argv, message in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err and "Traceback" not in err, (argv, err)


def test_pickled_checkpoint_is_refused(saved, tmp_path, capsys):
    pickled = tmp_path / "weights.pth"
    torch.save(saved["model"].state_dict(), pickled)
    code = main(
        ["predict", str(saved["images"] / "a.jpg"), "--model", "msrn_resnet18", "--checkpoint", str(pickled)]
    )
    assert code == 2 and "only safetensors" in capsys.readouterr().err


def test_saved_model_that_is_not_msrn_is_refused(saved, tmp_path, capsys):
    from timm.models import save_for_hf

    folder = tmp_path / "resnet"
    save_for_hf(timm.create_model("resnet18", num_classes=2), folder, safe_serialization=True)
    code = main(["predict", str(saved["images"] / "a.jpg"), "--model", f"local-dir:{folder}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert (
        f"{folder / 'config.json'} names the architecture 'resnet18', a timm model, not an MSRN model" in err
    )
