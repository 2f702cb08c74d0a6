"""Peak memory and time of scoring a test split with thousands of labels: Open Images' test split
(125,436 images, 9,605 trainable labels) by default.

    python benchmarks/bench_eval.py                                  # Open Images' test size (minutes)
    python benchmarks/bench_eval.py --images 20000 --labels 2000     # a quick look
    python benchmarks/bench_eval.py --unknown-as-negative            # every label known, as that option

Each phase runs in a fresh process, so its figures are its own:

- ``collect``: :func:`msrn.engine.predict`, which gathers the probabilities and targets ``[N, n]`` of
  an evaluation loader, on a data set that yields a 2 x 2 image and the dense ``[n]`` target of a
  generated image (about ``--labels-per-image`` verified labels, 60% of them positive; the others
  unknown, -1, or 0 with ``--unknown-as-negative``), through a model that returns random logits. So
  what is measured is the collection, not a network.
- ``metrics``: :func:`msrn.metrics.multilabel_metrics` with top-3 (what ``msrn evaluate`` and the
  trainer report) on random float32 scores and int8 targets of that shape.
- ``thresholds``: :func:`msrn.metrics.fit_thresholds` on the same arrays (what the trainer does on a
  validation split).

Each prints its wall time and the peak resident memory of its process above what it held before
the phase began (``ru_maxrss`` minus the baseline; the inputs of ``metrics`` and ``thresholds``,
``N x n x 5`` bytes, are part of the baseline). The dense inputs themselves are the floor: scores
``N x n x 4`` bytes and targets ``N x n`` bytes. The last line is one JSON object.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _machine  # noqa: E402

PHASES = ("collect", "metrics", "thresholds")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _targets(rng, images: int, labels: int, per_image: int, unknown_as_negative: bool):
    import numpy as np

    targets = np.full((images, labels), 0 if unknown_as_negative else -1, dtype=np.int8)
    rows = np.repeat(np.arange(images), per_image)
    columns = rng.integers(0, labels, size=images * per_image)
    targets[rows, columns] = (rng.random(images * per_image) < 0.6).astype(np.int8)
    return targets


def worker(phase: str, images: int, labels: int, per_image: int, unknown_as_negative: bool) -> dict:
    import numpy as np
    import torch

    from msrn.engine import DistributedContext, EvalShardSampler, predict
    from msrn.metrics import fit_thresholds, multilabel_metrics

    rng = np.random.default_rng(0)
    if phase == "collect":
        targets = _targets(rng, images, labels, per_image, unknown_as_negative)

        class Rows(torch.utils.data.Dataset):
            num_classes = labels

            def __len__(self) -> int:
                return images

            def __getitem__(self, index: int):
                return torch.zeros(3, 2, 2), torch.from_numpy(targets[index].astype(np.float32))

        loader = torch.utils.data.DataLoader(Rows(), batch_size=64, sampler=EvalShardSampler(images))
        generator = torch.Generator().manual_seed(0)

        def model(batch: torch.Tensor) -> torch.Tensor:
            return torch.randn(len(batch), labels, generator=generator)

        baseline = _peak_rss_mib()
        start = time.perf_counter()
        predict(model, loader, DistributedContext(), images, progress=False)
    else:
        targets = _targets(rng, images, labels, per_image, unknown_as_negative)
        scores = rng.random((images, labels), dtype=np.float32)
        baseline = _peak_rss_mib()
        start = time.perf_counter()
        if phase == "metrics":
            multilabel_metrics(scores, targets, top_k=3)
        else:
            fit_thresholds(scores, targets)
    return {
        "phase": phase,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_above_baseline_mib": round(_peak_rss_mib() - baseline, 1),
        "baseline_mib": round(baseline, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=125_436, help="test images (default: Open Images V6)")
    parser.add_argument("--labels", type=int, default=9_605, help="labels (default: V6's trainable ones)")
    parser.add_argument("--labels-per-image", type=int, default=8, help="verified labels per image")
    parser.add_argument("--unknown-as-negative", action="store_true", help="unlisted labels are 0, not -1")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    parser.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    sizes = (args.images, args.labels, args.labels_per_image, args.unknown_as_negative)
    if args.worker:
        print(json.dumps(worker(args.worker, *sizes)))
        return {}
    info = _machine.machine_info()
    print(_machine.describe(info))
    dense_mib = args.images * args.labels * 5 / 2**20
    print(f"{args.images} images x {args.labels} labels: scores + targets {dense_mib:,.0f} MiB")
    results = []
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for phase in args.phases:
        command = [sys.executable, __file__, "--worker", phase, *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
        if done.returncode != 0:
            result = {"phase": phase, "failed": done.returncode, "stderr": done.stderr[-600:]}
        else:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(json.dumps(result))
    summary = {"machine": info, "images": args.images, "labels": args.labels, "results": results}
    summary.update(unknown_as_negative=args.unknown_as_negative, dense_inputs_mib=round(dense_mib, 1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
