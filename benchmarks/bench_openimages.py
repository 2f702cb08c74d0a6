"""Load time and peak memory of ``msrn.data.OpenImagesDataset`` on a generated train label file of
Open Images' size.

    python benchmarks/bench_openimages.py                   # 9 M images, ~57.6 M rows (~2.6 GB; minutes)
    python benchmarks/bench_openimages.py --images 200000   # a quick look
    python benchmarks/bench_openimages.py --compare-csv 5000000   # also the csv-module reader, 5 M rows
    python benchmarks/bench_openimages.py --folder DIR           # write to DIR (kept)

What is generated (into a temporary folder under ``--tmp``, deleted at the end unless ``--keep``), in
the official V6 formats and names:

- ``oidv6-class-descriptions.csv``: ``--classes`` labels (default 19,957, as V6) with the header
  ``LabelName,DisplayName``; LabelNames like ``/m/0abc12`` (a few ``/g/11...``), some display names
  with commas and quotes;
- ``oidv6-classes-trainable.txt``: ``--trainable`` of them (default 9,605), in random order (so that a
  row's label numbers are not sorted within an image: the slower case of the reader);
- ``oidv6-train-annotations-human-imagelabels.csv``: ``--images`` ImageIDs (16 hex digits, sorted as
  in the official files), each with ``1 + Poisson(--labels-per-image - 1)`` distinct labels drawn
  from a Zipf-like popularity (trainable labels the popular ones, so most rows are trainable), sorted
  by LabelName, Source ``verification`` or ``crowdsource-verification``, Confidence 1 (62%) or 0.

Then, in a fresh process each (so the figures are the loader's own): ``OpenImagesDataset(folder,
"train", check_images=False)`` (the images are not generated; listing the folder is one
``os.scandir`` pass), and with ``--graph`` also ``label_lists()`` and, where :mod:`msrn.graph` has it,
the sparse label graph. Each prints the wall time, the CPU time (user + system, of its one thread:
steadier than the wall time on a shared machine) and the peak resident memory of its process
(``ru_maxrss``, which includes the interpreter and imports: ``baseline_rss_mb`` is the peak before
loading). With ``--compare-csv N`` the first ``N`` rows are also read by a plain ``csv``-module
reader and by the library's reader, for comparison. The last line is JSON.
"""

import argparse
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("verification", "crowdsource-verification")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz_"
TRAIN_FILE = "oidv6-train-annotations-human-imagelabels.csv"


# ------------------------------------------------------------------------------------------ data
def _label_names(rng, count: int) -> list[str]:
    """``count`` distinct, sorted LabelNames: mostly ``/m/0`` + 4-6 characters, a few ``/g/11`` + 7."""
    names = set()
    while len(names) < count:
        if rng.random() < 0.05:
            names.add("/g/11" + "".join(rng.choice(list(_ALPHABET[:36]), 7)))
        else:
            names.add("/m/0" + "".join(rng.choice(list(_ALPHABET), int(rng.integers(4, 7)))))
    return sorted(names)


def write_files(
    folder: pathlib.Path,
    images: int,
    labels_per_image: float = 6.4,
    classes: int = 19957,
    trainable: int = 9605,
    seed: int = 0,
    chunk: int = 200_000,
) -> dict:
    """Write the three files into ``folder``; returns their sizes (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = _label_names(rng, classes)
    popularity = rng.permutation(classes)  # popularity[k]: the label of rank k
    chosen = popularity[:trainable]  # the trainable labels are the popular ones
    with open(folder / "oidv6-classes-trainable.txt", "w") as handle:
        handle.writelines(names[label] + "\n" for label in rng.permutation(chosen))
    with open(folder / "oidv6-class-descriptions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["LabelName", "DisplayName"])
        for label, name in enumerate(names):
            display = f'Thing {label}, "kind" {label % 7}' if label % 500 == 0 else f"Thing {label}"
            writer.writerow([name, display])
    weights = 1.0 / (np.arange(classes) + 20.0) ** 0.9
    probability = np.empty(classes)
    probability[popularity] = weights / weights.sum()
    image_ids = np.unique(rng.integers(0, 2**63, size=int(images * 1.01) + 10, dtype=np.int64))
    image_ids = rng.permutation(image_ids)[:images]
    image_ids.sort()
    rows = 0
    with open(folder / TRAIN_FILE, "w") as handle:
        handle.write("ImageID,Source,LabelName,Confidence\n")
        for begin in range(0, images, chunk):
            ids = [f"{value:016x}" for value in image_ids[begin : begin + chunk].tolist()]
            counts = 1 + rng.poisson(labels_per_image - 1, size=len(ids))
            labels = rng.choice(classes, size=int(counts.sum()), p=probability)
            keys = np.unique(np.repeat(np.arange(len(ids), dtype=np.int64), counts) * classes + labels)
            image_of_row, label_of_row = (keys // classes).tolist(), (keys % classes).tolist()
            confidence = (rng.random(len(keys)) < 0.62).astype(int).tolist()
            source = rng.integers(0, len(SOURCES), len(keys)).tolist()
            handle.write(
                "".join(
                    f"{ids[i]},{SOURCES[s]},{names[j]},{c}\n"
                    for i, s, j, c in zip(image_of_row, source, label_of_row, confidence, strict=True)
                )
            )
            rows += len(keys)
    return {"images": images, "rows": rows, "bytes": (folder / TRAIN_FILE).stat().st_size}


def write_prefix(folder: pathlib.Path, target: pathlib.Path, rows: int) -> None:
    """A copy of ``folder``'s files whose train file has only its first ``rows`` rows."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("oidv6-classes-trainable.txt", "oidv6-class-descriptions.csv"):
        shutil.copyfile(folder / name, target / name)
    with open(folder / TRAIN_FILE, "rb") as source, open(target / TRAIN_FILE, "wb") as out:
        for _ in range(rows + 1):
            line = source.readline()
            if not line:
                break
            out.write(line)


# --------------------------------------------------------------------------------------- workers
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def read_with_csv_module(folder: pathlib.Path):
    """A plain reader for comparison: ``csv.reader`` rows, dict look-ups, ``array`` columns."""
    from array import array

    labels = {
        name.strip(): i for i, name in enumerate(open(folder / "oidv6-classes-trainable.txt")) if name.strip()
    }
    images, image_of_row, label_of_row, state_of_row = {}, array("i"), array("i"), array("b")
    with open(folder / TRAIN_FILE, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for image_id, _, label_name, confidence in reader:
            image = images.setdefault(image_id, len(images))
            label = labels.get(label_name)
            if label is not None:
                image_of_row.append(image)
                label_of_row.append(label)
                state_of_row.append(confidence == "1")
    return len(images), len(label_of_row)


def worker(case: str, folder: pathlib.Path) -> dict:
    import numpy as np  # noqa: F401  (imports before the baseline)

    import msrn.graph
    from msrn.data import OpenImagesDataset
    from msrn.data._oid_labels import read_image_labels

    baseline = _peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = {"case": case, "baseline_rss_mb": round(baseline, 1)}
    if case == "csv_module":
        images, rows = read_with_csv_module(folder)
        result.update(images=images, kept_rows=rows)
    elif case == "reader":
        trainable = (folder / "oidv6-classes-trainable.txt").read_text().split()
        labels = read_image_labels(folder / TRAIN_FILE, trainable)
        result.update(images=len(labels.image_ids), kept_rows=len(labels.indices))
    else:
        dataset = OpenImagesDataset(folder, "train", check_images=False)
        result.update(images=len(dataset), classes=dataset.num_classes, kept_rows=len(dataset.label_indices))
        result["load_seconds"] = round(time.perf_counter() - start, 2)
        result["load_cpu_seconds"] = round(time.process_time() - cpu_start, 2)
        result["load_peak_rss_mb"] = round(_peak_rss_mb(), 1)
        if case == "graph":
            positives, negatives = dataset.label_lists()
            result["label_lists_seconds"] = round(time.perf_counter() - start - result["load_seconds"], 2)
            if hasattr(msrn.graph, "label_edges_from_label_lists"):
                edges = msrn.graph.label_edges_from_label_lists(
                    positives, dataset.num_classes, 0.4, negatives
                )
                result["graph_edges"] = int(edges.shape[1])
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["cpu_seconds"] = round(time.process_time() - cpu_start, 2)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def run_worker(case: str, folder: pathlib.Path) -> dict:
    command = [sys.executable, __file__, "--worker", case, "--folder", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=9_000_000)
    parser.add_argument("--labels-per-image", type=float, default=6.4)
    parser.add_argument("--classes", type=int, default=19957)
    parser.add_argument("--trainable", type=int, default=9605)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--graph", action="store_true", help="also time label_lists() and the sparse graph")
    parser.add_argument(
        "--compare-csv", type=int, default=0, metavar="ROWS", help="also time a csv-module reader"
    )
    parser.add_argument(
        "--folder", type=pathlib.Path, help="write here instead of a temporary folder (and keep the files)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated temporary folder")
    parser.add_argument("--tmp", default=None, help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--worker", choices=("load", "graph", "reader", "csv_module"), help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.folder)
        print(json.dumps(result))
        return result
    folder = args.folder or pathlib.Path(tempfile.mkdtemp(prefix="bench-openimages-", dir=args.tmp))
    try:
        start = time.perf_counter()
        sizes = write_files(
            folder, args.images, args.labels_per_image, args.classes, args.trainable, args.seed
        )
        print(
            f"generated {sizes['images']:,} images, {sizes['rows']:,} rows, {sizes['bytes'] / 2**30:.2f} GiB "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        summary = {"generated": sizes, "runs": []}
        for case in ("graph",) if args.graph else ("load",):
            summary["runs"].append(run_worker(case, folder))
            print(json.dumps(summary["runs"][-1]), flush=True)
        if args.compare_csv:
            prefix = folder / f"first-{args.compare_csv}-rows"
            write_prefix(folder, prefix, args.compare_csv)
            for case in ("reader", "csv_module"):
                summary["runs"].append({**run_worker(case, prefix), "rows": args.compare_csv})
                print(json.dumps(summary["runs"][-1]), flush=True)
    finally:
        if args.folder is None and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
