"""Partial labels: unknown entries of a CSV set are ignored by the metrics, left out of the loss in the
training loop and of the label graph; end to end through ``train`` and ``msrn evaluate``."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_training import TINY, one_thread, tiny_config

import msrn
from msrn.cli import main as cli_main
from msrn.data import CSVDataset, eval_transform, known_mask, positive_mask
from msrn.engine import DistributedContext, load_trained_model, train
from msrn.engine.evaluate import evaluate_checkpoint
from msrn.engine.loop import train_one_epoch
from msrn.graph import known_pair_counts, label_graph_from_targets
from msrn.metrics import average_precision
from msrn.targets import UNKNOWN

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

CLASSES = ["cat", "dog", "person"]


def _write_csv(path, names: list[str], cells: list[str]) -> None:
    path.write_text("image,labels\n" + "".join(f"{n},{c}\n" for n, c in zip(names, cells, strict=True)))


def _images(folder, count: int, seed: int = 0) -> list[str]:
    """``count`` real JPEG files of coloured noise (the data sets decode them like any photo)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{seed}_{index}.jpg")
        names.append(f"img/{seed}_{index}.jpg")
    return names


# ------------------------------------------------------------------------------------- CSV format
def test_list_layout_marks_unknown_labels_with_a_minus(tmp_path):
    names = _images(tmp_path, 4)
    rows = ["dog;-cat", "", "person; - dog", "-cat;-person"]
    _write_csv(tmp_path / "set.csv", names, rows)
    dataset = CSVDataset(tmp_path / "set.csv")
    assert dataset.classes == CLASSES  # a name seen only as unknown is a class too
    np.testing.assert_array_equal(dataset.targets, [[-1, 1, 0], [0, 0, 0], [0, -1, 1], [-1, 0, -1]])
    unknown = [[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 1]]
    np.testing.assert_array_equal(dataset.unknown, unknown)
    assert not dataset.difficult.any()  # only VOC has difficult labels
    _, target = dataset[0]
    assert target.tolist() == [-1, 1, 0] and target.dtype == torch.float32


def test_one_hot_layout_marks_unknown_with_question_mark_or_nothing(tmp_path):
    names = _images(tmp_path, 2)
    text = f"image,person,dog,cat\n{names[0]},1,?,\n{names[1]},0, ? ,1\n"
    (tmp_path / "hot.csv").write_text(text)
    dataset = CSVDataset(tmp_path / "hot.csv", classes=CLASSES)
    np.testing.assert_array_equal(dataset.targets, [[-1, -1, 1], [1, -1, 0]])
    np.testing.assert_array_equal(dataset.unknown, [[1, 1, 0], [0, 1, 0]])


@pytest.mark.parametrize(
    "cell, classes, message",
    [
        ("dog;-dog", None, r"line 2: label 'dog' is both present and unknown \(dog;-dog\)"),
        ("dog;-", None, r"line 2: a bare '-' in the labels cell"),
        ("dog;-unicorn", CLASSES, r"line 2: label 'unicorn' is not one of the classes"),
        ("dog", ["-cat", "dog"], r"class name '-cat' starts with '-'"),
        ("-cat dog", None, r"e\.g\. '-cat;-dog'"),
    ],
)
def test_contradictory_or_unknown_partial_labels_are_refused(tmp_path, cell, classes, message):
    names = _images(tmp_path, 2)
    (tmp_path / "set.csv").write_text(f"image,labels\n{names[0]},{cell}\n{names[1]},cat;dog\n")
    with pytest.raises(ValueError, match=message):
        CSVDataset(tmp_path / "set.csv", classes=classes)


def test_one_hot_minus_one_is_refused_with_the_conversion(tmp_path):
    names = _images(tmp_path, 1)
    (tmp_path / "hot.csv").write_text(f"image,cat,dog\n{names[0]},1,-1\n")
    with pytest.raises(ValueError, match=r"line 2: -1 is not a class value.*-1 written as 0 and 0 as \?"):
        CSVDataset(tmp_path / "hot.csv")
    (tmp_path / "hot.csv").write_text(f"image,cat,dog\n{names[0]},1,x\n")
    with pytest.raises(ValueError, match=r"class columns must hold 0 or 1 .* or \? or nothing \(unknown\)"):
        CSVDataset(tmp_path / "hot.csv")


def test_target_helpers_on_tensors_and_arrays():
    targets = torch.tensor([[1.0, UNKNOWN, 0.0], [1.0, 1.0, 0.0]])
    assert known_mask(targets).tolist() == [[True, False, True], [True, True, True]]
    assert positive_mask(targets).tolist() == [[True, False, False], [True, True, False]]
    assert known_mask(targets.numpy()).tolist() == known_mask(targets).tolist()
    assert isinstance(positive_mask(targets.numpy()), np.ndarray)


# ----------------------------------------------------------------------------------- label graph
def test_label_graph_counts_only_known_entries():
    # label a is present in 4 images; b is present in 1, absent in 1, unknown (-1) in 2
    targets = np.array([[1, 1], [1, 0], [1, -1], [1, -1]])
    np.testing.assert_array_equal(known_pair_counts(targets), [[4, 2], [1, 1]])
    # P(b | a) = 1/4 counting unknowns as absent (no edge at 0.4), 1/2 over known entries (an edge)
    # (mask[i, j] = P(i | j) >= t: row b gains a; P(a | b) = 1 either way)
    as_absent = targets.clip(min=0)
    assert label_graph_from_targets(as_absent, 0.4).tolist() == [[True, True], [False, True]]
    assert label_graph_from_targets(targets, 0.4).tolist() == [[True, True], [True, True]]
    # the explicit mask of unknown entries says the same as -1 in the targets
    unknown = targets < 0
    np.testing.assert_array_equal(known_pair_counts(as_absent, unknown), [[4, 2], [1, 1]])
    explicit = label_graph_from_targets(as_absent, 0.4, unknown)
    assert torch.equal(explicit, label_graph_from_targets(targets, 0.4))
    targets = as_absent
    assert torch.equal(
        label_graph_from_targets(targets, 0.4, np.zeros_like(unknown)), label_graph_from_targets(targets)
    )
    with pytest.raises(ValueError, match="both present .* and marked unknown"):
        label_graph_from_targets(targets, 0.4, np.ones_like(unknown))


# -------------------------------------------------------------------------------- training loop
class _Recorder(torch.nn.Module):
    def __init__(self, criterion):
        super().__init__()
        self.criterion, self.targets = criterion, []

    def forward(self, logits, targets):
        self.targets.append(targets.clone())
        return self.criterion(logits, targets)


def _small_model(num_classes: int = 3):
    torch.manual_seed(0)
    return msrn.create_model(
        "msrn_resnet18",
        num_classes=num_classes,
        embed_dim=16,
        hidden_dim=32,
        gat_hidden_dim=16,
        label_feature_dim=16,
        backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8},
    )


def _partial_csv(tmp_path):
    names = _images(tmp_path, 4, seed=3)
    rows = ["dog;-cat", "cat;-person", "person", "-dog;-person"]
    _write_csv(tmp_path / "part.csv", names, rows)
    return CSVDataset(tmp_path / "part.csv", classes=CLASSES, transform=eval_transform(64))


def test_training_loop_leaves_unknown_labels_out_of_the_loss_gradient(tmp_path):
    dataset = _partial_csv(tmp_path)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    images, targets = next(iter(loader))
    unknown = torch.from_numpy(dataset.unknown)
    assert unknown.any() and not unknown.all()

    def one_step(loss_of_batch) -> dict[str, torch.Tensor]:
        model = _small_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model.train()
        loss_of_batch(model, optimizer)
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    recorder = _Recorder(msrn.MSRNLoss())

    def through_the_loop(model, optimizer):
        recorder.criterion = msrn.MSRNLoss(model)
        train_one_epoch(model, recorder, loader, optimizer, DistributedContext(), 1, progress=False)

    def known_entries_only(model, optimizer, drop=unknown):
        criterion = msrn.MSRNLoss(model)
        logits = model(images)
        classification = criterion.elementwise(logits, targets)[~drop].mean()
        loss = classification + model.compactness_loss(weighted=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    trained = one_step(through_the_loop)
    assert torch.equal(recorder.targets[0] < 0, unknown)  # the loop passes the targets as they are
    expected = one_step(known_entries_only)
    for name, value in trained.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    # training the unknown entries as negatives would have moved the weights elsewhere
    as_negatives = one_step(lambda m, o: known_entries_only(m, o, torch.zeros_like(unknown)))
    assert any(not torch.allclose(value, as_negatives[name]) for name, value in trained.items())


def test_metrics_ignore_unknown_entries(tmp_path):
    dataset = _partial_csv(tmp_path)
    scores = np.array([[0.9, 0.1, 0.2], [0.8, 0.3, 0.1], [0.1, 0.2, 0.9], [0.7, 0.9, 0.95]])
    # the high scores of unknown entries (row 3's dog and person, row 0's cat) do not count against AP
    ap = average_precision(scores, dataset.targets)
    assert ap[CLASSES.index("person")] == 100.0
    assert average_precision(scores, dataset.targets.clip(min=0))[CLASSES.index("person")] < 100.0
    np.testing.assert_array_equal(average_precision(scores, dataset.targets.clip(min=0), dataset.unknown), ap)


# ---------------------------------------------------------------------------------- end to end
def _write_split(folder, name: str, count: int, seed: int) -> None:
    """A partial-label CSV over ``count`` images; every class has known positives and negatives."""
    rows = []
    for index, image in enumerate(_images(folder, count, seed)):
        labels = [CLASSES[index % 3], *([CLASSES[(index + 1) % 3]] if index % 2 else [])]
        if index % 4 == 3:
            labels.append("-" + CLASSES[(index + 2) % 3])
        rows.append(f"{image},{';'.join(labels)}\n")
    (folder / name).write_text("image,labels\n" + "".join(rows))


def test_partial_label_csv_trains_and_evaluates_end_to_end(tmp_path, capsys, caplog):
    data = tmp_path / "data"
    _write_split(data, "train.csv", 16, seed=10)
    _write_split(data, "test.csv", 9, seed=11)
    output = tmp_path / "run"
    config = tiny_config(
        tmp_path / "cache",
        output,
        **{**TINY, "epochs": 1},
        dataset="csv",
        data=str(data / "train.csv"),
        test_split=str(data / "test.csv"),
        loss="asl",
    )
    with caplog.at_level(logging.INFO, logger="msrn.engine"):
        record = train(config)
    assert (
        "4 unknown label entries in 4 train images (left out of the loss and the label graph)" in caplog.text
    )
    assert "2 unknown label entries in 2 test images (left out of the metrics)" in caplog.text
    assert np.isfinite(record["train_loss"]) and np.isfinite(record["mAP"])
    train_set = CSVDataset(data / "train.csv")
    assert train_set.unknown.sum() == 4
    model, _ = load_trained_model(output / "best")
    expected_graph = label_graph_from_targets(train_set.targets, 0.4)
    assert torch.equal(model.label_graph, expected_graph | torch.eye(3, dtype=torch.bool))

    assert (
        cli_main(
            ["evaluate", str(output / "best"), "--data", str(data / "test.csv"), "--dataset", "csv", "--json"]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    # the same AP as scoring the test images by hand with the unknown entries left out
    test_set = CSVDataset(data / "test.csv", classes=model.label_names, transform=eval_transform(64))
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.stack([test_set[i][0] for i in range(len(test_set))]))).numpy()
    by_hand = average_precision(scores, test_set.targets)
    np.testing.assert_allclose([printed["class_ap"][name] for name in test_set.classes], by_hand, rtol=1e-6)
    metrics, _, _ = evaluate_checkpoint(output / "best", str(data / "test.csv"), dataset="csv")
    assert metrics["mAP"] == pytest.approx(printed["metrics"]["mAP"])
    assert record["mAP"] == pytest.approx(metrics["mAP"], abs=1e-4)
