"""benchmarks/compare_recipes.py trains each recipe per seed and summarises the best-on-validation
epochs (tiny runs here; the real figures in docs/training.md come from running the script)."""

import importlib.util
import json
import pathlib

import pytest
from tiny_training import TINY, one_thread

import msrn.engine

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def load_script():
    path = REPO_ROOT / "benchmarks" / "compare_recipes.py"
    spec = importlib.util.spec_from_file_location("compare_recipes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_runs(tmp_path, monkeypatch) -> list:
    """The script's runs at tiny sizes (its CPU profile with TINY widths, 50 generated images); the
    list collects each run's config."""
    seen = []
    real_cpu_config = msrn.engine.cpu_config

    def tiny_cpu_config(**settings):
        config = real_cpu_config(
            **{**settings, **TINY, "cache_dir": str(tmp_path / "cache"), "synthetic_trainval": 50}
        )
        seen.append(config)
        return config

    monkeypatch.setattr(msrn.engine, "cpu_config", tiny_cpu_config)
    return seen


def test_each_recipe_trains_with_a_validation_split_and_reports_its_best_epoch(tmp_path, tiny_runs, capsys):
    script, seen = load_script(), tiny_runs
    out = tmp_path / "runs.jsonl"
    assert script.main(["--recipes", "bce", "asl+ema", "--seeds", "0", "1", "--out", str(out)]) == 0
    assert [(c.loss, c.ema, c.seed, c.val_fraction) for c in seen] == [
        ("bce", None, 0, 0.1),
        ("asl", 0.999, 0, 0.1),
        ("bce", None, 1, 0.1),
        ("asl", 0.999, 1, 0.1),
    ]
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(run["recipe"], run["seed"]) for run in runs] == [
        ("bce", 0),
        ("asl+ema", 0),
        ("bce", 1),
        ("asl+ema", 1),
    ]
    assert all(1 <= run["best_epoch"] <= TINY["epochs"] for run in runs)
    assert all(0 <= run[name] <= 100 for run in runs for name in script.FIGURES)
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])["summary"]
    bce = [run["mAP"] for run in runs if run["recipe"] == "bce"]
    assert summary["bce"]["mAP"]["mean"] == pytest.approx(sum(bce) / 2, abs=0.01)
    assert summary["bce"]["mAP"]["min"] == min(bce) and summary["bce"]["mAP"]["max"] == max(bce)
    assert any(line.startswith("| asl+ema | 2 | ") for line in lines)


def test_heads_as_a_second_dimension_on_the_80_label_set(tiny_runs, capsys):
    script, seen = load_script(), tiny_runs
    assert (
        script.main(
            ["--recipes", "bce", "--heads", "paper", "label_wise", "--dataset", "coco", "--seeds", "0"]
        )
        == 0
    )
    assert [(c.head, c.dataset, c.loss) for c in seen] == [
        ("paper", "coco", "bce"),
        ("label_wise", "coco", "bce"),
    ]
    lines = capsys.readouterr().out.strip().splitlines()
    runs = [json.loads(line) for line in lines[:2]]
    assert [run["recipe"] for run in runs] == ["bce", "bce+label_wise"] and runs[0]["dataset"] == "coco"
    assert set(json.loads(lines[-1])["summary"]) == {"bce", "bce+label_wise"}
    assert any(line.startswith("| bce+label_wise | 1 | ") for line in lines)


def test_summary_gives_mean_sample_spread_and_range():
    script = load_script()
    runs = [
        {"recipe": "bce", "seed": seed, **{name: value for name in script.FIGURES}}
        for seed, value in enumerate((90.0, 92.0, 94.0))
    ]
    summary = script.summarise(runs)
    assert summary["bce"]["mAP"] == {"mean": 92.0, "std": 2.0, "min": 90.0, "max": 94.0}
    assert "| bce | 3 | 92.00 ± 2.00 (90.00-94.00) |" in script.table(summary, [0, 1, 2])
