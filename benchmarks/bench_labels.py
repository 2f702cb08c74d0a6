"""What each head costs as the labels grow: parameters, peak memory, training-step and eval-forward time.

    python benchmarks/bench_labels.py                       # n = 20, 80, 1000, 9605; batch 8, 448 px
    python benchmarks/bench_labels.py --labels 20,80 --steps 5
    python benchmarks/bench_labels.py --labels 9605 --models msrn_label_wise --batch 2 --size 224
    python benchmarks/bench_labels.py --json labels.json    # also write the JSON summary to a file

Models (``--models``, all by default):

    msrn_paper        ``msrn_resnet101`` with the paper's head (one attention row per label, fc1 over
                      all rows); skipped with a "does not fit" row where its parameters x 16 bytes
                      (weights, gradients, SGD momentum and as much again for the activations) exceed
                      the machine's memory (``--memory-gib``, default: MemTotal)
    msrn_label_wise   ``msrn_resnet101`` with ``head="label_wise"`` (docs/variants.md)
    resnet_linear     timm's ``resnet101`` with its linear classifier for ``n`` classes
    resnet_mldecoder  timm's ``resnet101`` with ``timm.layers.ml_decoder.MLDecoder`` as its head
                      (timm's ``add_ml_decoder_head``: 100 queries, 768 wide, group FC)

Method. Every (model, n) runs in a fresh subprocess, so that its peak memory is its own: the peak is
the worker's resident-set high-water mark (``VmHWM``, or ``ru_maxrss`` without procfs) over its whole
life, weights and optimizer state included, as a user would see it. The worker builds the model,
takes ``--warmup`` untimed training steps, then ``--steps`` timed ones (SGD, momentum 0.9, weight
decay 1e-4, ``zero_grad``, forward, loss, backward, step; MSRN's loss is ``msrn.MSRNLoss``, BCE plus
the compactness term, the others BCE with logits), then ``--steps`` timed inference forwards in eval
mode. Times are the best (and the median) over the timed steps. Inputs are random images and random
targets (about 1% positive); the MSRN models get a random label graph with 5 neighbours per label
(a mask up to 2,048 labels, an edge list above) and learnable label features. The machine's load is
reported as by ``benchmarks/bench.py``; figures from a machine that was not quiet compare the models
with each other only.

``--profile cpu`` swaps ResNet-101 and the paper's widths for the CPU training profile's model
(``resnet18`` with narrow stages, ``d = 64``): for checking the script, not for figures.

The table goes to stdout, then one last line of JSON.
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

import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from bench import QUIET_LOAD, QUIET_OTHER_CORES, MachineLoad  # noqa: E402  (the sibling script)

MODELS = ("msrn_paper", "msrn_label_wise", "resnet_linear", "resnet_mldecoder")
# Bytes per parameter a training run needs at least: weights, gradients, SGD momentum (4 bytes each),
# and as much again for activations and work space.
BYTES_PER_PARAMETER = 16
NEIGHBOURS = 5
POSITIVE_RATE = 0.01

PROFILES = {
    # The paper's model: ResNet-101, d = 512, fc1 of 2048 (msrn_resnet101's defaults).
    "paper": dict(backbone="resnet101", backbone_kwargs={}, msrn={}),
    # The CPU training profile's model (msrn.engine.cpu_config): for checking the script only.
    "cpu": dict(
        backbone="resnet18",
        backbone_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16},
        msrn=dict(embed_dim=64, hidden_dim=256, gat_hidden_dim=64, label_feature_dim=64),
    ),
}


# ---------------------------------------------------------------------------------- worker side
def _peak_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _random_graph(num_labels: int):
    """Each label attends to NEIGHBOURS random others: a [2, E] edge list, or its mask for small n."""
    from msrn.models.msrn import DENSE_GRAPH_MAX_LABELS

    generator = torch.Generator().manual_seed(0)
    neighbours = torch.randint(0, num_labels, (num_labels * NEIGHBOURS,), generator=generator)
    edges = torch.stack([torch.arange(num_labels).repeat_interleave(NEIGHBOURS), neighbours])
    if num_labels > DENSE_GRAPH_MAX_LABELS:
        return edges
    mask = torch.zeros(num_labels, num_labels, dtype=torch.bool)
    mask[edges[0], edges[1]] = True
    return mask


class _DecoderLayers(torch.nn.Module):
    """timm's MLDecoder layers run one after the other: since torch 2.1, ``nn.TransformerDecoder`` calls
    its layers with arguments (``tgt_is_causal``...) and reads attributes (``self_attn``) that timm's
    ``TransformerDecoderLayerOptimal`` does not have. Same computation, same weights."""

    def __init__(self, layers: torch.nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory)
        return tgt


def build_model(name: str, num_labels: int, profile: str, device: str = "cpu"):
    """The model ``name`` for ``num_labels`` labels (on the meta device: sizes only) and its loss."""
    import timm
    import torch.nn.functional as F

    import msrn

    settings = PROFILES[profile]
    with torch.device(device):
        if name.startswith("msrn"):
            graph = _random_graph(num_labels) if device != "meta" else None
            model = timm.create_model(
                "msrn_custom",
                backbone=settings["backbone"],
                backbone_kwargs=settings["backbone_kwargs"] or None,
                num_classes=num_labels,
                label_graph=graph,
                head="label_wise" if name == "msrn_label_wise" else "paper",
                **settings["msrn"],
            )
            return model, msrn.MSRNLoss(model)
        model = timm.create_model(settings["backbone"], num_classes=num_labels, **settings["backbone_kwargs"])
        if name == "resnet_mldecoder":
            from timm.layers.ml_decoder import add_ml_decoder_head

            model = add_ml_decoder_head(model)
            model.fc.decoder = _DecoderLayers(model.fc.decoder.layers)
        return model, F.binary_cross_entropy_with_logits


def count_parameters(name: str, num_labels: int, profile: str) -> int:
    """Parameters of the model, counted on the meta device (nothing allocated)."""
    model, _ = build_model(name, num_labels, profile, device="meta")
    return sum(p.numel() for p in model.parameters())


def run_worker(name: str, num_labels: int, args: argparse.Namespace) -> dict:
    import logging

    logging.disable(logging.WARNING)  # no "no label graph" notes in the output
    torch.manual_seed(0)
    model, criterion = build_model(name, num_labels, args.profile)
    parameters = sum(p.numel() for p in model.parameters())
    images = torch.randn(args.batch, 3, args.size, args.size)
    targets = (torch.rand(args.batch, num_labels) < POSITIVE_RATE).float()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    train_times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            train_times.append(time.perf_counter() - start)
    model.eval()
    eval_times = []
    with torch.inference_mode():
        for _ in range(args.steps):
            start = time.perf_counter()
            logits = model(images)
            eval_times.append(time.perf_counter() - start)
    if tuple(logits.shape) != (args.batch, num_labels) or not bool(torch.isfinite(logits).all()):
        raise RuntimeError(
            f"{name} at n={num_labels} gave logits {list(logits.shape)} with non-finite values"
        )
    return {
        "model": name,
        "labels": num_labels,
        "parameters": parameters,
        "peak_mib": round(_peak_kib() / 1024, 1),
        "train_s": [round(t, 4) for t in train_times],
        "eval_s": [round(t, 4) for t in eval_times],
        "loss": round(loss.item(), 4),
    }


# ---------------------------------------------------------------------------------- parent side
def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _worker_command(name: str, num_labels: int, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", f"{name}:{num_labels}"]
    for option in ("batch", "size", "steps", "warmup", "profile"):
        command += [f"--{option}", str(getattr(args, option))]
    return command


def _run_case(name: str, num_labels: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(_worker_command(name, num_labels, args), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{name} at n={num_labels} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _row(result: dict) -> str:
    head = f"{result['model']:17s} {result['labels']:6d} {result['parameters']:14,d}"
    if result.get("skipped"):
        return f"{head}   {result['skipped']}"
    train, evaluate = result["train_s"], result["eval_s"]
    return (
        f"{head} {result['peak_mib']:10.0f} {min(train):9.3f} {statistics.median(train):9.3f}"
        f" {min(evaluate):9.3f} {statistics.median(evaluate):9.3f}"
    )


def run_all(args: argparse.Namespace) -> dict:
    limit_gib = args.memory_gib if args.memory_gib is not None else memory_gib()
    load = MachineLoad()
    results = []
    print(
        f"{'model':17s} {'n':>6s} {'parameters':>14s} {'peak MiB':>10s} {'train s':>9s} {'(median)':>9s}"
        f" {'eval s':>9s} {'(median)':>9s}"
    )
    for num_labels in args.labels:
        for name in args.models:
            result: dict
            parameters = count_parameters(name, num_labels, args.profile)
            needed_gib = parameters * BYTES_PER_PARAMETER / 2**30
            if name == "msrn_paper" and needed_gib > limit_gib:
                result = {
                    "model": name,
                    "labels": num_labels,
                    "parameters": parameters,
                    "skipped": f"does not fit: {parameters:,d} parameters x {BYTES_PER_PARAMETER} bytes = "
                    f"{needed_gib:.1f} GiB > {limit_gib:.1f} GiB of memory",
                }
            else:
                result = _run_case(name, num_labels, args)
            results.append(result)
            print(_row(result), flush=True)
    load.finish()
    print(f"\nmachine: {load.describe()}")
    if not load.quiet:
        print(
            f"WARNING: the machine was not quiet (needs a load average <= {QUIET_LOAD} before and <= "
            f"{QUIET_OTHER_CORES} cores used by other processes); compare these figures with each other "
            f"only.",
            file=sys.stderr,
        )
    summary = {
        "results": results,
        "quiet": load.quiet,
        "load_before": None if load.load_before is None else round(load.load_before, 2),
        "load_after": None if load.load_after is None else round(load.load_after, 2),
        "other_cores": None if load.other_cores is None else round(load.other_cores, 2),
        "config": dict(
            labels=args.labels,
            models=args.models,
            batch=args.batch,
            size=args.size,
            steps=args.steps,
            warmup=args.warmup,
            profile=args.profile,
            memory_gib=round(limit_gib, 1),
            threads=os.cpu_count(),
            machine=platform.machine(),
        ),
    }
    return summary


def _label_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--labels takes comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--labels takes integers >= 1, got {text!r}")
    return counts


def _model_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--models takes names among {', '.join(MODELS)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=_label_counts, default=[20, 80, 1000, 9605], help="e.g. 20,80")
    parser.add_argument("--models", type=_model_names, default=list(MODELS), help=", ".join(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=448, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (and eval forwards)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps before timing")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="paper")
    parser.add_argument(
        "--memory-gib", type=float, default=None, help="memory the paper head must fit in (default: MemTotal)"
    )
    parser.add_argument("--json", type=pathlib.Path, help="also write the JSON summary to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("batch", "size", "steps"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        name, num_labels = args.worker.split(":")
        print(json.dumps(run_worker(name, int(num_labels), args)))
        return 0
    summary = run_all(args)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
