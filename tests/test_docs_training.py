"""The README's quick start and fine-tuning loop, and every snippet of docs/finetuning.md, train without
NaN. They run as written except for size: ResNet-18 at 64 px from random init, one epoch of 20 steps."""

import math
import pathlib
import re

import pytest
import torch
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALLER = {
    "msrn_resnet101": "msrn_resnet18",
    "448, 448": "64, 64",
    "pretrained=True": "pretrained=False",
    "range(90)": "range(1)",
}
STEPS = 20


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _python_blocks(page: str) -> list[str]:
    text = (REPO_ROOT / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    for old, new in SMALLER.items():
        blocks = [block.replace(old, new) for block in blocks]
    return blocks


class RecordingLoader:
    """``STEPS`` fixed batches; after each step it records the ``loss`` the loop left in ``namespace``."""

    def __init__(self, namespace: dict, num_classes: int, batch: int = 2) -> None:
        generator = torch.Generator().manual_seed(0)
        self.batches = [
            (
                torch.randn(batch, 3, 64, 64, generator=generator),
                torch.randint(0, 2, (batch, num_classes), generator=generator).float(),
            )
            for _ in range(STEPS)
        ]
        self.namespace, self.losses = namespace, []

    def __iter__(self):
        for batch in self.batches:
            yield batch
            self.losses.append(float(self.namespace["loss"].detach()))


def _run(block: str, namespace: dict) -> None:
    exec(compile(block, "<docs>", "exec"), namespace)


def _assert_trained(loader: RecordingLoader) -> None:
    assert len(loader.losses) == STEPS
    assert all(math.isfinite(loss) for loss in loader.losses), loader.losses


def test_readme_quick_start_and_fine_tuning_loop_train_20_steps():
    blocks = _python_blocks("README.md")
    quick_start = next(b for b in blocks if 'labels="voc2007"' in b and "MSRNLoss" in b)
    loop = next(b for b in blocks if "for images, targets in loader" in b)
    namespace: dict = {}
    _run(quick_start, namespace)
    namespace["loader"] = loader = RecordingLoader(namespace, num_classes=20)
    _run(loop, namespace)
    _assert_trained(loader)
    model = namespace["model"]
    assert model.variant == "official" and model.num_classes == 20
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_every_finetuning_snippet_runs_and_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippets save to out/ and label photos/
    (tmp_path / "photos").mkdir()
    for name in ("cat.jpg", "dog.jpg"):
        Image.new("RGB", (80, 60), (200, 120, 40)).save(tmp_path / "photos" / name)
    blocks = _python_blocks("docs/finetuning.md")
    loop = next(b for b in blocks if "for epoch in range" in b)
    namespace: dict = {"train_targets": (torch.rand(40, 4, generator=torch.Generator().manual_seed(1)) > 0.6)}
    namespace["images"] = torch.randn(2, 3, 64, 64)
    namespace["val_images"] = torch.randn(3, 3, 64, 64)
    namespace["val_targets"] = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]])
    ran = set()
    for index, block in enumerate(blocks):
        if "reset_classifier" in block:  # section 6: new labels on the trained model, then train again
            _run(block, namespace)
            ran.add(index)
            num_classes = namespace["model"].num_classes
            namespace["train_loader"] = loader = RecordingLoader(namespace, num_classes)
            _run(loop, namespace)
            _assert_trained(loader)
            continue
        if block is loop:
            num_classes = namespace["model"].num_classes
            namespace["train_loader"] = loader = RecordingLoader(namespace, num_classes)
        _run(block, namespace)
        ran.add(index)
        if block is loop:
            _assert_trained(loader)
        if 'labels="voc2007"' in block:  # section 1's one-argument model trains too
            namespace["criterion"] = namespace["msrn"].MSRNLoss(namespace["model"])
            namespace["train_loader"] = loader = RecordingLoader(namespace, 20)
            _run(loop.replace("criterion = msrn.MSRNLoss(model)", ""), namespace)
            _assert_trained(loader)
    assert ran == set(range(len(blocks)))
    assert namespace["predicted"].shape[1] == 4
    assert len(namespace["predictor"].labels("photos/cat.jpg")) == 1  # the saved model, reloaded
    assert namespace["model"].num_classes == 11
