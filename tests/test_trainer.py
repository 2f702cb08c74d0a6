import importlib.util
import json
import pathlib
import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file
from tiny_training import TINY_ARGS, one_thread
from tiny_training import tiny_config as _config

import msrn
from msrn.cli import main as cli_main
from msrn.data import VOCDataset, eval_transform, generate_synthetic_voc
from msrn.engine import (
    EvalShardSampler,
    NonFiniteLossError,
    gather_predictions,
    load_trained_model,
    predict,
    train,
)
from msrn.engine.distributed import DistributedContext
from msrn.graph import label_graph_from_targets
from msrn.metrics import multilabel_metrics

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _example_main():
    spec = importlib.util.spec_from_file_location("train_voc", REPO / "examples" / "train_voc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_example_trains_logs_and_checkpoints_end_to_end(cache_dir, tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["--cache-dir", str(cache_dir), "--output-dir", str(output), "--epochs", "2"] + TINY_ARGS
    assert _example_main()(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "top-3" in printed and "OF1" in printed
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in (
        "mAP",
        "CP",
        "CR",
        "CF1",
        "OP",
        "OR",
        "OF1",
        "CP_top3",
        "OF1_top3",
        "train_loss",
        "images_per_s",
    ):
        assert np.isfinite(records[-1][key]), key
    assert records[-1]["test_images"] == 13
    assert records[-1]["best_mAP"] == max(r["mAP"] for r in records)

    # The saved folder alone rebuilds the model; its scores reproduce the logged test mAP.
    model, info = load_trained_model(output / "last")
    assert info["epoch"] == 2 and info["image_size"] == 64
    assert model.num_classes == 20 and model.label_names[0] == "aeroplane"
    same = timm.create_model(f"local-dir:{output / 'last'}")
    assert all(
        torch.equal(a, b)
        for a, b in zip(same.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert (output / "best" / "model.safetensors").is_file()
    test_set = VOCDataset(
        cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", "test", transform=eval_transform(64)
    )
    model.eval()
    with torch.no_grad():
        batch = torch.stack([test_set[i][0] for i in range(len(test_set))])
        scores = torch.sigmoid(model(batch)).numpy()
    assert (test_set.targets[test_set.difficult] == -1).all() and test_set.difficult.any()
    expected = multilabel_metrics(scores, test_set.targets)["mAP"]  # difficult test labels ignored
    assert records[-1]["mAP"] == pytest.approx(expected, abs=1e-3)
    # The label graph is the training split's (difficult labels counted as positive).
    train_set = VOCDataset(cache_dir / "synthetic-voc-v2-24-13-s0" / "VOCdevkit", "trainval")
    assert torch.equal(model.label_graph, label_graph_from_targets(train_set.targets))

    # `msrn evaluate` prints the same mAP and a per-class table.
    assert (
        cli_main(["evaluate", str(output / "last"), "--data", str(test_set.root.parent), "--workers", "0"])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"{records[-1]['mAP']:8.2f}" in printed and "aeroplane" in printed and "tvmonitor" in printed
    assert cli_main(["evaluate", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2

    # Without --data, the run's own test split (here the generated set, from train_config.json).
    assert cli_main(["evaluate", str(output / "last") + "/", "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["mAP"] == pytest.approx(
        records[-1]["mAP"], abs=1e-6
    )
    assert cli_main(["evaluate", str(output / "last"), "--workers", "0"]) == 0
    assert "Test data of the training run: " in capsys.readouterr().out
    # A folder outside a run, and --dataset without --data, are refused in one line each.
    shutil.copytree(output / "last", tmp_path / "loose" / "model")
    assert cli_main(["evaluate", str(tmp_path / "loose" / "model")]) == 2
    assert "pass the test data with --data" in capsys.readouterr().err
    assert cli_main(["evaluate", str(output / "last"), "--dataset", "coco"]) == 2
    assert "pass --data too" in capsys.readouterr().err


def test_resume_reproduces_an_uninterrupted_run_and_survives_a_non_finite_loss(
    cache_dir, tmp_path, monkeypatch
):
    train(_config(cache_dir, tmp_path / "straight"))
    train(_config(cache_dir, tmp_path / "split", stop_after_epoch=1))
    assert json.loads((tmp_path / "split" / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    shutil.copytree(tmp_path / "split", tmp_path / "crash")
    train(_config(cache_dir, tmp_path / "split", resume=str(tmp_path / "split")))
    straight = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    resumed = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    log_straight = (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    log_split = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(a)["mAP"] for a in log_straight] == [json.loads(b)["mAP"] for b in log_split]

    # Resuming with another model is refused.
    crash = tmp_path / "crash"
    with pytest.raises(ValueError, match="cannot change in the middle of a run: --hidden-dim 64 -> 128"):
        train(_config(cache_dir, crash, resume=str(crash), hidden_dim=128))

    # A NaN loss stops the run on its first step; the checkpoints of epoch 1 stay as they were.
    before = {name: (crash / name).read_bytes() for name in ("last/model.safetensors", "train_state.pt")}

    def exploding(self, logits, targets, ignore=None):
        return logits.sum() * float("nan")

    monkeypatch.setattr(msrn.loss.MSRNLoss, "forward", exploding)
    with pytest.raises(NonFiniteLossError, match=f"non-finite.*epoch 2.*--resume {crash} --lr 0.0002"):
        train(_config(cache_dir, crash, resume=str(crash)))
    assert {name: (crash / name).read_bytes() for name in before} == before


def test_pretrained_failure_offline_names_the_fix(cache_dir, tmp_path, monkeypatch):
    import msrn.engine.builders as builders

    def offline(*args, **kwargs):
        raise OSError("cannot reach huggingface.co")

    monkeypatch.setattr(builders, "create_model", offline)
    with pytest.raises(builders.PretrainedWeightsUnavailable, match="--no-pretrained"):
        train(_config(cache_dir, tmp_path / "run", pretrained=True))


def test_eval_shards_cover_each_image_once():
    length, world = 13, 3
    shards = [list(EvalShardSampler(length, rank, world)) for rank in range(world)]
    assert sorted(sum(shards, [])) == list(range(length)) and [len(s) for s in shards] == [5, 4, 4]
    scores = np.random.default_rng(0).random((length, 2))
    indices = np.array(shards[0] + shards[1] + shards[2])
    gathered, targets = gather_predictions(
        DistributedContext(), indices, scores[indices], -scores[indices], length
    )
    np.testing.assert_array_equal(gathered, scores)
    np.testing.assert_array_equal(targets, -scores)
    with pytest.raises(RuntimeError, match="exactly once"):
        gather_predictions(DistributedContext(), indices[:-1], scores[:-1], scores[:-1], length)


def test_predict_fills_float32_scores_and_int8_targets_in_dataset_order():
    rng = np.random.default_rng(0)
    targets = rng.choice(np.array([1.0, 0.0, -1.0], dtype=np.float32), size=(11, 4))
    data = torch.utils.data.TensorDataset(torch.zeros(11, 3, 2, 2), torch.from_numpy(targets))
    logits = torch.from_numpy(rng.normal(size=(11, 4)).astype(np.float32))
    calls = iter(range(0, 11, 3))

    def model(images):  # the logits of the next 3 images, in the sampler's (dataset) order
        start = next(calls)
        return logits[start : start + len(images)]

    loader = torch.utils.data.DataLoader(data, batch_size=3, sampler=EvalShardSampler(11))
    scores, got = predict(model, loader, DistributedContext(), 11, progress=False)
    assert scores.dtype == np.float32 and got.dtype == np.int8  # 6 GB, not 9.6, at Open Images' size
    np.testing.assert_array_equal(scores, torch.sigmoid(logits).numpy())
    np.testing.assert_array_equal(got, targets)
    targets[5, 2] = 0.5  # a soft label is refused, not cut to 0
    with pytest.raises(ValueError, match="got 0.5"):
        predict(lambda images: torch.zeros(len(images), 4), loader, DistributedContext(), 11, progress=False)
    targets[5, 2] = 1.0
    short = torch.utils.data.DataLoader(data, batch_size=3, sampler=EvalShardSampler(11), drop_last=True)
    with pytest.raises(RuntimeError, match="yielded 9 images for 11 indices; use drop_last=False"):
        predict(lambda images: torch.zeros(len(images), 4), short, DistributedContext(), 11, progress=False)


def test_bf16_channels_last_run(cache_dir, tmp_path):
    record = train(
        _config(cache_dir, tmp_path / "bf16", epochs=1, max_steps_per_epoch=1, amp="bf16", channels_last=True)
    )
    assert record["test_images"] == 13 and np.isfinite(record["train_loss"]) and np.isfinite(record["mAP"])
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device"):
        train(_config(cache_dir, tmp_path / "fp16", epochs=1, max_steps_per_epoch=1, amp="fp16"))


def test_glove_label_features_from_npz(cache_dir, tmp_path, shared_dir):
    npz = shared_dir / "data/official/voc_label_graph.npz"
    output = tmp_path / "glove"
    train(_config(cache_dir, output, epochs=1, max_steps_per_epoch=1, glove=str(npz)))
    model, _ = load_trained_model(output / "last")
    official = np.load(npz)
    assert [str(n) for n in official["names"]] == model.label_names
    assert not isinstance(model.label_features, torch.nn.Parameter)  # fixed features, not learned
    np.testing.assert_allclose(model.label_features.numpy(), official["glove"], rtol=0, atol=1e-6)


def test_csv_data_trains_with_the_same_trainer(cache_dir, tmp_path):
    devkit = generate_synthetic_voc(cache_dir / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    train_voc = VOCDataset(devkit, "trainval")  # one-hot layout: the header gives all 20 classes
    rows = [
        ",".join([path] + [str(t) for t in target])
        for path, target in zip(train_voc.image_paths, train_voc.targets, strict=True)
    ]
    header = ",".join(["image"] + train_voc.classes)
    (tmp_path / "train.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    test_voc = VOCDataset(devkit, "test")  # list layout, checked against the training classes
    rows = [
        f"{path},{';'.join(c for c, t in zip(test_voc.classes, target, strict=True) if t)}"
        for path, target in zip(test_voc.image_paths, test_voc.targets, strict=True)
    ]
    (tmp_path / "test.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")
    record = train(
        _config(
            cache_dir,
            tmp_path / "csv",
            dataset="csv",
            data=str(tmp_path / "train.csv"),
            test_split=str(tmp_path / "test.csv"),
            epochs=1,
            max_steps_per_epoch=1,
        )
    )
    assert record["test_images"] == 13 and np.isfinite(record["mAP"])
    model, _ = load_trained_model(tmp_path / "csv" / "last")
    assert model.label_names == train_voc.classes


def test_atomic_write_keeps_the_previous_file_when_a_write_fails(tmp_path):
    from msrn.engine.checkpoint import atomic_write

    target = tmp_path / "train_state.pt"
    atomic_write(target, lambda path: torch.save({"epoch": 1}, path))

    def crash(path):
        with open(path, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert torch.load(target, weights_only=True) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]  # no temporary file left behind
