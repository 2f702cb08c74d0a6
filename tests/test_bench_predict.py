"""benchmarks/bench_predict.py: its data, its three workers and its summary (tiny sizes; the figures come
from running the script)."""

import importlib.util
import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_MODEL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=16)


def load_bench():
    path = REPO_ROOT / "benchmarks" / "bench_predict.py"
    spec = importlib.util.spec_from_file_location("bench_predict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loader_of(module_name, name):
    import importlib

    return getattr(importlib.import_module(module_name), name)


def test_workers_label_every_image_and_time_the_loop_apart_from_the_start_up(tmp_path, capsys):
    bench = load_bench()
    rows = bench.write_images(tmp_path / "images", 3, 64)
    assert len(rows) == 3 and (tmp_path / "images" / "labels.csv").read_text().startswith("image,labels\n")
    bench.write_model(tmp_path / "model", 64, "msrn_resnet18", **TINY_MODEL)
    hooked = [("msrn.predictor", "load_model"), ("msrn.engine.evaluate", "load_trained_model")]
    loaders_before = [loader_of(*place) for place in hooked]
    for case in bench.CASES:
        bench.main(
            [
                "--worker",
                case,
                "--folder",
                str(tmp_path / "images"),
                "--model-dir",
                str(tmp_path / "model"),
                "--images",
                "3",
                "--image-size",
                "64",
                "--batch",
                "2",
                "--workers",
                "0",
                "--baseline",
                "resnet18",
            ]
        )
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["case"] == case and report["images"] == 3
        assert report["startup_s"] > 0 and report["loop_s"] > 0 and report["images_per_s"] > 0
    # The timing hook is removed again.
    assert [loader_of(*place) for place in hooked] == loaders_before


def test_summary_alternates_the_cases_and_keeps_its_keys(monkeypatch, capsys):
    bench = load_bench()
    calls = []

    def fake_case(name, args):
        calls.append(name)
        speed = {"resnet_loop": 2.0, "predict": 1.5, "evaluate": 1.8}[name]
        return {
            "case": name,
            "images": args.images,
            "startup_s": 1.0,
            "loop_s": args.images / speed,
            "images_per_s": speed,
        }

    monkeypatch.setattr(bench, "_run_case", fake_case)
    args = bench.parse_args(["--images", "6", "--rounds", "2"])
    summary = bench.run_all(args)
    assert calls == list(bench.CASES) + list(bench.CASES)[::-1]
    assert summary["predict_vs_resnet"] == 0.75 and summary["evaluate_vs_resnet"] == 0.9
    assert {"quiet", "load_before", "load_after", "config"} <= set(summary)
    assert "best img/s" in capsys.readouterr().out
