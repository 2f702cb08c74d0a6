"""benchmarks/bench.py runs its cases (tiny sizes here; the real figures come from running the script)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = ["--batch", "2", "--sga-size", "6", "--embed-dim", "8", "--num-classes", "5", "--num-groups", "2"]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO_ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_attention_workers_report_times_faults_and_peak_memory(capsys):
    bench = load_bench()
    for case in ("sga_naive", "sga_ours"):
        bench.main(["--worker", case, *TINY, "--warmup", "0", "--repeats", "2", "--allocator", "glibc"])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["case"] == case and len(report["times"]) == 2 and len(report["faults"]) == 2
        assert all(t > 0 for t in report["times"]) and report["peak_mib"] >= 0


def test_worker_command_forwards_the_sizes():
    bench = load_bench()
    args = bench.parse_args(
        ["--batch", "3", "--sga-repeats", "5", "--sgd", "loop", "--allocator", "keep-freed"]
    )
    command = bench._worker_command("sga_ours", args)
    assert command[command.index("--batch") + 1] == "3"
    assert command[command.index("--repeats") + 1] == "5"
    assert command[command.index("--sgd") + 1] == "loop"
    assert command[command.index("--allocator") + 1] == "keep-freed"


def test_defaults_time_several_steps_per_case():
    args = load_bench().parse_args([])
    assert args.repeats >= 3 and args.sga_repeats >= 3 and args.rounds >= 2 and args.warmup >= 1


def test_whole_run_prints_the_table_and_a_json_line_with_the_ratios_and_the_load():
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench.py"),
            "--only",
            "sga",
            *TINY,
            "--rounds",
            "2",
            "--sga-repeats",
            "2",
            "--warmup",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "sga_speedup",
        "sga_memory_ratio",
        "sga_naive_s",
        "sga_ours_s",
        "quiet",
        "load_before",
        "load_after",
        "other_cores",
        "config",
    ):
        assert key in summary
    assert summary["config"]["allocator"] == "glibc"
    assert "sga_ours_spread" in summary and "median s" in result.stdout
    # Each pair swaps its order every other round.
    order = [line.split()[2] for line in result.stderr.splitlines() if line.strip().startswith("round")]
    assert order == ["sga_naive", "sga_ours", "sga_ours", "sga_naive"]
    if not summary["quiet"]:
        assert "WARNING" in result.stderr


def test_machine_load_is_quiet_only_below_the_thresholds():
    bench = load_bench()
    load = bench.MachineLoad()
    load.load_before, load.other_cores = 0.3, 0.1
    assert load.quiet
    load.load_before = 1.5
    assert not load.quiet
    load.load_before, load.other_cores = 0.3, 0.9
    assert not load.quiet
