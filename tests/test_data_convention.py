"""The PyTorch data convention: every ``msrn.data`` set yields ``(image, target)`` with targets of
1 / 0 / -1 (msrn.targets); MSRNLoss, msrn.metrics and the label graph leave the -1 entries out by
themselves; VOC "difficult" labels are positives for training and unknown for evaluation; and the
training loops of README.md and docs/finetuning.md run as written on DataLoaders over these sets."""

import pathlib
import re
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from test_benchmark_data import _write_nuswide
from test_data import _write_coco, _write_voc

import msrn
from msrn.data import (
    ApparelDataset,
    COCODataset,
    CSVDataset,
    NUSWIDEDataset,
    VOCDataset,
    apparel_authors_split,
    create_dataset,
    eval_transform,
    generate_synthetic_voc,
    known_mask,
    voc_difficult_as,
)
from msrn.graph import label_graph_from_targets
from msrn.metrics import average_precision, fit_thresholds, mean_average_precision, multilabel_metrics
from msrn.targets import UNKNOWN

ROOT = pathlib.Path(__file__).resolve().parents[1]
CAT, CHAIR, SOFA = (msrn.data.VOC_CLASSES.index(name) for name in ("cat", "chair", "sofa"))


@pytest.fixture()
def voc_root(tmp_path):
    images = {
        "000001": [("dog", False), ("person", False)],
        "000002": [("cat", True)],  # difficult only
        "000003": [("chair", False), ("chair", True), ("sofa", True)],  # chair easy+difficult, sofa difficult
    }
    splits = {"trainval": ["000001", "000002", "000003"], "test": ["000003"], "val": ["000002"]}
    return _write_voc(tmp_path, images, splits)


def _partial_csv(folder: pathlib.Path) -> pathlib.Path:
    """A list-layout CSV of 8 noise images with unknown (``-name``) labels; every class known somewhere."""
    rng = np.random.default_rng(0)
    rows = ["dog;-cat", "cat;-person", "person", "-dog;-person", "cat;dog", "person;-cat", "", "dog"]
    lines = []
    for index, labels in enumerate(rows):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{index}.jpg")
        lines.append(f"{index}.jpg,{labels}\n")
    (folder / "partial.csv").write_text("image,labels\n" + "".join(lines))
    return folder / "partial.csv"


def _apparel(folder: pathlib.Path) -> pathlib.Path:
    rows = [row for row in apparel_authors_split() if row[2] == "test"][:2]
    for image, (colour, item), _ in rows:
        (folder / f"{colour}_{item}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 10)).save(folder / f"{colour}_{item}" / image)
    return folder


# ------------------------------------------------------------------------------- the data sets
DATA_SETS = {
    "voc trainval": lambda p, t: VOCDataset(_voc(p), "trainval", transform=t),
    "voc test": lambda p, t: VOCDataset(_voc(p), "test", transform=t),
    "coco": lambda p, t: COCODataset(_write_coco(p)[0].parents[1], "train", transform=t),
    "nuswide": lambda p, t: NUSWIDEDataset(_write_nuswide(p / "nus"), "train", transform=t),
    "apparel": lambda p, t: ApparelDataset(_apparel(p), "test", skip_missing_images=True, transform=t),
    "csv partial": lambda p, t: CSVDataset(_partial_csv(p), transform=t),
    "generated voc": lambda p, t: VOCDataset(generate_synthetic_voc(p, 4, 8, seed=2), "test", transform=t),
}


def _voc(path):
    images = {"000001": [("dog", False), ("cat", True)], "000002": [("sofa", True), ("sofa", False)]}
    return _write_voc(path, images, {"trainval": ["000001", "000002"], "test": ["000001", "000002"]})


@pytest.mark.parametrize("kind", list(DATA_SETS))
def test_every_data_set_yields_image_target_pairs(tmp_path, kind):
    dataset = DATA_SETS[kind](tmp_path, eval_transform(16))
    sample = dataset[0]
    assert isinstance(sample, tuple) and len(sample) == 2
    image, target = sample
    assert image.shape == (3, 16, 16) and target.dtype == torch.float32
    assert target.shape == (dataset.num_classes,) and target.tolist() == dataset.targets[0].tolist()
    assert set(np.unique(dataset.targets).tolist()) <= {1, 0, -1}
    images, targets = next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))
    assert images.shape[0] == targets.shape[0] == len(dataset)
    np.testing.assert_array_equal(targets.numpy(), dataset.targets)
    np.testing.assert_array_equal(dataset.unknown, dataset.targets == UNKNOWN)
    has_unknown = kind in ("voc test", "csv partial", "generated voc")
    assert bool(dataset.unknown.any()) == has_unknown, kind


def test_voc_difficult_positive_in_training_unknown_in_evaluation(voc_root):
    train = VOCDataset(voc_root, "trainval")
    assert train.difficult_as == "positive" and train.targets[1, CAT] == 1  # the authors' training
    assert train.targets[2, CHAIR] == 1 and train.targets[2, SOFA] == 1 and not train.unknown.any()
    test = VOCDataset(voc_root, "test")
    assert test.difficult_as == "unknown" and test.targets[0, CHAIR] == 1 and test.targets[0, SOFA] == -1
    assert VOCDataset(voc_root, "val").targets[0, CAT] == -1
    np.testing.assert_array_equal(test.difficult, train.difficult[2:])  # which entries: the same
    # explicit choices override the split's default
    assert VOCDataset(voc_root, "test", difficult_as="positive").targets[0, SOFA] == 1
    assert VOCDataset(voc_root, "trainval", difficult_as="negative").targets[1, CAT] == 0
    assert VOCDataset(voc_root, "trainval", difficult_as="unknown").targets[1, CAT] == -1
    defaults = [voc_difficult_as(split) for split in ("train", "trainval", "val", "test")]
    assert defaults == ["positive", "positive", "unknown", "unknown"]
    # create_dataset decides by role, whatever the split's name
    assert create_dataset("voc", voc_root, "trainval").targets[1, CAT] == -1
    assert create_dataset("voc", voc_root, "test", is_training=True).targets[0, SOFA] == 1
    # a validation part held out of trainval is an evaluation set
    held = train.subset([1, 2], difficult_as="unknown")
    assert held.targets[0, CAT] == -1 and held.targets[1, SOFA] == -1 and train.targets[1, CAT] == 1
    assert train.subset([1]).targets[0, CAT] == 1
    with pytest.raises(ValueError, match="difficult_as must be one of 'positive', 'unknown', 'negative'"):
        VOCDataset(voc_root, "test", difficult_as="ignore")


# ------------------------------------------------------------------------------ loss, metrics, graph
def _partial_targets(shape=(16, 5), seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    targets = (torch.rand(shape, generator=generator) < 0.4).float()
    targets[torch.rand(shape, generator=generator) < 0.25] = UNKNOWN
    return targets


@pytest.mark.parametrize("loss", ["bce", "asl", "focal"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_loss_leaves_unknown_entries_out_with_zero_gradient(loss, dtype):
    targets = _partial_targets()
    known = known_mask(targets)
    assert known.any() and not known.all()
    logits = (3 * torch.randn(targets.shape, generator=torch.Generator().manual_seed(1))).to(dtype)
    leaf = logits.clone().requires_grad_()
    criterion = msrn.MSRNLoss(loss=loss)
    value = criterion(leaf, targets)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    torch.testing.assert_close(value, criterion.elementwise(logits, targets)[known].mean())
    assert torch.all(leaf.grad[~known] == 0) and (leaf.grad[known] != 0).any()
    if loss == "bce":  # (ASL's clip gives easy negatives no gradient)
        assert torch.all(leaf.grad[known] != 0)
    # the explicit mask form says the same, and adds to the -1 entries
    as_zero = targets.clamp(min=0)
    torch.testing.assert_close(criterion(logits, as_zero, ignore=~known), value)
    torch.testing.assert_close(criterion(logits, targets, ignore=~known), value)
    more = torch.zeros_like(known)
    more[0] = True
    torch.testing.assert_close(
        criterion(logits, targets, ignore=more), criterion.elementwise(logits, targets)[known & ~more].mean()
    )


def test_metrics_on_partial_targets_equal_the_known_subset():
    targets = _partial_targets((40, 6), seed=2).numpy()
    targets[:2] = 1  # every class has a known positive
    scores = np.random.default_rng(3).random(targets.shape)
    known = targets >= 0
    ap = average_precision(scores, targets)
    for c in range(targets.shape[1]):
        keep = known[:, c]
        by_hand = average_precision(scores[keep, c : c + 1], targets[keep, c : c + 1])[0]
        assert ap[c] == pytest.approx(by_hand)
    np.testing.assert_array_equal(ap, average_precision(torch.from_numpy(scores), torch.from_numpy(targets)))
    assert mean_average_precision(scores, targets) == pytest.approx(np.mean(ap))
    thresholds = fit_thresholds(scores, targets)
    for c in range(targets.shape[1]):
        keep = known[:, c]
        assert thresholds[c] == fit_thresholds(scores[keep, c : c + 1], targets[keep, c : c + 1])[0]
    # the explicit mask form: the same figures
    as_zero, ignore = targets.clip(min=0), ~known
    np.testing.assert_array_equal(average_precision(scores, as_zero, ignore), ap)
    explicit = multilabel_metrics(scores, as_zero, ignore, top_k=3)
    assert multilabel_metrics(scores, targets, top_k=3) == pytest.approx(explicit, nan_ok=True)
    np.testing.assert_array_equal(fit_thresholds(scores, as_zero, ignore), thresholds)
    # -1 is not a negative: counting it as one changes the figures
    assert not np.array_equal(average_precision(scores, as_zero), ap)


def test_graph_of_a_partial_label_set_counts_only_known_entries(tmp_path):
    dataset = CSVDataset(_partial_csv(tmp_path))
    graph = label_graph_from_targets(dataset.targets, 0.4)
    as_absent = dataset.targets.clip(min=0)
    assert torch.equal(graph, label_graph_from_targets(as_absent, 0.4, unknown=dataset.unknown))
    assert not torch.equal(graph, label_graph_from_targets(as_absent, 0.4))


# ------------------------------------------------------------------------ the documented loops
def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


def _for_statement(block: str, header: str) -> str:
    """The ``for`` statement of ``block`` whose first line starts with ``header`` (after its
    indentation), with its whole body, dedented: the loop exactly as the page writes it."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return textwrap.dedent("\n".join(lines[start:end])) + "\n"


def _documented_loops() -> dict[str, str]:
    readme = next(b for b in _python_blocks("README.md") if "for images, targets in loader:" in b)
    finetuning = _python_blocks("docs/finetuning.md")
    section3 = next(b for b in finetuning if "for images, targets in train_loader:" in b)
    accumulation = next(b for b in finetuning if "accum_steps = " in b)
    return {
        "README.md": _for_statement(readme, "for images, targets in loader:"),
        "finetuning.md loop": _for_statement(section3, "for images, targets in train_loader:"),
        "finetuning.md accumulation": accumulation,  # the whole block
    }


class _Watched(torch.nn.Module):
    """The model, keeping each batch's logits with their gradient."""

    def __init__(self, model):
        super().__init__()
        self.model, self.logits = model, []

    def forward(self, images):
        logits = self.model(images)
        logits.retain_grad()
        self.logits.append(logits)
        return logits


def _tiny_model(num_classes: int):
    torch.manual_seed(0)
    return msrn.create_model(
        "msrn_resnet18",
        num_classes=num_classes,
        embed_dim=8,
        hidden_dim=16,
        gat_hidden_dim=8,
        label_feature_dim=8,
        num_groups=2,
        backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
    )


@pytest.mark.parametrize("data", ["generated voc", "csv partial"])
def test_documented_loops_run_verbatim_and_unknown_entries_get_no_gradient(tmp_path, data):
    if data == "generated voc":  # a training split (difficult: positive) and the test split (unknown)
        root = generate_synthetic_voc(tmp_path, 4, 8, seed=2)
        sets = [VOCDataset(root, split, transform=eval_transform(64)) for split in ("trainval", "test")]
        dataset = torch.utils.data.ConcatDataset(sets)
        num_classes = sets[0].num_classes
    else:
        dataset = CSVDataset(_partial_csv(tmp_path), transform=eval_transform(64))
        num_classes = dataset.num_classes
    # batches of 2: at least 4 batches, so that the accumulation loop (accum_steps = 4) steps
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)
    batches = [targets for _, targets in loader]
    assert any((targets < 0).any() for targets in batches)
    for name, loop in _documented_loops().items():
        inner = _tiny_model(num_classes)
        model = _Watched(inner)
        optimizer = torch.optim.SGD(inner.parameters(), lr=0.1)
        before = [p.detach().clone() for p in inner.parameters()]
        namespace = {
            "model": model,
            "criterion": msrn.MSRNLoss(inner),
            "optimizer": optimizer,
            "loader": loader,
            "train_loader": loader,
        }
        exec(compile(loop, f"<{name}>", "exec"), namespace)
        assert len(model.logits) == len(batches), name
        for logits, targets in zip(model.logits, batches, strict=True):
            known = known_mask(targets)
            assert torch.all(logits.grad[~known] == 0), name
            assert torch.all(logits.grad[known] != 0), name
        assert any(not torch.equal(a, b) for a, b in zip(before, inner.parameters(), strict=True)), name
