"""benchmarks/bench_eval.py on a tiny size: every phase runs in its own process and reports its time
and memory (the figures in docs/performance.md come from the full size, which takes minutes)."""

import importlib.util
import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_phase_reports(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_eval", REPO_ROOT / "benchmarks" / "bench_eval.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summary = bench.main(
        ["--images", "50", "--labels", "7", "--labels-per-image", "2", "--json", str(tmp_path / "r.json")]
    )
    assert [result["phase"] for result in summary["results"]] == ["collect", "metrics", "thresholds"]
    for result in summary["results"]:
        assert "failed" not in result, result
        assert result["seconds"] >= 0 and result["peak_above_baseline_mib"] >= 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 50
    assert json.loads((tmp_path / "r.json").read_text())["labels"] == 7
