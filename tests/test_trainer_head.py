"""msrn train --head label_wise (fixed on --resume) and the generated 80-label COCO-format set
(--dataset coco without --data), on tiny runs."""

import json

import numpy as np
import pytest
from tiny_training import TINY as TINY_RUN
from tiny_training import one_thread, tiny_config

from msrn.cli import main as cli_main
from msrn.data import COCODataset, generate_synthetic_coco
from msrn.data.synthetic_coco import SYNTHETIC_COCO_CLASSES
from msrn.engine import load_trained_model, resume_config, train

TINY = {**TINY_RUN, "epochs": 1, "max_steps_per_epoch": 1}

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_label_wise_run_saves_a_label_wise_model_and_keeps_its_head_on_resume(cache_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(cache_dir, run, **{**TINY, "head": "label_wise", "num_query_groups": 4}))
    model, _ = load_trained_model(run / "last")
    assert model.head_type == "label_wise" and model.num_query_groups == 4 and model.num_rows == 4 + 4
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["head"] == "label_wise"
    with pytest.raises(ValueError, match=r"--head label_wise -> paper"):
        resume_config(run, head="paper")
    assert resume_config(run, epochs=2).head == "label_wise"


def test_head_option_on_the_command_line(cache_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--head", "mlp"])
    assert exit_info.value.code == 2 and "--head" in capsys.readouterr().err


def test_generated_coco_set_is_deterministic_and_read_with_80_labels(tmp_path):
    first = generate_synthetic_coco(tmp_path / "a", num_train=30, num_val=8, seed=1)
    again = generate_synthetic_coco(tmp_path / "b", num_train=30, num_val=8, seed=1)
    names = sorted(p.name for p in (first / "train2014").iterdir())
    assert names == sorted(p.name for p in (again / "train2014").iterdir())
    assert (first / "train2014" / names[0]).read_bytes() == (again / "train2014" / names[0]).read_bytes()
    assert generate_synthetic_coco(tmp_path / "a", num_train=30, num_val=8, seed=1) == first  # reused
    with pytest.raises(FileExistsError, match="different data set"):
        generate_synthetic_coco(tmp_path / "a", num_train=31, num_val=8, seed=1)
    train_set, val_set = COCODataset(first, "train"), COCODataset(first, "val")
    assert train_set.classes == sorted(SYNTHETIC_COCO_CLASSES) and len(train_set.classes) == 80
    assert len(train_set) == 30 and len(val_set) == 8
    per_image = np.asarray(train_set.targets).sum(axis=1)
    assert per_image.min() >= 1 and 1.5 < per_image.mean() < 4.5  # COCO has 2.9 labels per image


def test_dataset_coco_without_data_trains_on_the_generated_80_label_set(cache_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(cache_dir, run, **{**TINY, "dataset": "coco", "head": "label_wise"}))
    model, _ = load_trained_model(run / "last")
    assert model.num_classes == 80 and model.get_label_names() == sorted(SYNTHETIC_COCO_CLASSES)
    assert (cache_dir / "synthetic-coco-v1-24-13-s0" / "coco" / "synthetic.json").is_file()
    with pytest.raises(ValueError, match="Without --data only the generated sets"):
        train(tiny_config(cache_dir, tmp_path / "other", **{**TINY, "dataset": "nuswide"}))
