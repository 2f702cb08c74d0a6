"""The trainer uses GloVe label features whenever it can, says which in the log, and reads the two
benchmarks added with the built-in label sets (NUS-WIDE, Apparel)."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_training import TINY as TINY_RUN
from tiny_training import one_thread, tiny_config

import msrn.labels
from msrn.cli import main as cli_main
from msrn.data import apparel_authors_split, create_dataset
from msrn.engine import cpu_config, load_trained_model, train
from msrn.engine.builders import _label_features, build_datasets

TINY = {**TINY_RUN, "epochs": 1, "max_steps_per_epoch": 1}

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(cache_dir, output_dir, **overrides):
    return tiny_config(cache_dir, output_dir, **{**TINY, **overrides})


def test_default_run_uses_the_builtin_glove_vectors_and_logs_them(cache_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="msrn.engine"):
        train(_config(cache_dir, tmp_path / "run"))
    assert (
        "label features: the GloVe vectors of the built-in 'voc2007' label set; label graph: " in caplog.text
    )
    assert "edges at t=0.4 from the training labels" in caplog.text
    model, _ = load_trained_model(tmp_path / "run" / "last")
    assert not isinstance(model.label_features, torch.nn.Parameter)
    assert torch.equal(model.label_features, msrn.labels.load("voc2007").features)
    assert model.variant == "official"


def test_learnable_features_on_request_with_a_warning(cache_dir, tmp_path, caplog):
    expected = r"label features are learnable, not word vectors as in the paper \(--label-features learnable"
    with caplog.at_level(logging.INFO, logger="msrn.engine"), pytest.warns(msrn.MSRNWarning, match=expected):
        train(_config(cache_dir, tmp_path / "run", label_features="learnable"))
    assert "label features: learnable (--label-features learnable)" in caplog.text
    assert "The label features are learnable" in caplog.text  # the warning is logged too
    model, _ = load_trained_model(tmp_path / "run" / "last")
    assert isinstance(model.label_features, torch.nn.Parameter) and model.label_features.shape == (20, 32)


def test_feature_choice_rule(tmp_path):
    features, source = _label_features(cpu_config(), ["zebra", "cat", "dog"])  # all COCO names, not VOC's
    coco = msrn.labels.load("coco2014")
    assert "'coco2014'" in source
    assert torch.equal(features, coco.features[[coco.names.index(n) for n in ("zebra", "cat", "dog")]])
    features, source = _label_features(cpu_config(), ["cat", "unicorn"])
    assert features is None and source.startswith("learnable: no built-in label set has every label name")
    npz = tmp_path / "mine.npz"
    np.savez(npz, names=np.array(["cat", "unicorn"]), glove=np.ones((2, 5), dtype=np.float32))
    features, source = _label_features(cpu_config(glove=str(npz)), ["cat", "unicorn"])
    assert features.shape == (2, 5) and str(npz) in source
    with pytest.raises(ValueError, match="drop it or --label-features learnable"):
        _label_features(cpu_config(glove=str(npz), label_features="learnable"), ["cat"])


def test_paper_variant_lambda_reaches_the_model(cache_dir, tmp_path):
    train(_config(cache_dir, tmp_path / "run", variant="paper", compactness_weight=1e-6))
    model, _ = load_trained_model(tmp_path / "run" / "last")
    assert model.variant == "paper" and model.compactness_weight == 1e-6


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (30, 90, 200)).save(path)


def test_apparel_and_nuswide_through_the_trainer_and_evaluate(tmp_path, caplog):
    table = apparel_authors_split()
    apparel = tmp_path / "apparel"
    for split in ("trainval", "test"):
        for image, labels, _ in [row for row in table if row[2] == split][:6]:
            _image(apparel / "_".join(labels) / image)
    config = cpu_config(dataset="apparel", data=str(apparel), skip_missing_images=True, image_size=64)
    with caplog.at_level(logging.WARNING, logger="msrn.data"):
        train_set, test_set = build_datasets(config)
    assert (
        len(train_set) == 6
        and len(test_set) == 6
        and train_set.classes == list(msrn.labels.load("apparel").names)
    )
    assert "5686 of 5692 listed images are not on disk; leaving them out" in caplog.text
    with pytest.raises(FileNotFoundError, match="--skip-missing-images"):
        build_datasets(cpu_config(dataset="apparel", data=str(apparel)))
    output = tmp_path / "run"
    train(
        cpu_config(
            **{
                **TINY,
                "dataset": "apparel",
                "data": str(apparel),
                "skip_missing_images": True,
                "output_dir": str(output),
            }
        )
    )
    assert (
        cli_main(
            [
                "evaluate",
                str(output / "last"),
                "--dataset",
                "apparel",
                "--data",
                str(apparel),
                "--skip-missing-images",
                "--workers",
                "0",
                "--json",
            ]
        )
        == 0
    )

    root = tmp_path / "NUS-WIDE"
    (root / "ImageList").mkdir(parents=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    for split in ("Train", "Test"):
        (root / "ImageList" / f"{split}Imagelist.txt").write_text("a\\1.jpg\nb\\2.jpg\n")
        for concept in msrn.labels.load("nuswide").names:
            (labels_dir / f"Labels_{concept}_{split}.txt").write_text(
                "1\n0\n" if concept in ("sky", "clouds") else "0\n1\n"
            )
        _image(root / "Flickr" / "a" / "1.jpg")
    train_set = create_dataset("nuswide", root, is_training=True, skip_missing_images=True)
    assert len(train_set) == 1 and len(train_set.missing_images) == 1
    assert create_dataset("nuswide", root, skip_missing_images=True).split == "test"
