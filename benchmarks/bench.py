"""What MSRN costs over its backbone, and what the memory-efficient attention saves (CPU).

    python benchmarks/bench.py                   # every case, COCO sizes (80 labels), 448 px, batch 8
    python benchmarks/bench.py --only sga        # just the attention
    python benchmarks/bench.py --only train --rounds 3 --repeats 5

Method. Every case runs in a fresh subprocess: it builds its model and inputs, takes ``--warmup``
untimed steps, then ``--repeats`` timed steps. Its peak memory is its own: after the set-up the
worker resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``) and reports
``VmHWM`` minus the resident size at the reset. Baseline and MSRN cases alternate within a round and
swap their order every other round (A B, B A, A B, ...) so that a drift in the machine's speed hits
both sides alike. Each figure is the best (and the median) over all timed steps of all rounds; the
spread is ``(slowest - fastest) / median``. Ratios use the best times; the ``*_median`` keys of the
JSON line use the medians.

Quietness. The script prints the load average before and after, and measures how many cores other
processes kept busy during the run (from ``/proc/stat``, minus the CPU time of its own workers). On a
loaded machine it warns, and the JSON line says ``"quiet": false``: such figures compare variants
with each other, but do not go into docs/performance.md.

Memory allocators. ``--allocator`` names one or more; the model cases run once per allocator in
the same run (the attention cases keep malloc's defaults: the literal formula fragments a heap that
never unmaps):

    glibc        malloc's defaults: glibc unmaps every freed block above 32 MiB, and each step
                 page-faults its large tensors in again;
    keep-freed   the workers first call :func:`msrn.engine.keep_freed_memory` (what ``msrn train``
                 does by default), so freed blocks are reused without faults;
    jemalloc, tcmalloc   the worker runs with that library in ``LD_PRELOAD`` (installed e.g. by
                 ``apt install libjemalloc2 libtcmalloc-minimal4``).

The default, ``glibc keep-freed``, compares the trainer's default with malloc's. The JSON line's
top-level ratios are those of the trainer's default (``keep-freed`` when it ran, else the first
allocator); ``"allocators"`` holds every allocator's, and ``msrn_step_speedup`` the MSRN step time of
``glibc`` over each other allocator's.

Devices. ``--device cuda`` runs the model cases on the GPU, with ``--amp fp16|bf16`` (autocast; fp16
with a gradient scaler), ``--channels-last`` and ``--compile [BACKEND]`` (``torch.compile``, default
backend inductor); steps are timed to ``torch.cuda.synchronize()`` and the peak memory is
``torch.cuda.max_memory_allocated`` (above what was allocated before the first step, and in total).
On the CPU the same options run (bf16 autocast, channels-last, ``--compile aot_eager`` without a C++
compiler), which is how the tests check the GPU code path. benchmarks/gpu_check.sh runs the GPU set.

The JSON line records the machine: CPU model, its vector-instruction flags (AVX2, AVX-512, VNNI,
AMX), whether it is a virtual machine (the ``hypervisor`` flag, ``systemd-detect-virt``), the GPU.

Cases:
    sga_naive / sga_ours    eq. 7-9 forward + backward at COCO size (8 x 512 x 28 x 28 features,
                            84 embedding rows): the literal formula vs ``SemanticGuidedAttention``.
    train_resnet / train_msrn   one SGD step (zero_grad, forward, loss, backward, step) of timm's
                            ``resnet101`` with 80 classes vs ``msrn_resnet101`` with 80 labels, 448 px,
                            batch 8; SGD momentum 0.9, weight decay 1e-4, ``fused=True`` for both
                            (``--sgd loop`` for PyTorch's per-parameter loop, the CPU default).
    eval_resnet / eval_msrn     inference forward of the same two models.

The table goes to stdout, then one last line of JSON with the ratios.
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

ALLOCATORS = ("glibc", "keep-freed", "jemalloc", "tcmalloc")
# The shared library each preloaded allocator is, as ctypes.util.find_library names it.
PRELOADED = {"jemalloc": "jemalloc", "tcmalloc": "tcmalloc_minimal"}

PAIRS = {
    "sga": ("sga_naive", "sga_ours"),
    "train": ("train_resnet", "train_msrn"),
    "eval": ("eval_resnet", "eval_msrn"),
}

# A machine counts as quiet when its 1-minute load average was at most this before the run and other
# processes kept at most QUIET_OTHER_CORES cores busy on average during it.
QUIET_LOAD = 1.0
QUIET_OTHER_CORES = 0.25


# ---------------------------------------------------------------------------------- worker side
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the high-water mark to the current resident size; return that size in KiB."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _status_kib("VmRSS")
    except OSError:  # no procfs: fall back to the lifetime maximum (over-counts the set-up)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build_case(name: str, args: argparse.Namespace) -> Callable[[], None]:
    import timm
    import torch
    import torch.nn.functional as F

    import msrn  # noqa: F401  (registers the models)
    from msrn._amp import autocast_context
    from msrn.layers import SemanticGuidedAttention, semantic_guided_attention

    torch.manual_seed(0)
    device = torch.device(args.device)
    if name.startswith("sga"):
        features = torch.randn(args.batch, args.embed_dim, args.sga_size, args.sga_size, device=device)
        features.requires_grad_()
        embeddings = torch.randn(args.num_classes + args.num_groups, args.embed_dim, device=device) * 0.3
        embeddings.requires_grad_()
        attention = semantic_guided_attention if name == "sga_naive" else SemanticGuidedAttention()

        def step() -> None:
            features.grad = embeddings.grad = None
            out = attention(features, embeddings)
            out.backward(torch.ones_like(out))
            _synchronize(device)

        return step

    kind, model_name = name.split("_")
    if model_name == "msrn":
        model = timm.create_model(
            f"msrn_{args.backbone}",
            num_classes=args.num_classes,
            num_groups=args.num_groups,
            embed_dim=args.embed_dim,
        )
        criterion = msrn.MSRNLoss(model)
    else:
        model = timm.create_model(args.backbone, num_classes=args.num_classes)
        criterion = F.binary_cross_entropy_with_logits
    model.to(device)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    targets = (torch.rand(args.batch, args.num_classes, device=device) < 0.1).float()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    network = torch.compile(model, backend=args.compile) if args.compile else model
    if kind == "eval":
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast_context(device, args.amp):
                network(images)
            _synchronize(device)

        return step

    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        fused=args.sgd == "fused",
        foreach=False if args.sgd == "loop" else None,
    )
    # fp16 needs loss scaling; a disabled scaler passes everything through, so every device and
    # precision runs the same code.
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, args.amp):
            logits = network(images)
        loss = criterion(logits.float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _synchronize(device)

    return step


def run_worker(name: str, args: argparse.Namespace) -> None:
    import torch

    from msrn.engine.memory import preloaded_allocator

    if args.allocator == "keep-freed" and not name.startswith("sga"):
        from msrn.engine import keep_freed_memory

        keep_freed_memory()
    if args.allocator in PRELOADED and preloaded_allocator() != args.allocator:
        raise RuntimeError(f"--allocator {args.allocator}: the library is not loaded (LD_PRELOAD)")
    device = torch.device(args.device)
    step = _build_case(name, args)
    baseline_kib = _reset_peak()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_baseline = torch.cuda.memory_allocated(device)
    times: list[float] = []
    faults: list[int] = []
    for repeat in range(args.warmup + args.repeats):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
        if repeat >= args.warmup:
            times.append(elapsed)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    report = {
        "case": name,
        "allocator": args.allocator,
        "times": times,
        "faults": faults,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        report["peak_mib"] = (peak - cuda_baseline) / 2**20
        report["peak_total_mib"] = peak / 2**20
    else:
        report["peak_mib"] = (_peak_kib() - baseline_kib) / 1024
    print(json.dumps(report))


# ---------------------------------------------------------------------------------- parent side
def _worker_command(name: str, args: argparse.Namespace, allocator: str) -> list[str]:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name]
    for option in (
        "batch",
        "image_size",
        "sga_size",
        "num_classes",
        "num_groups",
        "embed_dim",
        "warmup",
        "sgd",
        "device",
        "amp",
        "backbone",
    ):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    command += ["--allocator", allocator]
    command += ["--repeats", str(args.sga_repeats if name.startswith("sga") else args.repeats)]
    if args.channels_last:
        command.append("--channels-last")
    if args.compile:
        command += ["--compile", args.compile]
    return command


def preload_path(allocator: str) -> str | None:
    """The library to put in ``LD_PRELOAD`` for ``allocator`` (``None`` for glibc's own malloc);
    a clear error when it is not installed."""
    if allocator not in PRELOADED:
        return None
    import ctypes.util

    found = ctypes.util.find_library(PRELOADED[allocator])
    if found is None:
        package = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}[allocator]
        raise SystemExit(
            f"--allocator {allocator}: lib{PRELOADED[allocator]} is not installed (apt install {package})"
        )
    return found


def _run_case(name: str, args: argparse.Namespace, allocator: str) -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    library = preload_path(allocator)
    if library:
        env["LD_PRELOAD"] = library
    result = subprocess.run(_worker_command(name, args, allocator), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"case {name} ({allocator}) failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


class MachineLoad:
    """Load average at start and end, and the cores kept busy by other processes in between."""

    def __init__(self) -> None:
        self.load_before = self._load()
        self._busy_before = self._busy_seconds()
        self._ours_before = self._our_seconds()
        self._start = time.monotonic()
        self.load_after: float | None = None
        self.other_cores: float | None = None

    @staticmethod
    def _load() -> float | None:
        try:
            return os.getloadavg()[0]
        except OSError:
            return None

    @staticmethod
    def _busy_seconds() -> float | None:
        """CPU seconds all processes spent running (user, nice, system, irq, softirq) since boot."""
        try:
            with open("/proc/stat") as stat:
                fields = stat.readline().split()[1:]
            return sum(int(value) for value in fields[:3] + fields[5:7]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _our_seconds() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    def finish(self) -> None:
        self.load_after = self._load()
        busy = self._busy_seconds()
        elapsed = time.monotonic() - self._start
        if busy is not None and self._busy_before is not None and elapsed > 0:
            others = (busy - self._busy_before) - (self._our_seconds() - self._ours_before)
            self.other_cores = max(0.0, others / elapsed)

    @property
    def quiet(self) -> bool:
        return (
            self.load_before is not None
            and self.load_before <= QUIET_LOAD
            and self.other_cores is not None
            and self.other_cores <= QUIET_OTHER_CORES
        )

    def describe(self) -> str:
        def show(value: float | None) -> str:
            return "unknown" if value is None else f"{value:.2f}"

        return (
            f"load average {show(self.load_before)} before, {show(self.load_after)} after; "
            f"other processes kept {show(self.other_cores)} cores busy during the run"
        )


def _stats(times: list[float]) -> tuple[float, float, float]:
    """Best, median and spread ``(max - min) / median`` of some step times."""
    median = statistics.median(times)
    return min(times), median, (max(times) - min(times)) / median


def _allocators_of(pair: tuple[str, str], args: argparse.Namespace) -> list[str]:
    """The attention keeps malloc's defaults; the model cases run once per ``--allocator``."""
    return ["glibc"] if pair == PAIRS["sga"] else list(args.allocator)


def _ratios(best, median, peak, pairs: list, label: str) -> dict[str, float]:
    """The summary ratios of the pairs that ran, for one allocator (``label``, printed)."""
    out: dict[str, float] = {}
    if PAIRS["train"] in pairs:
        out["train_step_ratio"] = round(best("train_msrn") / best("train_resnet"), 3)
        out["train_step_ratio_median"] = round(median("train_msrn") / median("train_resnet"), 3)
        out["train_memory_ratio"] = round(peak("train_msrn") / peak("train_resnet"), 3)
        out["train_resnet_s"] = round(best("train_resnet"), 3)
        out["train_msrn_s"] = round(best("train_msrn"), 3)
        out["train_msrn_median_s"] = round(median("train_msrn"), 3)
        out["train_resnet_peak_mib"] = round(peak("train_resnet"))
        out["train_msrn_peak_mib"] = round(peak("train_msrn"))
        print(f"{label}train step: msrn / resnet time        {out['train_step_ratio']:.3f}   (target <= 1.3)")
        print(f"{label}train step: msrn / resnet peak        {out['train_memory_ratio']:.3f}")
    if PAIRS["eval"] in pairs:
        out["eval_ratio"] = round(best("eval_msrn") / best("eval_resnet"), 3)
        out["eval_ratio_median"] = round(median("eval_msrn") / median("eval_resnet"), 3)
        out["eval_resnet_s"] = round(best("eval_resnet"), 3)
        out["eval_msrn_s"] = round(best("eval_msrn"), 3)
        print(f"{label}eval forward: msrn / resnet time      {out['eval_ratio']:.3f}   (target <= 1.15)")
    return out


def run_all(args: argparse.Namespace) -> dict[str, object]:
    pairs = [PAIRS[key] for key in args.only]
    results: dict[tuple[str, str], dict[str, list]] = {}
    load = MachineLoad()
    print(f"before: load average {load.load_before}", file=sys.stderr, flush=True)
    for round_index in range(args.rounds):
        for pair in pairs:
            for allocator in _allocators_of(pair, args):
                for name in pair if round_index % 2 == 0 else pair[::-1]:
                    measured = _run_case(name, args, allocator)
                    entry = results.setdefault((name, allocator), {"times": [], "faults": [], "peak_mib": []})
                    for key in ("times", "faults"):
                        entry[key] += measured[key]
                    entry["peak_mib"].append(measured["peak_mib"])
                    if "peak_total_mib" in measured:
                        entry.setdefault("peak_total_mib", []).append(measured["peak_total_mib"])
                    print(
                        f"  round {round_index + 1}/{args.rounds} {name:13s} {allocator:10s} "
                        + " ".join(f"{t:.3f}s" for t in measured["times"])
                        + f"  peak {measured['peak_mib']:.0f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
    load.finish()

    summary: dict[str, object] = {}
    print()
    print(
        f"{'case':14s} {'allocator':10s} {'best s':>8s} {'median s':>9s} {'spread':>7s} {'peak MiB':>9s} "
        f"{'faults/step':>12s}   steps"
    )
    for (name, allocator), entry in results.items():
        fastest, middle, spread = _stats(entry["times"])
        faults = statistics.median(entry["faults"])
        print(
            f"{name:14s} {allocator:10s} {fastest:8.3f} {middle:9.3f} {spread:6.1%} "
            f"{max(entry['peak_mib']):9.0f} {faults:12.0f}   {len(entry['times'])}"
        )
        suffix = "" if allocator == "glibc" or name.startswith("sga") else f"_{allocator}"
        summary[f"{name}{suffix}_spread"] = round(spread, 3)
    print()
    if PAIRS["sga"] in pairs:

        def sga(name: str) -> dict[str, list]:
            return results[(name, "glibc")]

        naive, ours = sga("sga_naive"), sga("sga_ours")
        summary["sga_speedup"] = round(min(naive["times"]) / min(ours["times"]), 2)
        summary["sga_speedup_median"] = round(
            statistics.median(naive["times"]) / statistics.median(ours["times"]), 2
        )
        summary["sga_memory_ratio"] = round(max(ours["peak_mib"]) / max(naive["peak_mib"]), 4)
        summary["sga_naive_s"] = round(min(naive["times"]), 3)
        summary["sga_ours_s"] = round(min(ours["times"]), 3)
        summary["sga_naive_peak_mib"] = round(max(naive["peak_mib"]))
        summary["sga_ours_peak_mib"] = round(max(ours["peak_mib"]))
        print(f"attention fwd+bwd: naive / ours time  {summary['sga_speedup']:.2f}x   (target >= 8)")
        print(f"attention fwd+bwd: ours / naive peak  {summary['sga_memory_ratio']:.4f}   (target <= 0.25)")
    model_pairs = [pair for pair in pairs if pair != PAIRS["sga"]]
    if model_pairs:
        per_allocator: dict[str, dict[str, object]] = {}
        for allocator in args.allocator:

            def best(name: str, allocator=allocator) -> float:
                return min(results[(name, allocator)]["times"])

            def median(name: str, allocator=allocator) -> float:
                return statistics.median(results[(name, allocator)]["times"])

            def peak(name: str, allocator=allocator) -> float:
                return max(results[(name, allocator)]["peak_mib"])

            per_allocator[allocator] = _ratios(best, median, peak, model_pairs, f"[{allocator:10s}] ")
            for name in (n for pair in model_pairs for n in pair):
                faults = statistics.median(results[(name, allocator)]["faults"])
                per_allocator[allocator][f"{name}_faults_per_step"] = round(faults)
                if "peak_total_mib" in results[(name, allocator)]:
                    total = max(results[(name, allocator)]["peak_total_mib"])
                    per_allocator[allocator][f"{name}_peak_total_mib"] = round(total)
        default = "keep-freed" if "keep-freed" in per_allocator else args.allocator[0]
        summary.update(per_allocator[default])
        summary["default_allocator"] = default
        summary["allocators"] = per_allocator
        if "glibc" in per_allocator and PAIRS["train"] in model_pairs:
            base = per_allocator["glibc"]
            summary["msrn_step_speedup"] = {
                allocator: {
                    "best": round(base["train_msrn_s"] / values["train_msrn_s"], 3),
                    "median": round(base["train_msrn_median_s"] / values["train_msrn_median_s"], 3),
                }
                for allocator, values in per_allocator.items()
                if allocator != "glibc"
            }
            for allocator, speedup in summary["msrn_step_speedup"].items():
                print(
                    f"msrn train step, glibc / {allocator}: {speedup['best']:.3f} best, "
                    f"{speedup['median']:.3f} median   (target >= 1.25 for the default)"
                )
    machine = _machine.machine_info()
    print(f"\nmachine: {_machine.describe(machine)}")
    print(f"machine: {load.describe()}")
    if not load.quiet:
        print(
            f"WARNING: the machine was not quiet (needs a load average <= {QUIET_LOAD} before and <= "
            f"{QUIET_OTHER_CORES} cores used by other processes). Compare these figures with each other "
            f"only; do not quote them in docs/performance.md.",
            file=sys.stderr,
        )
    summary["quiet"] = load.quiet
    summary["load_before"] = None if load.load_before is None else round(load.load_before, 2)
    summary["load_after"] = None if load.load_after is None else round(load.load_after, 2)
    summary["other_cores"] = None if load.other_cores is None else round(load.other_cores, 2)
    summary["machine"] = machine
    summary["config"] = dict(
        batch=args.batch,
        image_size=args.image_size,
        sga_size=args.sga_size,
        num_classes=args.num_classes,
        num_groups=args.num_groups,
        embed_dim=args.embed_dim,
        rounds=args.rounds,
        repeats=args.repeats,
        sga_repeats=args.sga_repeats,
        warmup=args.warmup,
        sgd=args.sgd,
        allocators=list(args.allocator),
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        backbone=args.backbone,
        cpus=os.cpu_count(),
        machine=platform.machine(),
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PAIRS), default=["sga", "train", "eval"])
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of every case; the order within a pair swaps every round",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed model steps per case and round")
    parser.add_argument(
        "--sga-repeats", type=int, default=5, help="timed attention passes per case and round"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--sga-size", type=int, default=28, help="side of the attention's feature map")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--num-groups", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument(
        "--sgd",
        choices=["fused", "loop"],
        default="fused",
        help="torch.optim.SGD implementation for both models: fused=True (one pass over each "
        "parameter) or the plain per-parameter loop",
    )
    parser.add_argument(
        "--allocator",
        nargs="+",
        choices=ALLOCATORS,
        default=["glibc", "keep-freed"],
        help="malloc of the model cases, each in the same run (default: glibc keep-freed): glibc's defaults "
        "(large blocks unmapped on free); keep-freed: msrn.engine.keep_freed_memory() (msrn train's "
        "default); jemalloc, tcmalloc: preloaded (LD_PRELOAD)",
    )
    parser.add_argument(
        "--backbone",
        default="resnet101",
        choices=["resnet18", "resnet50", "resnet101"],
        help="the baseline timm model; MSRN is msrn_<backbone> (default resnet101, the paper's)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="autocast of the model cases (fp16: CUDA)",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and images")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="torch.compile the models (backend: inductor by default; aot_eager needs no C++ compiler)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in (
        "rounds",
        "repeats",
        "sga_repeats",
        "batch",
        "image_size",
        "sga_size",
        "num_classes",
        "num_groups",
        "embed_dim",
    ):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.amp == "fp16" and not args.device.startswith("cuda"):
        parser.error("--amp fp16 needs --device cuda (use bf16 on the CPU)")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA GPU is visible")
    if args.worker:
        if len(args.allocator) != 1:
            parser.error("a worker runs one --allocator")
        args.allocator = args.allocator[0]
    else:
        args.allocator = list(dict.fromkeys(args.allocator))
        for allocator in args.allocator:
            preload_path(allocator)  # a missing library stops the run before it starts
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args)
        return
    summary = run_all(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
