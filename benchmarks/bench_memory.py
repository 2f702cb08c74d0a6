"""Does the resident memory of a long training run stay bounded? Follows the resident set size (RSS)
over hundreds of steps, with the trainer's default allocator setting or another.

    python benchmarks/bench_memory.py --case cpu-profile            # msrn train's CPU profile, 500 steps
    python benchmarks/bench_memory.py --case resnet101 --batch 2    # msrn_resnet101, 448 px, 500 steps
    python benchmarks/bench_memory.py --case cpu-profile --allocator glibc keep-freed jemalloc

Cases (each allocator in its own process):

    cpu-profile  the real trainer (``msrn.engine.train``) on the CPU profile (``cpu_config()``:
                 ``msrn_resnet18``, 64 px, batch 16, AdamW, one thread, one data-loading process, the
                 generated VOC-format set), for enough epochs to make ``--steps`` optimizer steps,
                 evaluating and saving checkpoints after each epoch as it always does. The RSS is read
                 after every optimizer step (an optimizer hook), and a thread samples it, and that of
                 the data-loading workers, every ``--interval`` seconds in between.
    resnet101    a training-step loop of ``msrn_resnet101`` (COCO sizes: 80 labels, 4 groups) at
                 ``--image-size`` 448 on random tensors, SGD with momentum as the paper's recipe; every
                 10th step takes a batch one smaller (as the last batch of an epoch) and every 100th an
                 eval-mode forward of a full batch (as an evaluation), so that differently sized
                 blocks mix in the heap. The RSS is read after every step. ``--batch`` 2 keeps 500 steps
                 near 20 minutes on two cores (batch 8 would take over an hour).

Allocators: ``keep-freed`` (``msrn.engine.keep_freed_memory()``, the trainer's default), ``glibc``
(malloc's defaults: the trainer with ``keep_freed_memory=False``), ``jemalloc`` / ``tcmalloc``
(``LD_PRELOAD``; the trainer then leaves malloc alone).

Reported per allocator: the RSS after the warm-up (the first 10% of the steps), at the middle, its
maximum and at the end; the growth from the warm-up to the end and over the second half, in MiB and
MiB per 100 steps (a least-squares slope over the second half). Bounded means the second half's
slope is about zero. The last line is one JSON object.
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _machine  # noqa: E402
from bench import ALLOCATORS, preload_path  # noqa: E402  (benchmarks/bench.py: the same allocators)

CASES = ("cpu-profile", "resnet101")


# ---------------------------------------------------------------------------------- worker side
def _rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _children_rss_mib() -> float:
    """RSS of this process's direct children (data-loading workers)."""
    total = 0.0
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                total += _rss_mib(child)
            except OSError:
                pass
    return total


def _apply_allocator(allocator: str) -> None:
    from msrn.engine.memory import keep_freed_memory, preloaded_allocator

    if allocator == "keep-freed":
        keep_freed_memory()
    elif allocator in ("jemalloc", "tcmalloc") and preloaded_allocator() != allocator:
        raise RuntimeError(f"--allocator {allocator}: the library is not loaded (LD_PRELOAD)")


def _resnet101_loop(args: argparse.Namespace) -> dict[str, object]:
    import timm
    import torch

    import msrn

    _apply_allocator(args.allocator)
    torch.manual_seed(0)
    model = timm.create_model("msrn_resnet101", num_classes=80, num_groups=4)
    criterion = msrn.MSRNLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    size = args.image_size
    rss, times = [], []
    for step in range(args.steps):
        batch = args.batch - 1 if step % 10 == 9 and args.batch > 1 else args.batch
        images = torch.randn(batch, 3, size, size)
        targets = (torch.rand(batch, 80) < 0.1).float()
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        if step % 100 == 99:
            model.eval()
            with torch.inference_mode():
                model(torch.randn(args.batch, 3, size, size))
        times.append(time.perf_counter() - start)
        rss.append(_rss_mib())
        if step % 50 == 49:
            print(f"  step {step + 1}: {rss[-1]:.0f} MiB, {times[-1]:.2f} s", file=sys.stderr, flush=True)
    return {
        "steps": list(range(1, args.steps + 1)),
        "rss_mib": rss,
        "step_s": round(statistics.median(times), 3),
    }


def _cpu_profile(args: argparse.Namespace) -> dict[str, object]:
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from msrn.engine import cpu_config, train

    if args.allocator in ("jemalloc", "tcmalloc"):
        _apply_allocator(args.allocator)
    rss: list[float] = []
    peaks = {"main": 0.0, "children": 0.0}
    stop = threading.Event()

    def after_step(optimizer, step_args, step_kwargs) -> None:  # every optimizer step of the run
        rss.append(_rss_mib())

    def sample() -> None:  # between steps too: evaluations and checkpoint writes
        while not stop.is_set():
            peaks["main"] = max(peaks["main"], _rss_mib())
            peaks["children"] = max(peaks["children"], _children_rss_mib())
            stop.wait(args.interval)

    trainval, batch = 2000, 16  # the CPU profile's generated set and batch
    epochs = max(1, math.ceil(args.steps / math.ceil(trainval / batch)))
    epoch_ends: list[int] = []
    with tempfile.TemporaryDirectory(prefix="msrn-bench-memory-") as scratch:
        config = cpu_config(
            epochs=epochs,
            output_dir=str(pathlib.Path(scratch) / "run"),
            keep_freed_memory=args.allocator == "keep-freed",  # the trainer calls keep_freed_memory()
            progress=False,
        )
        if args.cache_dir:
            config.cache_dir = str(args.cache_dir)
        handle = register_optimizer_step_post_hook(after_step)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        try:
            train(config, on_epoch_end=lambda record: epoch_ends.append(len(rss)))
        finally:
            stop.set()
            sampler.join()
            handle.remove()
    return {
        "steps": list(range(1, len(rss) + 1)),
        "rss_mib": rss,
        "epochs": epochs,
        "epoch_ends_at_step": epoch_ends,
        "rss_sampled_max_mib": round(peaks["main"]),
        "children_rss_max_mib": round(peaks["children"]),
        "step_s": round((time.perf_counter() - start) / max(1, len(rss)), 3),
    }


def _slope_per_100(steps: list[int], values: list[float]) -> float:
    if len(steps) < 2 or len(set(steps)) < 2:
        return 0.0
    mean_x, mean_y = statistics.fmean(steps), statistics.fmean(values)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(steps, values, strict=True))
    variance = sum((x - mean_x) ** 2 for x in steps)
    return 100 * covariance / variance


def growth(steps: list[int], rss: list[float]) -> dict[str, float]:
    """RSS after the warm-up (first 10% of the steps), at the middle, at its maximum and at the end,
    the growth between them, and the slope over the second half (MiB per 100 steps)."""
    last = steps[-1]

    def at(fraction: float) -> float:
        index = next((i for i, s in enumerate(steps) if s >= fraction * last), len(steps) - 1)
        return rss[index]

    second_half = [(s, r) for s, r in zip(steps, rss, strict=True) if s >= last / 2]
    return {
        "rss_warm_mib": round(at(0.1)),
        "rss_middle_mib": round(at(0.5)),
        "rss_max_mib": round(max(rss)),
        "rss_end_mib": round(rss[-1]),
        "growth_after_warmup_mib": round(rss[-1] - at(0.1)),
        "growth_second_half_mib": round(rss[-1] - at(0.5)),
        "slope_second_half_mib_per_100_steps": round(
            _slope_per_100([s for s, _ in second_half], [r for _, r in second_half]), 2
        ),
    }


def run_worker(args: argparse.Namespace) -> None:
    series = _resnet101_loop(args) if args.case == "resnet101" else _cpu_profile(args)
    result = {"case": args.case, "allocator": args.allocator, **growth(series["steps"], series["rss_mib"])}
    result.update({k: v for k, v in series.items() if k not in ("steps", "rss_mib")})
    if args.save_series:
        args.save_series.write_text(json.dumps(series))
    print(json.dumps(result))


# ---------------------------------------------------------------------------------- parent side
def run_all(args: argparse.Namespace) -> dict[str, object]:
    results = {}
    for allocator in args.allocator:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        library = preload_path(allocator)
        if library:
            env["LD_PRELOAD"] = library
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", "--case", args.case]
        command += ["--allocator", allocator, "--steps", str(args.steps), "--batch", str(args.batch)]
        command += ["--image-size", str(args.image_size), "--interval", str(args.interval)]
        if args.cache_dir:
            command += ["--cache-dir", str(args.cache_dir)]
        if args.save_series:
            command += ["--save-series", str(args.save_series.with_suffix(f".{allocator}.json"))]
        print(f"{args.case}, {allocator}: {args.steps} steps ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{args.case} with {allocator} failed (exit {result.returncode})")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        report["wall_s"] = round(time.perf_counter() - start, 1)
        results[allocator] = report
        print(
            f"{allocator:10s} RSS warm {report['rss_warm_mib']} MiB, middle {report['rss_middle_mib']}, "
            f"max {report['rss_max_mib']}, end {report['rss_end_mib']}; growth after warm-up "
            f"{report['growth_after_warmup_mib']} MiB, second half {report['growth_second_half_mib']} MiB "
            f"({report['slope_second_half_mib_per_100_steps']} MiB / 100 steps)"
        )
    machine = _machine.machine_info()
    print(f"machine: {_machine.describe(machine)}; load average {os.getloadavg()[0]:.2f} at the end")
    return {
        "case": args.case,
        "steps": args.steps,
        "batch": args.batch if args.case == "resnet101" else 16,
        "image_size": args.image_size if args.case == "resnet101" else 64,
        "allocators": results,
        "machine": machine,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES, default="cpu-profile")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps (cpu-profile: at least)")
    parser.add_argument(
        "--allocator", nargs="+", choices=ALLOCATORS, default=["keep-freed"], help="default: the trainer's"
    )
    parser.add_argument("--batch", type=int, default=2, help="resnet101: images per step (default 2)")
    parser.add_argument("--image-size", type=int, default=448, help="resnet101: input size (default 448)")
    parser.add_argument("--interval", type=float, default=0.5, help="cpu-profile: seconds between samples")
    parser.add_argument("--cache-dir", type=pathlib.Path, help="cpu-profile: where the generated set is")
    parser.add_argument("--save-series", type=pathlib.Path, help="write each RSS series as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch < 1 or args.image_size < 32:
        parser.error("--steps must be >= 2, --batch >= 1 and --image-size >= 32")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if args.worker:
        args.allocator = args.allocator[0]
        run_worker(args)
        return
    for allocator in args.allocator:
        preload_path(allocator)
    print(json.dumps(run_all(args)))


if __name__ == "__main__":
    main()
