"""benchmarks/bench_predict.py: its data, its workers and its summary (tiny sizes; the figures come from
running the script)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_MODEL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=16)


def load_bench():
    path = REPO_ROOT / "benchmarks" / "bench_predict.py"
    spec = importlib.util.spec_from_file_location("bench_predict", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hooked_functions():
    import msrn.engine.evaluate
    import msrn.predictor

    return [
        msrn.predictor.create_backend,
        msrn.engine.evaluate.create_backend,
        msrn.predictor.Predictor.iter_batches,
    ]


def test_workers_label_every_image_and_time_the_loop_and_the_model_apart_from_the_start_up(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    bench = load_bench()
    rows = bench.write_images(tmp_path / "images", 3, 64)
    assert len(rows) == 3 and (tmp_path / "images" / "labels.csv").read_text().startswith("image,labels\n")
    bench.write_model(tmp_path / "model", 64, "msrn_resnet18", **TINY_MODEL)
    hooks_before = hooked_functions()
    probabilities = {}
    for case in bench.CASES:
        saved = tmp_path / f"{case}.npy"
        argv = [
            "--worker",
            case,
            "--folder",
            str(tmp_path / "images"),
            "--model-dir",
            str(tmp_path / "model"),
        ]
        argv += [
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
        bench.main([*argv, "--save-probabilities", str(saved)])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["case"] == case
        assert report["images"] == (2 if case == "torch_variants" else 3)
        assert report["startup_s"] > 0 and report["loop_s"] > 0 and report["images_per_s"] > 0
        assert 0 < report["model_s"] <= report["loop_s"] and report["model_images_per_s"] > 0
        if case in bench.PREDICT_CASES:
            assert (report["backend"], report["precision"]) == bench.PREDICT_CASES[case]
            assert report["thresholds"] == [0.5] * 20
            probabilities[case] = np.load(saved)
            assert probabilities[case].shape == (3, 20)
        if case == "torch_variants":
            assert set(report["variants"]) == {
                "no_grad",
                "inference_mode",
                "folded_batchnorm",
                "channels_last",
                "both",
            }
    # The timing hooks are removed again.
    assert hooked_functions() == hooks_before
    agreement = bench.compare(probabilities, [0.5] * 20)
    assert agreement["predict_torch"] == {"max_abs_dp": 0.0, "label_agreement": 1.0}
    assert agreement["predict_onnxruntime"]["max_abs_dp"] <= 1e-4
    assert agreement["predict_int8"]["max_abs_dp"] < 0.1


def test_summary_alternates_the_cases_and_reports_the_best_predict_ratio(monkeypatch, tmp_path, capsys):
    bench = load_bench()
    calls = []
    speeds = {
        "resnet_loop": 2.0,
        "predict_torch": 1.5,
        "predict_onnxruntime": 2.6,
        "predict_int8": 6.0,
        "evaluate": 1.8,
        "torch_variants": 1.0,
    }
    reference = np.full((6, 20), 0.4, dtype=np.float32)
    shifted = {"predict_torch": 0.0, "predict_onnxruntime": 1e-5, "predict_int8": 0.2}

    def fake_case(name, args, probabilities=None):
        calls.append(name)
        if probabilities is not None:
            np.save(probabilities, reference + shifted[name])
        report = {
            "case": name,
            "images": min(args.images, args.batch) if name == "torch_variants" else args.images,
            "startup_s": 1.0,
            "loop_s": args.images / speeds[name],
            "images_per_s": speeds[name],
            "model_images_per_s": speeds[name] * 1.1,
        }
        if name in bench.PREDICT_CASES:
            report["thresholds"] = [0.5] * 20
        if name == "torch_variants":
            report["variants"] = {"no_grad": 1.0, "both": 1.2}
        return report

    monkeypatch.setattr(bench, "_run_case", fake_case)
    monkeypatch.setattr(bench, "_prepare", lambda args, cases: 12.0)
    args = bench.parse_args(["--images", "6", "--rounds", "2"])
    (tmp_path / "images").mkdir()
    args.folder = tmp_path / "images"
    summary = bench.run_all(args)
    cases = bench.available_cases(args)
    assert calls == cases + cases[::-1]
    # The fastest fp32 predict backend (int8 does not count) over the timm loop.
    assert summary["best_predict_ratio"] == 1.3 and summary["best_predict_backend"] == "onnxruntime"
    assert summary["predict_torch"]["vs_timm"] == 0.75 and summary["evaluate"]["vs_timm"] == 0.9
    assert summary["predict_onnxruntime"]["max_abs_dp"] == pytest.approx(1e-5, rel=0.05)
    assert summary["predict_onnxruntime"]["label_agreement"] == 1.0
    assert summary["predict_int8"]["label_agreement"] == 0.0  # 0.4 + 0.2 crosses 0.5 everywhere
    assert summary["torch_variants"]["model_images_per_s"] == {"no_grad": 1.0, "both": 1.2}
    assert summary["prepare_s"] == 12.0
    assert {"quiet", "load_before", "load_after", "config", "machine"} <= set(summary)
    assert "cpu_flags" in summary["machine"] and "hypervisor" in summary["machine"]
    out = capsys.readouterr().out
    assert "best img/s" in out and "max |dp|" in out and "machine:" in out


def test_options_are_checked():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--cases", "predict_torch"])  # no baseline to divide by
    with pytest.raises(SystemExit):
        bench.parse_args(["--model", "/nonexistent"])
