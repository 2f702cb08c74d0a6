"""Training recipes compared on a generated set: BCE vs ASL, EMA off/on, fixed vs fitted thresholds,
and the paper's vs the label-wise head, over several seeds.

    python benchmarks/compare_recipes.py                          # 4 recipes x 3 seeds, ~30 min on 2 cores
    python benchmarks/compare_recipes.py --recipes bce asl --seeds 0 1
    python benchmarks/compare_recipes.py --out recipes.jsonl      # also keep one JSON line per run
    python benchmarks/compare_recipes.py --recipes bce --heads paper label_wise --dataset coco
                                                     # the two heads on the generated 80-label set

What runs. Each run is ``examples/train_voc.py``'s default (the CPU profile of
:func:`msrn.engine.cpu_config` on the generated set, same data, same budget of epochs) with
``--val-fraction 0.1``: a tenth of the training images is held out, ``best/`` is the epoch with the
best validation mAP, and per-class thresholds are fitted on the validation scores. A recipe changes
only what its name says:

    bce       the paper's loss (the default)
    asl       ``--loss asl`` (gamma_neg 4, gamma_pos 1, clip 0.05)
    bce+ema   ``--ema 0.999`` (evaluation and best/ use the averaged weights)
    asl+ema   both

``--heads`` adds the head as a second dimension (``--head label_wise`` runs are named ``RECIPE+label_wise``);
``--dataset coco`` trains on the generated COCO-format set with COCO's 80 labels instead of the
generated VOC set's 20 (``msrn train --dataset coco`` without ``--data``).

``--seed`` changes the weights' initialisation, the data order and the augmentation; the data set,
the hold-out and the test split stay the same. For each run the figures are those of its best/
epoch (chosen on validation, never on the test split): test mAP, and test CF1/OF1 at the fixed
threshold 0.5 and at the fitted thresholds. The table gives the mean, the sample standard deviation
and the range over the seeds; the last line is JSON.

The generated set is a sanity check, not a benchmark: its images are coloured shapes, and its
figures say nothing about VOC, COCO or any real data set.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

try:
    import msrn  # noqa: F401
except ImportError:  # running from a checkout without installing: use the repository's package
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

RECIPES = {
    "bce": {},
    "asl": {"loss": "asl"},
    "bce+ema": {"ema": 0.999},
    "asl+ema": {"loss": "asl", "ema": 0.999},
}
FIGURES = ("mAP", "CF1", "fitted_CF1", "OF1", "fitted_OF1")
VAL_FRACTION = 0.1


HEADS = ("paper", "label_wise")
DATASETS = ("voc", "coco")


def run_name(recipe: str, head: str = "paper") -> str:
    return recipe if head == "paper" else f"{recipe}+{head}"


def run_recipe(recipe: str, seed: int, output_dir: pathlib.Path, head: str = "paper", **overrides) -> dict:
    """Train one recipe with one seed (and head); returns the figures of its best (validation) epoch."""
    from msrn.engine import cpu_config, train

    settings = dict(RECIPES[recipe], head=head, **overrides)
    config = cpu_config(
        seed=seed,
        val_fraction=VAL_FRACTION,
        output_dir=str(output_dir),
        overwrite=True,
        progress=False,
        **settings,
    )
    records: list[dict] = []
    start = time.perf_counter()
    train(config, on_epoch_end=records.append)
    best = next(record for record in records if record["epoch"] == records[-1]["best_epoch"])
    return {
        "recipe": run_name(recipe, head),
        "seed": seed,
        "best_epoch": best["epoch"],
        "val_mAP": round(best["val_mAP"], 2),
        **{name: round(best[name], 2) for name in FIGURES},
        "time_s": round(time.perf_counter() - start, 1),
    }


def summarise(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{recipe: {figure: {mean, std, min, max}}}`` over the seeds of each recipe."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for recipe in dict.fromkeys(run["recipe"] for run in runs):
        mine = [run for run in runs if run["recipe"] == recipe]
        summary[recipe] = {}
        for name in FIGURES:
            values = [run[name] for run in mine]
            summary[recipe][name] = {
                "mean": round(statistics.fmean(values), 2),
                "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                "min": round(min(values), 2),
                "max": round(max(values), 2),
            }
    return summary


def table(summary: dict, seeds: list[int]) -> str:
    """The summary as a Markdown table: ``mean ± std (min-max)`` per figure."""
    header = "| recipe | seeds | " + " | ".join(f"test {name}" for name in FIGURES) + " |"
    lines = [header, "|" + "---|" * (len(FIGURES) + 2)]
    for recipe, figures in summary.items():
        cells = [
            f"{f['mean']:.2f} ± {f['std']:.2f} ({f['min']:.2f}-{f['max']:.2f})"
            for f in (figures[name] for name in FIGURES)
        ]
        lines.append(f"| {recipe} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=tuple(RECIPES))
    parser.add_argument("--heads", nargs="+", default=["paper"], choices=HEADS)
    parser.add_argument(
        "--dataset",
        default="voc",
        choices=DATASETS,
        help="generated set: voc (20 labels) or coco (80 labels)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the CPU profile's epochs")
    parser.add_argument("--out", type=pathlib.Path, help="append one JSON line per run to this file")
    args = parser.parse_args(argv)
    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.dataset != "voc":
        overrides["dataset"] = args.dataset
    runs = []
    with tempfile.TemporaryDirectory(prefix="msrn-recipes-") as scratch:
        for seed in args.seeds:
            for recipe in args.recipes:
                for head in args.heads:
                    folder = pathlib.Path(scratch) / f"{run_name(recipe, head)}-s{seed}"
                    run = dict(run_recipe(recipe, seed, folder, head=head, **overrides), dataset=args.dataset)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
                    if args.out is not None:
                        with args.out.open("a") as log:
                            log.write(json.dumps(run) + "\n")
    summary = summarise(runs)
    print(table(summary, args.seeds))
    print(
        json.dumps(
            {"val_fraction": VAL_FRACTION, "dataset": args.dataset, "seeds": args.seeds, "summary": summary}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
