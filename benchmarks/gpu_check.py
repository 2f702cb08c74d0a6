"""One command that measures what a GPU gives MSRN, for whoever has a GPU for a few minutes.

    bash benchmarks/gpu_check.sh              # on a machine with a CUDA GPU (< 8 min on one H100-class GPU)
    bash benchmarks/gpu_check.sh --dry-run    # on the CPU: checks the options and runs one tiny step

What it runs (benchmarks/bench.py, one process per case, the trainer's allocator):

- the training step of ``msrn_resnet101`` and of timm's ``resnet101`` (80 labels, ``--batch`` 32,
  ``--image-size`` 448, SGD) under ``--amp fp16`` (with a gradient scaler) and ``--amp bf16``:
  images/s (batch / best step time) and peak GPU memory (``torch.cuda.max_memory_allocated``);
- the inference forward of both at the same sizes and precisions: images/s;
- with two GPUs or more, one step of ``msrn train`` in two processes under ``torchrun`` (DDP over
  NCCL) on a few generated images: whether it ran, and its wall time.

The last line of output is one JSON object with all of it and the machine (GPU, CPU flags).
``--dry-run`` does the same on the CPU at toy sizes (``resnet18`` backbone, 64 px, batch 2, bf16
only, no DDP) to check the script itself; its figures mean nothing.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _machine  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, toy sizes: check the script only")
    parser.add_argument("--device", default="cuda", help="the GPU (default cuda, i.e. cuda:0)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--amp", nargs="+", choices=["fp16", "bf16"], default=["fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case (cuDNN autotuning)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last models and images")
    parser.add_argument("--no-ddp", action="store_true", help="skip the two-process DDP step")
    return parser


def bench_command(args: argparse.Namespace, amp: str) -> list[str]:
    """benchmarks/bench.py for the training step and the eval forward at one precision."""
    command = [sys.executable, str(HERE / "bench.py"), "--only", "train", "eval", "--rounds", "1"]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--allocator", "keep-freed"]
    command += ["--batch", str(args.batch), "--image-size", str(args.image_size), "--amp", amp]
    command += ["--device", args.device, "--backbone", args.backbone]
    if args.dry_run:  # a toy model: a few labels, narrow branches
        command += ["--num-classes", "5", "--num-groups", "2", "--embed-dim", "16"]
    if args.channels_last:
        command.append("--channels-last")
    return command


def ddp_command(args: argparse.Namespace, output: pathlib.Path) -> list[str]:
    """``msrn train`` for one step in two processes under torchrun, on a few generated images."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "msrn",
        "train",
        "--device",
        "cuda",
        "--amp",
        "bf16",
        "--model",
        "msrn_resnet101",
        "--no-pretrained",
        "--synthetic-trainval",
        str(2 * args.batch),
        "--synthetic-test",
        "8",
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch),
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--workers",
        "2",
        "--no-progress",
        "--cache-dir",
        str(output / "cache"),
        "--output-dir",
        str(output / "run"),
    ]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_bench(args: argparse.Namespace, amp: str) -> dict[str, object]:
    result = subprocess.run(bench_command(args, amp), env=_environment(), capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    figures = summary["allocators"]["keep-freed"]
    msrn_name, base_name = f"msrn_{args.backbone}", args.backbone

    def per_second(seconds: float) -> float:
        return round(args.batch / seconds, 2)

    def peak(case: str) -> object:
        return figures.get(f"{case}_peak_total_mib", summary.get(f"{case}_peak_mib"))

    return {
        "train": {
            msrn_name: {"images_per_s": per_second(figures["train_msrn_s"]), "peak_mib": peak("train_msrn")},
            base_name: {
                "images_per_s": per_second(figures["train_resnet_s"]),
                "peak_mib": peak("train_resnet"),
            },
            "step_ratio": figures["train_step_ratio"],
        },
        "eval": {
            msrn_name: {"images_per_s": per_second(figures["eval_msrn_s"])},
            base_name: {"images_per_s": per_second(figures["eval_resnet_s"])},
            "ratio": figures["eval_ratio"],
        },
    }


def run_ddp(args: argparse.Namespace) -> dict[str, object]:
    if args.dry_run:
        return {"ran": False, "reason": "dry run"}
    if args.no_ddp:
        return {"ran": False, "reason": "--no-ddp"}
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {"ran": False, "reason": f"{gpus} GPU(s); DDP needs 2"}
    with tempfile.TemporaryDirectory(prefix="msrn-gpu-check-") as scratch:
        start = time.perf_counter()
        result = subprocess.run(
            ddp_command(args, pathlib.Path(scratch)), env=_environment(), capture_output=True, text=True
        )
        elapsed = round(time.perf_counter() - start, 1)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        return {"ran": True, "ok": False, "seconds": elapsed, "error": " | ".join(tail)}
    return {"ran": True, "ok": True, "seconds": elapsed, "processes": 2}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("batch", "image_size", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    args.backbone = "resnet101"
    if args.dry_run:
        args.device, args.batch, args.image_size, args.repeats, args.warmup = "cpu", 2, 64, 1, 0
        args.backbone, args.amp = "resnet18", ["bf16"]  # fp16 autocast is CUDA only
    else:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible; --dry-run checks the script on the CPU")
    start = time.perf_counter()
    report: dict[str, object] = {
        "dry_run": args.dry_run,
        "device": args.device,
        "batch": args.batch,
        "image_size": args.image_size,
        "channels_last": args.channels_last,
    }
    for amp in args.amp:
        print(f"gpu_check: training step and eval forward, {amp} ...", file=sys.stderr, flush=True)
        report[amp] = run_bench(args, amp)
    report["ddp"] = run_ddp(args)
    report["machine"] = _machine.machine_info()
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report))
    failed = [amp for amp in args.amp if "error" in report[amp]]
    return 1 if failed or report["ddp"].get("ok") is False else 0


if __name__ == "__main__":
    sys.exit(main())
