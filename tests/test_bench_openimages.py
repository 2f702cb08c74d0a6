"""benchmarks/bench_openimages.py on tiny sizes: its generated files are in the official formats and
load, its readers agree, and it cleans up (the figures come from running the script)."""

import csv
import importlib.util
import json
import pathlib
import re

from msrn.data import OpenImagesDataset

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_bench():
    path = REPO_ROOT / "benchmarks" / "bench_openimages.py"
    spec = importlib.util.spec_from_file_location("bench_openimages", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_in_the_official_formats_and_the_readers_agree(tmp_path):
    bench = load_bench()
    sizes = bench.write_files(tmp_path, images=300, classes=400, trainable=150, chunk=128)
    lines = (tmp_path / bench.TRAIN_FILE).read_text().splitlines()
    assert lines[0] == "ImageID,Source,LabelName,Confidence" and len(lines) == sizes["rows"] + 1
    image_ids = [line.split(",")[0] for line in lines[1:]]
    assert image_ids == sorted(image_ids) and len(set(image_ids)) == 300
    assert all(
        re.fullmatch(r"[0-9a-f]{16},(crowdsource-)?verification,/[mg]/\w+,[01]", line) for line in lines[1:]
    )
    with open(tmp_path / "oidv6-class-descriptions.csv", newline="") as handle:
        descriptions = list(csv.reader(handle))
    assert descriptions[0] == ["LabelName", "DisplayName"] and len(descriptions) == 401
    assert any("," in name and '"' in name for _, name in descriptions[1:])
    trainable = (tmp_path / "oidv6-classes-trainable.txt").read_text().split()
    assert len(trainable) == 150 and trainable != sorted(trainable)

    dataset = OpenImagesDataset(tmp_path, "train", check_images=False)
    assert len(dataset) == 300 and dataset.num_classes == 150
    load, reader, plain = (bench.worker(case, tmp_path) for case in ("graph", "reader", "csv_module"))
    kept = sum(line.split(",")[2] in trainable for line in lines[1:])
    assert load["kept_rows"] == reader["kept_rows"] == plain["kept_rows"] == kept
    assert load["images"] == reader["images"] == plain["images"] == 300
    assert load["peak_rss_mb"] >= load["baseline_rss_mb"] > 0 and load["cpu_seconds"] >= 0


def test_main_measures_in_a_fresh_process_and_deletes_its_files(tmp_path, capsys):
    bench = load_bench()
    summary = bench.main(["--images", "50", "--classes", "60", "--trainable", "30", "--tmp", str(tmp_path)])
    assert summary["generated"]["images"] == 50 and summary["runs"][0]["images"] == 50
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert list(tmp_path.iterdir()) == []
