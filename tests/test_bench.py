"""benchmarks/bench.py runs its cases (tiny sizes here; the real figures come from running the script)."""

import importlib.util
import json
import pathlib
import platform
import subprocess
import sys

import pytest
import torch

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


def test_worker_command_forwards_the_sizes_and_the_device_options():
    bench = load_bench()
    args = bench.parse_args(
        [
            "--batch",
            "3",
            "--sga-repeats",
            "5",
            "--sgd",
            "loop",
            "--amp",
            "bf16",
            "--channels-last",
            "--compile",
        ]
    )
    assert args.allocator == ["glibc", "keep-freed"]  # both, by default
    command = bench._worker_command("sga_ours", args, "keep-freed")
    assert command[command.index("--batch") + 1] == "3"
    assert command[command.index("--repeats") + 1] == "5"
    assert command[command.index("--sgd") + 1] == "loop"
    assert command[command.index("--allocator") + 1] == "keep-freed"
    assert command[command.index("--amp") + 1] == "bf16"
    assert command[command.index("--compile") + 1] == "inductor" and "--channels-last" in command
    assert bench.parse_args(command[2:]).allocator == "keep-freed"


def test_impossible_options_are_refused():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--amp", "fp16"])  # fp16 is for CUDA
    with pytest.raises(SystemExit):
        bench.parse_args(["--allocator", "mimalloc"])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocators are glibc's and preloaded ones")
def test_preloaded_allocators_are_found_or_refused_clearly():
    bench = load_bench()
    assert bench.preload_path("glibc") is None and bench.preload_path("keep-freed") is None
    for allocator in ("jemalloc", "tcmalloc"):
        try:
            assert "lib" in bench.preload_path(allocator)
        except SystemExit as error:
            assert "is not installed (apt install" in str(error)


def test_model_worker_on_the_cpu_twin_of_the_gpu_path(capsys):
    """The GPU options on the CPU: bf16 autocast, channels-last, torch.compile (aot_eager: no C++
    compiler), the gradient scaler's code path (disabled), with the trainer's default allocator."""
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 5):
        pytest.skip("torch.compile of the attention's autograd function needs torch 2.5 or newer")
    bench = load_bench()
    options = [*TINY, "--image-size", "64", "--backbone", "resnet18", "--warmup", "0", "--repeats", "1"]
    options += ["--amp", "bf16", "--channels-last", "--compile", "aot_eager", "--allocator", "keep-freed"]
    for case in ("train_msrn", "eval_resnet"):
        bench.main(["--worker", case, *options])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["case"] == case and report["allocator"] == "keep-freed"
        assert len(report["times"]) == 1 and report["times"][0] > 0 and report["peak_mib"] >= 0


def test_both_allocators_in_one_run_give_ratios_per_allocator(monkeypatch, capsys):
    bench = load_bench()
    seconds = {("train_resnet", "glibc"): 10.0, ("train_msrn", "glibc"): 14.0}
    seconds.update({("train_resnet", "keep-freed"): 9.0, ("train_msrn", "keep-freed"): 10.0})
    order = []

    def fake_case(name, args, allocator):
        order.append((name, allocator))
        t = seconds[(name, allocator)]
        return {"case": name, "times": [t, t * 1.1], "faults": [100, 100], "peak_mib": 50.0}

    monkeypatch.setattr(bench, "_run_case", fake_case)
    summary = bench.run_all(bench.parse_args(["--only", "train", "--rounds", "2"]))
    assert order[:4] == [
        ("train_resnet", "glibc"),
        ("train_msrn", "glibc"),
        ("train_resnet", "keep-freed"),
        ("train_msrn", "keep-freed"),
    ]
    assert order[4:6] == [("train_msrn", "glibc"), ("train_resnet", "glibc")]  # swapped next round
    assert summary["default_allocator"] == "keep-freed"
    assert summary["train_step_ratio"] == round(10.0 / 9.0, 3)  # the default's, at the top level
    assert summary["allocators"]["glibc"]["train_step_ratio"] == 1.4
    assert summary["msrn_step_speedup"]["keep-freed"]["best"] == 1.4
    assert {"cpu_flags", "hypervisor", "virt"} <= set(summary["machine"])
    assert summary["config"]["allocators"] == ["glibc", "keep-freed"]


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
    assert summary["config"]["allocators"] == ["glibc", "keep-freed"]
    assert "cpu_flags" in summary["machine"] and "hypervisor" in summary["machine"]
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
