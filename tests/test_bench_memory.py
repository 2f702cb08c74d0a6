"""benchmarks/bench_memory.py: how it summarises a resident-memory series, and its options (the
figures come from running the script: 500 training steps are too long for the test suite)."""

import importlib.util
import pathlib
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_bench_memory():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "bench_memory", REPO_ROOT / "benchmarks" / "bench_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_flat_series_after_warm_up_is_bounded_and_a_growing_one_is_not():
    bench = load_bench_memory()
    steps = list(range(1, 501))
    flat = [500.0 + min(step, 20) * 10 for step in steps]  # grows during warm-up, then stays
    summary = bench.growth(steps, flat)
    assert summary["rss_warm_mib"] == 700 and summary["rss_end_mib"] == 700 and summary["rss_max_mib"] == 700
    assert summary["growth_after_warmup_mib"] == 0 and summary["slope_second_half_mib_per_100_steps"] == 0
    leaking = [500.0 + 0.5 * step for step in steps]  # 50 MiB per 100 steps
    summary = bench.growth(steps, leaking)
    assert summary["slope_second_half_mib_per_100_steps"] == pytest.approx(50.0)
    assert summary["growth_second_half_mib"] == 125 and summary["growth_after_warmup_mib"] == 225


def test_options():
    bench = load_bench_memory()
    args = bench.build_parser().parse_args([])
    assert args.case == "cpu-profile" and args.steps >= 500 and args.allocator == ["keep-freed"]
    with pytest.raises(SystemExit):
        bench.main(["--steps", "1"])
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--allocator", "hoard"])
