"""benchmarks/bench_labels.py runs its configurations (the CPU profile's small model, 64 px, n in {5, 50}
here; the real figures come from running the script at 448 px on a quiet machine)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

TINY = ["--profile", "cpu", "--batch", "2", "--size", "64", "--steps", "1", "--warmup", "0"]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "bench_labels", REPO_ROOT / "benchmarks" / "bench_labels.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["resnet_linear", "resnet_mldecoder"])
def test_workers_train_evaluate_and_count_like_the_parent(model, capsys):
    script = load_script()
    assert script.main(["--worker", f"{model}:5", *TINY]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == model and report["labels"] == 5
    assert len(report["train_s"]) == 1 and len(report["eval_s"]) == 1 and report["peak_mib"] > 0
    assert report["parameters"] == script.count_parameters(model, 5, "cpu")  # the meta-device count


def test_whole_run_prints_a_table_a_json_line_and_skips_what_does_not_fit(tmp_path):
    out = tmp_path / "labels.json"
    # 0.03 GiB: the paper head's 16 bytes per parameter fit at n = 5 (1.2 M parameters), not at n = 50.
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_labels.py"),
            "--labels",
            "5,50",
            "--models",
            "msrn_paper,msrn_label_wise",
            "--memory-gib",
            "0.03",
            "--json",
            str(out),
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())
    rows = {(r["model"], r["labels"]): r for r in summary["results"]}
    assert set(rows) == {(m, n) for m in ("msrn_paper", "msrn_label_wise") for n in (5, 50)}
    assert "does not fit" in rows["msrn_paper", 50]["skipped"] and "train_s" not in rows["msrn_paper", 50]
    for key in (("msrn_paper", 5), ("msrn_label_wise", 5), ("msrn_label_wise", 50)):
        assert rows[key]["train_s"][0] > 0 and rows[key]["eval_s"][0] > 0 and rows[key]["peak_mib"] > 0
    # The label-wise head's cost per label is constant: 256 + 1 classifier and 64 feature numbers.
    assert rows["msrn_label_wise", 50]["parameters"] - rows["msrn_label_wise", 5]["parameters"] == 45 * 321
    assert "does not fit" in result.stdout and "peak MiB" in result.stdout
    assert summary["config"]["labels"] == [5, 50] and "quiet" in summary


@pytest.mark.parametrize("option", [["--labels", "20,x"], ["--labels", "0"], ["--models", "resnet"]])
def test_bad_options_are_refused(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script().parse_args(option)
    assert exit_info.value.code == 2
