"""Images per second of ``msrn predict`` and ``msrn evaluate`` against a plain timm ResNet-101 loop.

    python benchmarks/bench_predict.py                  # 64 generated 448 px JPEGs, ~2-3 min on 2 cores
    python benchmarks/bench_predict.py --images 300     # a few hundred images (about 12 min on 2 cores)
    python benchmarks/bench_predict.py --device cuda    # on a GPU (data loading matters far more there)

What runs. A folder of ``--images`` JPEGs (448 x 448, quality 90, generated from a seed) with a
``labels.csv`` for evaluation, and a randomly initialised ``msrn_resnet101`` with the 20 VOC labels
saved the way the trainer saves it. Then, each in its own process:

    resnet_loop   timm ``resnet101`` (20 classes) in a plain loop: timm's eval transform for 448 px,
                  ``torch.utils.data.DataLoader(batch_size=--batch, num_workers=--workers)``,
                  ``torch.inference_mode()``;
    predict       ``msrn predict --model local-dir:MODEL FOLDER --json --batch-size --batch``;
    evaluate      ``msrn evaluate MODEL --data FOLDER/labels.csv --dataset csv --batch-size --batch
                  --workers --workers``.

Both commands run through ``msrn.cli.main`` exactly as from the shell. Each worker reports its
start-up (interpreter, imports and building or loading the model) apart from the loop over the
images (reading, decoding, resizing, batching, the forward passes and the output), and the loop's
images per second. Cases alternate over ``--rounds`` like benchmarks/bench.py (order swapped every
round); the table shows the best and median loop speed, and the last line is JSON.
"""

import argparse
import contextlib
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = ("resnet_loop", "predict", "evaluate")


# ------------------------------------------------------------------------------------------ data
def write_images(folder: pathlib.Path, count: int, size: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs of a noisy background with a few coloured shapes, and ``labels.csv``."""
    import numpy as np
    from PIL import Image, ImageDraw

    from msrn.data import VOC_CLASSES

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,labels"]
    for index in range(count):
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        labels = sorted(set(rng.choice(len(VOC_CLASSES), size=int(rng.integers(1, 4))).tolist()))
        for label in labels:
            x, y = rng.integers(0, size * 3 // 4, 2)
            side = int(rng.integers(size // 8, size // 3))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if label % 2 else draw.rectangle
            shape([int(x), int(y), int(x) + side, int(y) + side], fill=colour)
        name = f"img_{index:05d}.jpg"
        image.save(folder / name, quality=90)
        rows.append(f"{name},{';'.join(VOC_CLASSES[label] for label in labels)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return rows[1:]


def write_model(folder: pathlib.Path, image_size: int, architecture: str, **model_kwargs) -> None:
    """A randomly initialised MSRN with the VOC labels, saved as the trainer saves its ``best/``."""
    import timm
    import torch

    import msrn  # noqa: F401  (registers the architectures)
    from msrn.data import VOC_CLASSES
    from msrn.engine import save_model

    torch.manual_seed(0)
    model = timm.create_model(
        architecture, num_classes=len(VOC_CLASSES), label_names=list(VOC_CLASSES), **model_kwargs
    )
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "input_size": (3, image_size, image_size),
        "test_input_size": (3, image_size, image_size),
    }
    save_model(model, folder, {"image_size": image_size})


# ---------------------------------------------------------------------------------- worker side
@contextlib.contextmanager
def _mark_when_done(module, name: str, marks: dict[str, float]):
    """While active, ``marks["ready"]`` records when ``module.name`` returned (the model is loaded)."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        marks["ready"] = time.perf_counter()
        return result

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _resnet_loop(args: argparse.Namespace, marks: dict[str, float]) -> int:
    import timm
    import torch
    from timm.data import ImageDataset, create_transform, resolve_model_data_config

    device = torch.device(args.device)
    model = timm.create_model(args.baseline, num_classes=20).eval().to(device)
    config = resolve_model_data_config(model)
    config.update(input_size=(3, args.image_size, args.image_size), crop_pct=1.0, crop_mode="squash")
    dataset = ImageDataset(str(args.folder), transform=create_transform(**config, is_training=False))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    marks["ready"] = time.perf_counter()
    images = 0
    with torch.inference_mode():
        for batch, _ in loader:
            probabilities = torch.sigmoid(model(batch.to(device, non_blocking=True))).cpu()
            images += len(probabilities)
    return images


def run_worker(name: str, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    marks: dict[str, float] = {}
    if name == "resnet_loop":
        images = _resnet_loop(args, marks)
    else:
        import msrn.cli
        import msrn.engine.evaluate
        import msrn.predictor

        if name == "predict":
            loader = (msrn.predictor, "load_model")
            argv = [
                "predict",
                "--model",
                f"local-dir:{args.model_dir}",
                str(args.folder),
                "--json",
                "--batch-size",
                str(args.batch),
                "--device",
                args.device,
            ]
        else:
            loader = (msrn.engine.evaluate, "load_trained_model")
            argv = [
                "evaluate",
                str(args.model_dir),
                "--data",
                str(args.folder / "labels.csv"),
                "--dataset",
                "csv",
                "--batch-size",
                str(args.batch),
                "--workers",
                str(args.workers),
                "--device",
                args.device,
                "--json",
            ]
        output = io.StringIO()
        with _mark_when_done(*loader, marks), contextlib.redirect_stdout(output):
            status = msrn.cli.main(argv)
        if status != 0:
            raise SystemExit(f"msrn {name} exited with {status}")
        lines = output.getvalue().strip().splitlines()
        images = len(lines) if name == "predict" else args.images
    end = time.perf_counter()
    if "ready" not in marks:
        raise RuntimeError(f"{name}: the model-loading function was not called; update _mark_when_done.")
    loop = end - marks["ready"]
    print(
        json.dumps(
            {
                "case": name,
                "images": images,
                "startup_s": marks["ready"] - start,
                "loop_s": loop,
                "images_per_s": images / loop,
            }
        )
    )


# ---------------------------------------------------------------------------------- parent side
def _run_case(name: str, args: argparse.Namespace) -> dict[str, object]:
    command = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--worker",
        name,
        "--folder",
        str(args.folder),
        "--model-dir",
        str(args.model_dir),
        "--images",
        str(args.images),
        "--batch",
        str(args.batch),
        "--workers",
        str(args.workers),
        "--image-size",
        str(args.image_size),
        "--device",
        args.device,
        "--baseline",
        args.baseline,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"case {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_all(args: argparse.Namespace) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[str, object]]] = {name: [] for name in CASES}
    for round_index in range(args.rounds):
        for name in CASES if round_index % 2 == 0 else CASES[::-1]:
            measured = _run_case(name, args)
            if measured["images"] != args.images:
                raise RuntimeError(f"{name} labelled {measured['images']} of {args.images} images")
            results[name].append(measured)
            print(
                f"  round {round_index + 1}/{args.rounds} {name:12s} {measured['images_per_s']:.2f} img/s "
                f"(start-up {measured['startup_s']:.1f} s, loop {measured['loop_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    load_after = os.getloadavg()[0]

    summary: dict[str, object] = {}
    print()
    print(f"{'case':12s} {'best img/s':>11s} {'median img/s':>13s} {'start-up s':>11s}   runs")
    for name in CASES:
        speeds = [r["images_per_s"] for r in results[name]]
        startup = statistics.median(r["startup_s"] for r in results[name])
        print(
            f"{name:12s} {max(speeds):11.2f} {statistics.median(speeds):13.2f} {startup:11.1f}"
            f"   {len(speeds)}"
        )
        summary[f"{name}_images_per_s"] = round(max(speeds), 3)
        summary[f"{name}_startup_s"] = round(startup, 2)
    for name in ("predict", "evaluate"):
        ratio = summary[f"{name}_images_per_s"] / summary["resnet_loop_images_per_s"]
        summary[f"{name}_vs_resnet"] = round(ratio, 3)
        print(f"{name}: {ratio:.3f} x the images/s of the plain {args.baseline} loop")
    quiet = load_before <= 1.0
    print(f"\nload average {load_before:.2f} before, {load_after:.2f} after")
    if not quiet:
        print(
            "WARNING: the load average exceeded 1 before the run: compare these figures with each other "
            "only; do not quote them in docs/performance.md.",
            file=sys.stderr,
        )
    summary.update(
        quiet=quiet,
        load_before=round(load_before, 2),
        load_after=round(load_after, 2),
        config=dict(
            images=args.images,
            image_size=args.image_size,
            batch=args.batch,
            workers=args.workers,
            rounds=args.rounds,
            device=args.device,
            architecture=args.architecture,
            baseline=args.baseline,
            cpus=os.cpu_count(),
        ),
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="generated JPEGs (default 64)")
    parser.add_argument(
        "--image-size", type=int, default=448, help="side of the JPEGs and of the models' input"
    )
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass, every case")
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader processes of the ResNet loop and of msrn evaluate"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of every case (order swapped every round)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--architecture", default="msrn_resnet101", help="the MSRN that predict/evaluate load"
    )
    parser.add_argument("--baseline", default="resnet101", help="the timm model of the plain loop")
    parser.add_argument(
        "--dir", type=pathlib.Path, help="keep the images and the model here (default: a temporary folder)"
    )
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("images", "image_size", "batch", "rounds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:  # run from a checkout: use the repository's package
        sys.path.insert(0, str(REPO_ROOT))
    if args.worker:
        run_worker(args.worker, args)
        return
    with tempfile.TemporaryDirectory(prefix="msrn-bench-predict-") as scratch:
        root = args.dir or pathlib.Path(scratch)
        args.folder, args.model_dir = root / "images", root / "model"
        started = time.perf_counter()
        if not (args.folder / "labels.csv").is_file() or len(list(args.folder.glob("*.jpg"))) != args.images:
            for stale in args.folder.glob("*.jpg"):
                stale.unlink()
            write_images(args.folder, args.images, args.image_size)
        if not (args.model_dir / "config.json").is_file():
            write_model(args.model_dir, args.image_size, args.architecture)
        print(f"data and model ready in {time.perf_counter() - started:.1f} s ({root})", file=sys.stderr)
        summary = run_all(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
