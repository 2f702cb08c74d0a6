"""benchmarks/gpu_check.sh: --dry-run runs the whole script on the CPU at toy sizes (the figures come
from a GPU run); the GPU commands it would run are checked as built."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_runs_one_tiny_step_per_case_on_the_cpu_and_prints_one_json_line():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dry_run"] and report["device"] == "cpu"
    train, evaluation = report["bf16"]["train"], report["bf16"]["eval"]
    for name in ("msrn_resnet18", "resnet18"):
        assert train[name]["images_per_s"] > 0 and train[name]["peak_mib"] >= 0
        assert evaluation[name]["images_per_s"] > 0
    assert train["step_ratio"] > 0 and evaluation["ratio"] > 0
    assert report["ddp"] == {"ran": False, "reason": "dry run"}
    assert "cpu_flags" in report["machine"]


def test_the_gpu_run_measures_the_paper_sizes_in_fp16_and_bf16():
    check = load_check()
    args = check.build_parser().parse_args([])
    args.backbone = "resnet101"
    assert args.batch == 32 and args.image_size == 448 and args.amp == ["fp16", "bf16"]
    command = check.bench_command(args, "fp16")
    assert command[command.index("--amp") + 1] == "fp16" and command[command.index("--device") + 1] == "cuda"
    assert (
        command[command.index("--batch") + 1] == "32"
        and command[command.index("--backbone") + 1] == "resnet101"
    )
    # The bench script accepts what gpu_check passes it (parsed here without a GPU).
    spec = importlib.util.spec_from_file_location("bench", REPO_ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    options = bench.build_parser().parse_args(command[2:])
    assert options.amp == "fp16" and options.only == ["train", "eval"]
    ddp = check.ddp_command(args, REPO_ROOT / "scratch")
    assert "--nproc_per_node=2" in ddp and ddp[ddp.index("--device") + 1] == "cuda"
    from msrn.cli import build_parser as msrn_parser

    train_options = msrn_parser().parse_args(ddp[ddp.index("-m", 3) + 2 :])  # what torchrun starts
    assert train_options.max_steps_per_epoch == 1 and train_options.device == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run on it")
def test_without_a_gpu_it_says_to_use_dry_run():
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}
    )
    assert result.returncode == 2 and "--dry-run" in result.stderr
