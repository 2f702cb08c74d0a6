"""What MSRN costs over its backbone, and what the memory-efficient attention saves (CPU).

    python benchmarks/bench.py                  # the paper's sizes: COCO (80 labels), 448 px, batch 8
    python benchmarks/bench.py --rounds 3       # more rounds on a noisy machine (best of all rounds)
    python benchmarks/bench.py --only sga       # just the attention

Every case runs in a fresh subprocess, so its peak memory is its own: after building the model and
the inputs the worker resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``),
runs the case, and reports ``VmHWM`` minus the resident size at the reset. Cases alternate
(baseline, ours, baseline, ours, ...) over ``--rounds`` rounds so that a change in the load of a
shared machine hits both sides alike; each figure is the best time over all rounds and repeats.

Cases:
    sga_naive / sga_ours    eq. 7-9 forward + backward at COCO size (8 x 512 x 28 x 28 features,
                            84 embedding rows): the literal formula vs ``SemanticGuidedAttention``.
    train_resnet / train_msrn   one SGD step (forward, loss, backward, step) of timm's ``resnet101``
                            with 80 classes vs ``msrn_resnet101`` with 80 labels, 448 px, batch 8;
                            SGD momentum 0.9, weight decay 1e-4, ``fused=True`` for both (``--sgd loop``
                            for PyTorch's per-parameter loop, the CPU default).
    eval_resnet / eval_msrn     inference forward of the same two models.

The table goes to stdout, then one last line of JSON with the ratios.
"""
import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from typing import Callable, Dict, List

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

PAIRS = {
    "sga": ("sga_naive", "sga_ours"),
    "train": ("train_resnet", "train_msrn"),
    "eval": ("eval_resnet", "eval_msrn"),
}


# ---------------------------------------------------------------------------------- worker side
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset the high-water mark to the current resident size; return that size in KiB."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _rss_kib("VmRSS")
    except OSError:  # no procfs: fall back to the lifetime maximum (over-counts the set-up)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    try:
        return _rss_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _build_case(name: str, args: argparse.Namespace) -> Callable[[], None]:
    import timm
    import torch
    import torch.nn.functional as F

    import msrn  # noqa: F401  (registers the models)
    from msrn.layers import SemanticGuidedAttention, semantic_guided_attention

    torch.manual_seed(0)
    if name.startswith("sga"):
        features = torch.randn(args.batch, args.embed_dim, args.sga_size, args.sga_size, requires_grad=True)
        embeddings = (torch.randn(args.num_classes + args.num_groups, args.embed_dim) * 0.3).requires_grad_()
        attention = semantic_guided_attention if name == "sga_naive" else SemanticGuidedAttention()

        def step() -> None:
            features.grad = embeddings.grad = None
            out = attention(features, embeddings)
            out.backward(torch.ones_like(out))

        return step

    kind, model_name = name.split("_")
    if model_name == "msrn":
        model = timm.create_model("msrn_resnet101", num_classes=args.num_classes, num_groups=args.num_groups,
                                  embed_dim=args.embed_dim)
        criterion = msrn.MSRNLoss(model)
    else:
        model = timm.create_model("resnet101", num_classes=args.num_classes)
        criterion = F.binary_cross_entropy_with_logits
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    targets = (torch.rand(args.batch, args.num_classes) < 0.1).float()
    if kind == "eval":
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(images)

        return step

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                fused=args.sgd == "fused", foreach=False if args.sgd == "loop" else None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()

    return step


def run_worker(name: str, args: argparse.Namespace) -> None:
    import torch

    step = _build_case(name, args)
    baseline_kib = _reset_peak()
    times = []
    for repeat in range(args.warmup + args.repeats):
        start = time.perf_counter()
        step()
        if repeat >= args.warmup:
            times.append(time.perf_counter() - start)
    peak_mib = (_peak_kib() - baseline_kib) / 1024
    report = {"case": name, "times": times, "peak_mib": peak_mib, "threads": torch.get_num_threads()}
    print(json.dumps(report))


# ---------------------------------------------------------------------------------- parent side
def _worker_command(name: str, args: argparse.Namespace) -> List[str]:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name]
    for option in ("batch", "image_size", "sga_size", "num_classes", "num_groups", "embed_dim", "warmup",
                   "sgd"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    command += ["--repeats", str(args.sga_repeats if name.startswith("sga") else args.repeats)]
    return command


def _run_case(name: str, args: argparse.Namespace) -> Dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(_worker_command(name, args), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"case {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_all(args: argparse.Namespace) -> Dict[str, object]:
    pairs = [PAIRS[key] for key in args.only]
    results: Dict[str, Dict[str, object]] = {}
    for round_index in range(args.rounds):
        for pair in pairs:
            for name in pair:
                measured = _run_case(name, args)
                entry = results.setdefault(name, {"times": [], "peak_mib": 0.0})
                entry["times"] += measured["times"]
                entry["peak_mib"] = max(entry["peak_mib"], measured["peak_mib"])
                print(f"  round {round_index + 1}/{args.rounds} {name:13s} "
                      + " ".join(f"{t:.3f}s" for t in measured["times"])
                      + f"  peak {measured['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)

    def best(name: str) -> float:
        return min(results[name]["times"])

    def peak(name: str) -> float:
        return results[name]["peak_mib"]

    summary: Dict[str, object] = {}
    print()
    print(f"{'case':14s} {'best s':>8s} {'median s':>9s} {'peak MiB':>9s}   runs")
    for pair in pairs:
        for name in pair:
            times = sorted(results[name]["times"])
            median = times[len(times) // 2]
            print(f"{name:14s} {best(name):8.3f} {median:9.3f} {peak(name):9.0f}   {len(times)}")
    print()
    if "sga" in args.only:
        summary["sga_speedup"] = round(best("sga_naive") / best("sga_ours"), 2)
        summary["sga_memory_ratio"] = round(peak("sga_ours") / peak("sga_naive"), 4)
        summary["sga_naive_s"] = round(best("sga_naive"), 3)
        summary["sga_ours_s"] = round(best("sga_ours"), 3)
        summary["sga_naive_peak_mib"] = round(peak("sga_naive"))
        summary["sga_ours_peak_mib"] = round(peak("sga_ours"))
        print(f"attention fwd+bwd: naive / ours time  {summary['sga_speedup']:.2f}x   (target >= 4)")
        print(f"attention fwd+bwd: ours / naive peak  {summary['sga_memory_ratio']:.4f}   (target <= 0.25)")
    if "train" in args.only:
        summary["train_step_ratio"] = round(best("train_msrn") / best("train_resnet"), 3)
        summary["train_memory_ratio"] = round(peak("train_msrn") / peak("train_resnet"), 3)
        summary["train_resnet_s"] = round(best("train_resnet"), 3)
        summary["train_msrn_s"] = round(best("train_msrn"), 3)
        print(f"train step: msrn / resnet time        {summary['train_step_ratio']:.3f}   (target <= 1.3)")
        print(f"train step: msrn / resnet peak        {summary['train_memory_ratio']:.3f}")
    if "eval" in args.only:
        summary["eval_ratio"] = round(best("eval_msrn") / best("eval_resnet"), 3)
        summary["eval_resnet_s"] = round(best("eval_resnet"), 3)
        summary["eval_msrn_s"] = round(best("eval_msrn"), 3)
        print(f"eval forward: msrn / resnet time      {summary['eval_ratio']:.3f}   (target <= 1.2)")
    summary["config"] = dict(
        batch=args.batch, image_size=args.image_size, sga_size=args.sga_size, num_classes=args.num_classes,
        num_groups=args.num_groups, embed_dim=args.embed_dim, rounds=args.rounds, repeats=args.repeats,
        sga_repeats=args.sga_repeats, sgd=args.sgd, cpus=os.cpu_count(), machine=platform.machine(),
    )
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(PAIRS), default=["sga", "train", "eval"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every case")
    parser.add_argument("--repeats", type=int, default=1, help="timed model steps per case and round")
    parser.add_argument("--sga-repeats", type=int, default=3,
                        help="timed attention passes per case and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--sga-size", type=int, default=28, help="side of the attention's feature map")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--num-groups", type=int, default=4)
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--sgd", choices=["fused", "loop"], default="fused",
                        help="torch.optim.SGD implementation for both models: fused=True (one pass over each "
                             "parameter) or the plain per-parameter loop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option in ("rounds", "repeats", "sga_repeats", "batch", "image_size", "sga_size", "num_classes",
                   "num_groups", "embed_dim"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
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
