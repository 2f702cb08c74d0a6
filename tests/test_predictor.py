"""msrn.Predictor on a tiny saved model: thresholds saved with the model, overrides, batching, inputs,
errors, and the same probabilities as `msrn predict` and the thresholds of `msrn evaluate`."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import msrn
from msrn import save_pretrained
from msrn.cli import main
from msrn.data import BadImageError
from msrn.engine import evaluate_checkpoint
from msrn.metrics import multilabel_metrics

NAMES = ["cat", "dog", "person", "car"]
TINY = dict(num_classes=4, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)
SIZE = 64
# Far from the probabilities the tiny model gives (checked below), and choosing other labels than 0.5.
THRESHOLDS = [0.99, 0.02, 0.02, 0.99]


def _tiny_model(thresholds=None) -> msrn.MSRN:
    torch.manual_seed(0)
    model = timm.create_model("msrn_resnet18", label_names=NAMES, **TINY).eval()
    with torch.no_grad():  # spread the probabilities: cat high, car low
        model.head.fc2.bias.copy_(torch.tensor([2.0, 0.6, -0.6, -2.0]))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, SIZE, SIZE)}
    if thresholds is not None:
        model.pretrained_cfg["label_thresholds"] = list(thresholds)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    save_pretrained(_tiny_model(THRESHOLDS), root / "fitted")
    save_pretrained(_tiny_model(), root / "plain")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate([(90, 120), (64, 64), (150, 100), (70, 80), (100, 100)]):
        paths.append(images / f"{k}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    labels = ["cat;person", "dog", "cat", "cat", "car"]
    (root / "test.csv").write_text(
        "image,labels\n" + "".join(f"images/{k}.png,{cell}\n" for k, cell in enumerate(labels))
    )
    return dict(root=root, fitted=root / "fitted", plain=root / "plain", paths=paths, csv=root / "test.csv")


def _reference(model, paths) -> np.ndarray:
    """Squash-resize (bilinear), scale to [0, 1], ImageNet-normalise, sigmoid of the logits."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    rows = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255
        x = torch.from_numpy(((pixels - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            rows.append(torch.sigmoid(model(x))[0].numpy())
    return np.stack(rows)


def test_thresholds_survive_save_and_load(saved, tmp_path):
    model = msrn.load_model(f"local-dir:{saved['fitted']}")
    assert model.get_label_thresholds() == THRESHOLDS
    assert msrn.load_model(f"local-dir:{saved['plain']}").get_label_thresholds() is None
    # loaded for other labels, or given new labels: the thresholds described the old ones
    assert timm.create_model(f"local-dir:{saved['fitted']}", num_classes=3).get_label_thresholds() is None
    model.reset_classifier(4)
    assert model.get_label_thresholds() is None
    model.pretrained_cfg["label_thresholds"] = [0.5, 0.5]
    with pytest.raises(ValueError, match="must be 4 probabilities in"):
        model.get_label_thresholds()


def test_the_models_thresholds_are_used_unless_overridden(saved):
    fitted = msrn.Predictor(f"local-dir:{saved['fitted']}", device="cpu")
    assert fitted.threshold_source == "model" and fitted.thresholds.tolist() == THRESHOLDS
    probabilities = fitted.probabilities(saved["paths"])
    assert probabilities.shape == (5, 4) and probabilities.dtype == np.float32
    # no probability is near a threshold, so the choices below do not hang on rounding
    for threshold in (*THRESHOLDS, 0.5):
        assert np.abs(probabilities - threshold).min() > 1e-3

    def expected(thresholds, top_k=None):
        return [
            [NAMES[k] for k in np.argsort(-row) if row[k] >= thresholds[k]][:top_k] for row in probabilities
        ]

    assert fitted.labels(saved["paths"]) == expected(THRESHOLDS)
    assert fitted.labels(saved["paths"], top_k=1) == expected(THRESHOLDS, top_k=1)
    overridden = msrn.Predictor(f"local-dir:{saved['fitted']}", threshold=0.5)
    assert overridden.threshold_source == "override"
    assert overridden.labels(saved["paths"]) == expected([0.5] * 4)
    assert expected([0.5] * 4) != expected(THRESHOLDS)  # the two really differ
    per_label = msrn.Predictor(f"local-dir:{saved['plain']}", threshold=[0.1, 0.9, 0.9, 0.1])
    assert per_label.labels(saved["paths"]) == expected([0.1, 0.9, 0.9, 0.1])
    plain = msrn.Predictor(f"local-dir:{saved['plain']}")
    assert plain.threshold_source == "default" and plain.labels(saved["paths"]) == expected([0.5] * 4)


def test_probabilities_match_the_reference_preprocessing_and_predict_names_them(saved):
    model = _tiny_model()
    predictor = msrn.Predictor(model)
    probabilities = predictor.probabilities(saved["paths"])
    np.testing.assert_allclose(probabilities, _reference(model, saved["paths"]), atol=1e-4)
    predicted = predictor.predict(saved["paths"][:2])
    assert [list(d) for d in predicted] == [NAMES, NAMES]
    np.testing.assert_allclose([list(d.values()) for d in predicted], probabilities[:2], rtol=1e-6)


def test_batching_equals_one_by_one(saved):
    batched = msrn.Predictor(f"local-dir:{saved['plain']}", batch_size=2).probabilities(saved["paths"])
    single = msrn.Predictor(f"local-dir:{saved['plain']}", batch_size=1)
    one_by_one = np.concatenate([single.probabilities(path) for path in saved["paths"]])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    workers = msrn.Predictor(f"local-dir:{saved['plain']}", batch_size=3, workers=1)
    np.testing.assert_allclose(workers.probabilities(saved["paths"]), batched, atol=1e-6)


def test_paths_pil_images_and_arrays_give_the_same_probabilities(saved):
    predictor = msrn.Predictor(f"local-dir:{saved['plain']}")
    path = saved["paths"][0]
    with Image.open(path) as image:
        pil = image.copy()
    array = np.asarray(pil)
    from_path = predictor.probabilities(path)  # one image: a list of one
    assert from_path.shape == (1, 4)
    for same in (str(path), pil, array, [array], (pil,)):
        np.testing.assert_allclose(predictor.probabilities(same), from_path, atol=1e-6)
    gray = np.asarray(pil.convert("L"))
    np.testing.assert_allclose(
        predictor.probabilities(gray), predictor.probabilities(pil.convert("L")), atol=1e-6
    )
    assert predictor.labels([]) == [] and predictor.probabilities([]).shape == (0, 4)


def test_cli_and_predictor_give_identical_probabilities(saved, capsys):
    image_args = [str(p) for p in saved["paths"]]
    predictor = msrn.Predictor(f"local-dir:{saved['fitted']}", batch_size=2)
    probabilities = predictor.probabilities(saved["paths"])
    model_spec = f"local-dir:{saved['fitted']}"
    assert main(["predict", *image_args, "--model", model_spec, "--json", "--threshold", "0.001"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["thresholds"] for r in records] == ["override"] * 5
    for record, row in zip(records, probabilities, strict=True):
        got = {entry["label"]: entry["probability"] for entry in record["labels"]}
        np.testing.assert_allclose([got[name] for name in NAMES], row, atol=1e-6)
    # without --threshold: the model's thresholds, named in the output
    assert main(["predict", *image_args, "--model", model_spec, "--json", "--batch-size", "3"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["thresholds"] for r in records] == ["model"] * 5
    assert [[e["label"] for e in r["labels"]] for r in records] == predictor.labels(saved["paths"])
    for record in records:
        assert all(
            entry["threshold"] == THRESHOLDS[NAMES.index(entry["label"])] for entry in record["labels"]
        )
    assert main(["predict", image_args[0], "--model", model_spec, "--threshold", "0.9999"]) == 0
    assert "(no label >= 0.9999)" in capsys.readouterr().out


def test_bad_inputs_raise_clear_errors(saved, tmp_path):
    predictor = msrn.Predictor(f"local-dir:{saved['plain']}")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(BadImageError, match="notes.jpg") as error:
        predictor.labels([saved["paths"][0], bad])
    assert error.value.path == str(bad)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predictor.predict([saved["paths"][0], tmp_path / "missing.jpg"])
    with pytest.raises(IsADirectoryError, match="find_image_files"):
        predictor.predict(tmp_path)
    with pytest.raises(TypeError, match="a preprocessed tensor goes to predictor.model"):
        predictor.predict([torch.zeros(3, SIZE, SIZE)])
    with pytest.raises(TypeError, match="or a list of them"):
        predictor.predict(42)
    with pytest.raises(ValueError, match="must be uint8"):
        predictor.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="top_k must be"):
        predictor.labels(saved["paths"][0], top_k=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(threshold=1.0), ValueError, "between 0 and 1"),
        (dict(threshold=[0.5, 0.5]), ValueError, "4 probabilities in"),
        (dict(batch_size=0), ValueError, "batch_size must be"),
        (dict(workers=-1), ValueError, "workers must be"),
        (dict(amp="fp8"), ValueError, "amp must be"),
        (dict(amp="fp16", device="cpu"), ValueError, "needs a CUDA device"),
        (dict(img_size=16), ValueError, "too small for this backbone"),
    ],
)
def test_bad_settings_are_refused(saved, kwargs, error, message):
    with pytest.raises(error, match=message):
        msrn.Predictor(f"local-dir:{saved['plain']}", **kwargs)


def test_bad_models_are_refused(tmp_path):
    with pytest.raises(TypeError, match="must be an msrn.MSRN or a model spec"):
        msrn.Predictor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add --checkpoint"):
        msrn.Predictor("msrn_resnet18")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        msrn.Predictor(f"local-dir:{tmp_path / 'nowhere'}")


def test_evaluate_uses_the_models_thresholds_unless_given_one(saved, capsys):
    predictor = msrn.Predictor(f"local-dir:{saved['fitted']}")
    scores = predictor.probabilities(saved["paths"])
    targets = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    at_model = multilabel_metrics(scores, targets, threshold=np.array(THRESHOLDS), top_k=3)
    at_half = multilabel_metrics(scores, targets, threshold=0.5, top_k=3)
    assert at_model["CF1"] != pytest.approx(at_half["CF1"])
    common = dict(dataset="csv", batch_size=2, workers=0)
    metrics, _, classes = evaluate_checkpoint(saved["fitted"], saved["csv"], **common)
    assert classes == NAMES
    assert metrics == pytest.approx(at_model, abs=1e-3)
    metrics, _, _ = evaluate_checkpoint(saved["fitted"], saved["csv"], threshold=0.5, **common)
    assert metrics == pytest.approx(at_half, abs=1e-3)

    command = ["evaluate", str(saved["fitted"]), "--data", str(saved["csv"]), "--dataset", "csv"]
    assert main([*command, "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["thresholds"] == "model" and result["metrics"]["CF1"] == pytest.approx(at_model["CF1"])
    assert main([*command, "--workers", "0", "--threshold", "0.5"]) == 0
    assert capsys.readouterr().out.startswith("CP, CR, F1 at --threshold 0.5\n")
    plain = ["evaluate", str(saved["plain"]), "--data", str(saved["csv"]), "--dataset", "csv"]
    assert main([*plain, "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["thresholds"] == "default"


def test_per_class_thresholds_in_the_metrics():
    scores = np.array([[0.6, 0.2], [0.3, 0.7]])
    targets = np.array([[1, 1], [0, 1]])
    metrics = multilabel_metrics(scores, targets, threshold=[0.5, 0.1])
    assert metrics["OR"] == pytest.approx(100.0) and metrics["CP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one per class"):
        multilabel_metrics(scores, targets, threshold=[0.5, 0.5, 0.5])
