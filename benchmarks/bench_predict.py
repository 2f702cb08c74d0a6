"""Images per second of ``msrn predict`` (each backend and precision) and ``msrn evaluate`` against a
plain timm ResNet-101 loop, and how far each backend's probabilities are from torch fp32.

    python benchmarks/bench_predict.py                  # 64 generated 448 px JPEGs, ~5 min on 2 cores
    python benchmarks/bench_predict.py --rounds 2       # every case twice (order swapped)
    python benchmarks/bench_predict.py --model DIR      # a trained model folder instead of a random one
    python benchmarks/bench_predict.py --device cuda    # on a GPU (the torch backend; onnxruntime is CPU)

What runs. A folder of ``--images`` JPEGs (448 x 448, quality 90, generated from a seed) with a
``labels.csv``, and a randomly initialised ``msrn_resnet101`` with the 20 VOC labels saved the way
the trainer saves it (or ``--model DIR``). Then, each in its own process:

    resnet_loop          timm ``resnet101`` (20 classes), fp32, in a plain loop: timm's eval transform
                         for 448 px, ``DataLoader(batch_size=--batch, num_workers=--workers)``,
                         ``torch.inference_mode()``, NCHW;
    predict_torch        ``msrn predict --model local-dir:MODEL FOLDER --json --backend torch``;
    predict_onnxruntime  the same with ``--backend onnxruntime`` (fp32);
    predict_int8         ``--backend onnxruntime --precision int8`` (calibrated on the first 32 images);
    evaluate             ``msrn evaluate MODEL --data FOLDER/labels.csv --dataset csv`` (its default
                         backend);
    torch_variants       model-only images/s of the torch model under ``no_grad`` vs
                         ``inference_mode``, channels-last, BatchNorm folded, and both (what the torch
                         backend does), on the first ``--batch`` images.

The commands run through ``msrn.cli.main`` exactly as from the shell, with ``--workers`` reading
processes. Before the timed rounds, the ONNX files are exported (and the int8 one quantized) into
the benchmark's own cache (``MSRN_CACHE``), and that one-off cost is reported as ``prepare_s``.
Each worker reports its start-up (interpreter, imports, loading the model, creating the backend)
apart from the loop over the images, and two speeds: images/s of the loop (reading, decoding,
resizing, batching, the model, the output) and model-only images/s (the time inside the backend, or
the ResNet's forward). Each predict case records its probabilities; the table gives the largest
|Δp| against ``predict_torch`` and the share of (image, label) decisions at the model's thresholds
that agree with it. Cases alternate over ``--rounds`` (order swapped every round). The last line is
JSON with ``best_predict_ratio``: the images/s of the fastest fp32 ``msrn predict`` backend over the
ResNet loop's, decoding included.
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
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _machine  # noqa: E402  (benchmarks/_machine.py, next to this script)

# name: (backend, precision) of the predict cases.
PREDICT_CASES = {
    "predict_torch": ("torch", "fp32"),
    "predict_onnxruntime": ("onnxruntime", "fp32"),
    "predict_int8": ("onnxruntime", "int8"),
}
CASES = ("resnet_loop", *PREDICT_CASES, "evaluate", "torch_variants")
REFERENCE = "predict_torch"
CALIBRATION_IMAGES = 32  # what msrn predict --precision int8 calibrates on by default


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
def _replaced(module, name: str, make_replacement):
    """While active, ``module.name`` is ``make_replacement(original)``."""
    original = getattr(module, name)
    setattr(module, name, make_replacement(original))
    try:
        yield
    finally:
        setattr(module, name, original)


class _TimedBackend:
    """An inference backend that adds the seconds spent in each call to ``clock["model_s"]``."""

    def __init__(self, inner, clock: dict[str, float], device: str) -> None:
        self.inner, self.clock, self.device = inner, clock, device

    def __call__(self, images):
        import torch

        start = time.perf_counter()
        logits = self.inner(images)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.clock["model_s"] += time.perf_counter() - start
        return logits

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _timing_backend_factory(clock: dict[str, float], device: str):
    """A replacement for ``create_backend`` that wraps its result in :class:`_TimedBackend` and marks
    ``clock["ready"]``: the model is loaded and its backend made (exported, compiled) by then."""

    def make(original):
        def create(*args, **kwargs):
            backend = original(*args, **kwargs)
            clock["ready"] = time.perf_counter()
            return _TimedBackend(backend, clock, device)

        return create

    return make


def _resnet_loop(args: argparse.Namespace, clock: dict[str, float]) -> dict[str, object]:
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
    clock["ready"] = time.perf_counter()
    images = 0
    with torch.inference_mode():
        for batch, _ in loader:
            start = time.perf_counter()
            logits = model(batch.to(device, non_blocking=True))
            if device.type == "cuda":
                torch.cuda.synchronize()
            clock["model_s"] += time.perf_counter() - start
            probabilities = torch.sigmoid(logits).cpu()
            images += len(probabilities)
    return {"images": images}


def _predict_argv(args: argparse.Namespace, backend: str, precision: str) -> list[str]:
    argv = [
        "predict",
        "--model",
        f"local-dir:{args.model_dir}",
        str(args.folder),
        "--json",
        "--batch-size",
        str(args.batch),
        "--workers",
        str(args.workers),
        "--device",
        args.device,
        "--backend",
        backend,
        "--precision",
        precision,
    ]
    return argv


def _run_predict(args: argparse.Namespace, name: str, clock: dict[str, float]) -> dict[str, object]:
    import numpy as np

    import msrn.cli
    import msrn.predictor

    backend, precision = PREDICT_CASES[name]
    rows: dict[int, object] = {}
    seen: dict[str, object] = {}

    def tee(original):
        def iter_batches(self, images):
            seen["thresholds"] = self.thresholds.tolist()
            seen["backend"] = self.backend.name
            for batch in original(self, images):
                if batch.probabilities is not None:
                    for row, index in zip(batch.probabilities.numpy(), batch.indices, strict=True):
                        rows[index] = row
                yield batch

        return iter_batches

    output = io.StringIO()
    with (
        _replaced(msrn.predictor, "create_backend", _timing_backend_factory(clock, args.device)),
        _replaced(msrn.predictor.Predictor, "iter_batches", tee),
        contextlib.redirect_stdout(output),
    ):
        status = msrn.cli.main(_predict_argv(args, backend, precision))
    if status != 0:
        raise SystemExit(f"msrn predict exited with {status}")
    probabilities = np.stack([rows[index] for index in sorted(rows)])
    if args.save_probabilities:
        np.save(args.save_probabilities, probabilities)
    return {
        "images": len(output.getvalue().strip().splitlines()),
        "backend": seen["backend"],
        "precision": precision,
        "thresholds": seen["thresholds"],
    }


def _run_evaluate(args: argparse.Namespace, clock: dict[str, float]) -> dict[str, object]:
    import msrn.cli
    import msrn.engine.evaluate

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
    with (
        _replaced(msrn.engine.evaluate, "create_backend", _timing_backend_factory(clock, args.device)),
        contextlib.redirect_stdout(output),
    ):
        status = msrn.cli.main(argv)
    if status != 0:
        raise SystemExit(f"msrn evaluate exited with {status}")
    return {"images": args.images}


def _torch_variants(args: argparse.Namespace, clock: dict[str, float]) -> dict[str, object]:
    """Model-only images/s of the torch model's inference options, each on the same batch."""
    import copy

    import torch

    from msrn import Predictor
    from msrn.backends import TorchBackend
    from msrn.data import find_image_files, load_rgb_image

    device = torch.device(args.device)
    predictor = Predictor(f"local-dir:{args.model_dir}", device=device, backend="torch")
    model = predictor.model  # the backend made a channels-last copy; this one is NCHW
    files = find_image_files(args.folder)[: args.batch]
    batch = torch.stack([predictor.transform(load_rgb_image(path)) for path in files]).to(device)

    def eager(context):
        def run(images):
            with context():
                return model(images)

        return run

    variants = {
        "no_grad": eager(torch.no_grad),
        "inference_mode": eager(torch.inference_mode),
        "folded_batchnorm": TorchBackend(model, device, channels_last=False, fold_batchnorm=True),
        # Channels-last converts the weights in place: these two get copies of their own.
        "channels_last": TorchBackend(copy.deepcopy(model), device, channels_last=True, fold_batchnorm=False),
        "both": TorchBackend(copy.deepcopy(model), device, channels_last=True, fold_batchnorm=True),
    }
    del predictor
    clock["ready"] = time.perf_counter()
    speeds: dict[str, float] = {}
    for _ in range(2):  # the second pass is kept: the first one warms up each variant
        for name, run in variants.items():
            start = time.perf_counter()
            run(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            speeds[name] = len(batch) / (time.perf_counter() - start)
    clock["model_s"] = len(batch) / speeds["both"]
    return {"images": len(batch), "variants": {k: round(v, 3) for k, v in speeds.items()}}


def run_worker(name: str, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    clock: dict[str, float] = {"model_s": 0.0}
    if name == "resnet_loop":
        report = _resnet_loop(args, clock)
    elif name in PREDICT_CASES:
        report = _run_predict(args, name, clock)
    elif name == "evaluate":
        report = _run_evaluate(args, clock)
    else:
        report = _torch_variants(args, clock)
    end = time.perf_counter()
    if "ready" not in clock:
        raise RuntimeError(f"{name}: the backend factory was not called; update _timing_backend_factory.")
    loop = end - clock["ready"]
    images = report["images"]
    print(
        json.dumps(
            {
                "case": name,
                **report,
                "startup_s": clock["ready"] - start,
                "loop_s": loop,
                "images_per_s": images / loop,
                "model_s": clock["model_s"],
                "model_images_per_s": images / clock["model_s"] if clock["model_s"] > 0 else None,
            }
        )
    )


# ---------------------------------------------------------------------------------- parent side
def _worker_command(name: str, args: argparse.Namespace, probabilities: pathlib.Path | None) -> list[str]:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name]
    command += ["--folder", str(args.folder), "--model-dir", str(args.model_dir)]
    for option in ("images", "batch", "workers", "image_size", "device", "baseline"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    if probabilities is not None:
        command += ["--save-probabilities", str(probabilities)]
    return command


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MSRN_CACHE"] = str(args.cache)
    return env


def _run_case(
    name: str, args: argparse.Namespace, probabilities: pathlib.Path | None = None
) -> dict[str, object]:
    command = _worker_command(name, args, probabilities)
    result = subprocess.run(command, env=_environment(args), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"case {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _prepare(args: argparse.Namespace, cases: list[str]) -> float:
    """Export (and quantize) the ONNX models into the benchmark's cache before any timing."""
    onnx_cases = [name for name in cases if name in PREDICT_CASES and PREDICT_CASES[name][0] == "onnxruntime"]
    if not onnx_cases:
        return 0.0
    code = (
        "import sys, msrn\n"
        "from msrn.data import find_image_files\n"
        f"calibration = find_image_files(sys.argv[2])[:{CALIBRATION_IMAGES}]\n"
        "for precision in sys.argv[3:]:\n"
        "    msrn.Predictor('local-dir:' + sys.argv[1], device='cpu', backend='onnxruntime', "
        "precision=precision, calibration_images=calibration)\n"
    )
    precisions = sorted({PREDICT_CASES[name][1] for name in onnx_cases})
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code, str(args.model_dir), str(args.folder), *precisions],
        env=_environment(args),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"exporting the ONNX models failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def available_cases(args: argparse.Namespace) -> list[str]:
    """The cases asked for (``--cases``) that can run here: onnxruntime ones need the package and the CPU."""
    try:
        import onnxruntime  # noqa: F401

        has_onnxruntime = True
    except ImportError:
        has_onnxruntime = False
    cases = []
    for name in args.cases:
        if name in PREDICT_CASES and PREDICT_CASES[name][0] == "onnxruntime":
            if not has_onnxruntime or args.device != "cpu":
                print(f"skipping {name}: needs onnxruntime and --device cpu", file=sys.stderr)
                continue
        cases.append(name)
    return cases


def compare(probabilities: dict[str, "object"], thresholds: list[float]) -> dict[str, dict[str, float]]:
    """Per predict case, max |Δp| against the reference and the share of agreeing label decisions."""
    import numpy as np

    reference = probabilities[REFERENCE]
    limits = np.asarray(thresholds)
    out = {}
    for name, values in probabilities.items():
        out[name] = {
            "max_abs_dp": float(np.abs(values - reference).max()),
            "label_agreement": float(((values >= limits) == (reference >= limits)).mean()),
        }
    return out


def run_all(args: argparse.Namespace) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    cases = available_cases(args)
    prepare_s = _prepare(args, cases)
    if prepare_s:
        print(f"ONNX export and int8 quantization: {prepare_s:.1f} s (once per model)", file=sys.stderr)
    results: dict[str, list[dict[str, object]]] = {name: [] for name in cases}
    saved: dict[str, pathlib.Path] = {}
    for round_index in range(args.rounds):
        for name in cases if round_index % 2 == 0 else cases[::-1]:
            path = None
            if name in PREDICT_CASES and round_index == 0:
                path = args.folder.parent / f"probabilities-{name}.npy"
                saved[name] = path
            measured = _run_case(name, args, path)
            expected = min(args.images, args.batch) if name == "torch_variants" else args.images
            if measured["images"] != expected:
                raise RuntimeError(f"{name} labelled {measured['images']} of {expected} images")
            results[name].append(measured)
            model_speed = measured["model_images_per_s"]
            print(
                f"  round {round_index + 1}/{args.rounds} {name:20s} {measured['images_per_s']:.2f} img/s, "
                f"model only {model_speed:.2f} (start-up {measured['startup_s']:.1f} s, "
                f"loop {measured['loop_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    load_after = os.getloadavg()[0]
    return summarise(args, results, saved, prepare_s, load_before, load_after)


def summarise(args, results, saved, prepare_s, load_before, load_after) -> dict[str, object]:
    import numpy as np

    summary: dict[str, object] = {}
    agreement: dict[str, dict[str, float]] = {}
    predict_names = [name for name in PREDICT_CASES if name in results]
    if REFERENCE in saved and all(name in saved for name in predict_names):
        thresholds = results[REFERENCE][0]["thresholds"]
        agreement = compare({name: np.load(saved[name]) for name in predict_names}, thresholds)
    baseline = max(r["images_per_s"] for r in results["resnet_loop"]) if "resnet_loop" in results else None
    print()
    header = (
        f"{'case':20s} {'backend':12s} {'precision':9s} {'best img/s':>10s} {'median':>7s} "
        f"{'model img/s':>11s} {'x timm':>7s} {'max |dp|':>9s} {'labels':>7s} {'start-up s':>10s}"
    )
    print(header)
    for name, runs in results.items():
        if name == "torch_variants":  # model-only figures of one batch, not a loop over the images
            variants = {key: max(r["variants"][key] for r in runs) for key in runs[0]["variants"]}
            summary[name] = {"backend": "torch", "precision": "fp32", "model_images_per_s": variants}
            continue
        speeds = [r["images_per_s"] for r in runs]
        model_speeds = [r["model_images_per_s"] for r in runs if r["model_images_per_s"]]
        startup = statistics.median(r["startup_s"] for r in runs)
        backend, precision = PREDICT_CASES.get(name, ("torch", "fp32"))
        if name == "evaluate":
            backend = "default"
        ratio = max(speeds) / baseline if baseline else float("nan")
        dp = agreement.get(name, {}).get("max_abs_dp")
        agree = agreement.get(name, {}).get("label_agreement")
        print(
            f"{name:20s} {backend:12s} {precision:9s} {max(speeds):10.2f} {statistics.median(speeds):7.2f} "
            f"{max(model_speeds) if model_speeds else float('nan'):11.2f} {ratio:7.3f} "
            f"{'' if dp is None else f'{dp:.1e}':>9s} {'' if agree is None else f'{agree:.2%}':>7s} "
            f"{startup:10.1f}"
        )
        entry = {
            "backend": backend,
            "precision": precision,
            "images_per_s": round(max(speeds), 3),
            "images_per_s_median": round(statistics.median(speeds), 3),
            "model_images_per_s": round(max(model_speeds), 3) if model_speeds else None,
            "startup_s": round(startup, 2),
        }
        if baseline:
            entry["vs_timm"] = round(ratio, 3)
        if name in agreement:
            entry.update(
                max_abs_dp=float(f"{agreement[name]['max_abs_dp']:.3g}"),
                label_agreement=round(agreement[name]["label_agreement"], 4),
            )
        summary[name] = entry
    if "torch_variants" in summary:
        variants = summary["torch_variants"]["model_images_per_s"]
        print("\ntorch model only, img/s: " + ", ".join(f"{k} {v:.2f}" for k, v in variants.items()))
    fp32 = [name for name in predict_names if PREDICT_CASES[name][1] == "fp32"]
    if baseline and fp32:
        fastest = max(fp32, key=lambda name: summary[name]["images_per_s"])
        summary["best_predict_ratio"] = round(summary[fastest]["images_per_s"] / baseline, 3)
        summary["best_predict_backend"] = PREDICT_CASES[fastest][0]
        print(
            f"\nfastest fp32 msrn predict ({summary['best_predict_backend']}): "
            f"{summary['best_predict_ratio']:.3f} x the images/s of the plain {args.baseline} loop "
            f"(decoding included)"
        )
    machine = _machine.machine_info()
    quiet = load_before <= 1.0
    print(f"\nmachine: {_machine.describe(machine)}")
    print(f"load average {load_before:.2f} before, {load_after:.2f} after")
    if not quiet:
        print(
            "WARNING: the load average exceeded 1 before the run: compare these figures with each other "
            "only; do not quote them in docs/performance.md.",
            file=sys.stderr,
        )
    summary.update(
        prepare_s=round(prepare_s, 1),
        quiet=quiet,
        load_before=round(load_before, 2),
        load_after=round(load_after, 2),
        machine=machine,
        config=dict(
            images=args.images,
            image_size=args.image_size,
            batch=args.batch,
            workers=args.workers,
            rounds=args.rounds,
            device=args.device,
            architecture=args.architecture,
            model=str(args.model) if args.model else None,
            baseline=args.baseline,
            cases=list(results),
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
        "--workers", type=int, default=2, help="DataLoader processes of every case (default 2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of every case (order swapped every round)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cases", nargs="+", choices=CASES, default=list(CASES), help="cases to run (default all)"
    )
    parser.add_argument(
        "--architecture", default="msrn_resnet101", help="the MSRN that predict/evaluate load"
    )
    parser.add_argument(
        "--model",
        type=pathlib.Path,
        help="a saved model folder with the 20 VOC labels (e.g. a run's best/) instead of a random "
        "--architecture",
    )
    parser.add_argument("--baseline", default="resnet101", help="the timm model of the plain loop")
    parser.add_argument(
        "--dir",
        type=pathlib.Path,
        help="keep the images, the model and the ONNX cache here (default: a temporary folder)",
    )
    parser.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--save-probabilities", type=pathlib.Path, help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("images", "image_size", "batch", "rounds"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model} is not a saved model folder (no config.json)")
    if not args.worker and "resnet_loop" not in args.cases:
        parser.error("--cases must include resnet_loop: every ratio is to it")
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
        args.folder, args.cache = root / "images", root / "cache"
        args.model_dir = args.model or root / "model"
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
