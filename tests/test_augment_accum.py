"""RandAugment and Cutout (seeded per sample, bad specs refused first) and gradient accumulation
(K batches of B make the step of one batch of K x B)."""

import contextlib
import json
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file
from timm.data.auto_augment import RandAugment
from tiny_training import one_thread
from tiny_training import tiny_config as _config

from msrn.cli import main as cli_main
from msrn.data import SeededAugmentation, generate_synthetic_voc, randaugment_transform, train_transform
from msrn.engine import DistributedContext, train
from msrn.engine.loop import train_one_epoch

pytestmark = pytest.mark.usefixtures(one_thread.__name__)

SPEC = "rand-m9-mstd0.5-inc1"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    generate_synthetic_voc(cache / "synthetic-voc-v2-24-13-s0", 24, 13, 0)
    return cache


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# --------------------------------------------------------------------------------- RandAugment, Cutout
@pytest.mark.parametrize(
    "spec, problem",
    [
        ("rand-x9", "unknown section 'x9'"),
        ("augmix-m5", "must start with 'rand'"),
        ("rand-m", "section 'm' has no value"),
        ("rand-m9.5", "m takes a whole number"),
        ("rand-m9-m7", "section 'm' given twice"),
        ("rand-m12", "above the largest, 10"),
        ("rand-p1.5", "p takes a number in 0-1"),
        ("rand-mstdx", "mstd takes a number >= 0"),
        ("rand-inc2", "inc takes 0 or 1"),
        ("rand-tnosuch", "unknown operation set 'nosuch'"),
    ],
)
def test_bad_randaugment_specs_name_the_syntax(spec, problem):
    with pytest.raises(ValueError, match="Expected timm's RandAugment syntax") as error:
        train_transform(64, randaugment=spec)
    assert problem in str(error.value) and "rand-m9-mstd0.5-inc1" in str(error.value)


@pytest.mark.parametrize("spec", ["rand-m9-mstd0.5-inc1", "rand-m15-mmax15-n3-p0.7", "rand-tweights", "rand"])
def test_good_specs_build_timms_randaugment(spec):
    assert train_transform(64, randaugment=spec)(_image()).shape == (3, 64, 64)


def test_randaugment_fills_with_the_mean_and_translates_for_the_image_size():
    augment = randaugment_transform(SPEC, image_size=200, mean=(0.5, 0.25, 1.0))
    op = augment.ops[0]
    assert op.kwargs["fillcolor"] == (128, 64, 255)
    assert op.hparams["translate_const"] == 90
    assert op.kwargs["resample"] == Image.BILINEAR
    assert augment.num_layers == 2 and op.magnitude == 9 and op.magnitude_std == 0.5


@pytest.mark.parametrize("cutout", [-0.1, 1.5])
def test_cutout_must_be_a_probability(cutout):
    with pytest.raises(ValueError, match="cutout is the probability.*0-1"):
        train_transform(64, cutout=cutout)


def test_transform_order_and_cutout_erases_to_the_mean_after_normalisation():
    transform = train_transform(64, randaugment=SPEC, cutout=1.0)
    assert isinstance(transform.transforms[2], RandAugment)  # timm's, made safe with any Pillow
    names = [type(step).__name__ for step in transform.transforms]
    assert names[:2] + names[3:] == [
        "MultiScaleCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
        "RandomErasing",
    ]
    assert [type(s).__name__ for s in train_transform(64).transforms][-1] == "Normalize"  # default: off
    torch.manual_seed(0)
    erased = train_transform(64, cutout=1.0)(Image.new("RGB", (64, 64), (255, 255, 255)))
    zero = (erased == 0).all(dim=0)
    assert 0.02 * 64 * 64 <= zero.sum() <= 0.34 * 64 * 64  # one rectangle, set to the mean colour


class _Draws(torch.utils.data.Dataset):
    """Each item: one draw from each global generator, and the augmented image."""

    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        draws = (float(torch.rand(())), float(np.random.rand()), random.random())
        return draws, self.transform(_image(index))


def test_seeded_augmentation_seeds_torch_numpy_and_python_and_restores_them():
    samples = SeededAugmentation(_Draws(train_transform(64, randaugment=SPEC, cutout=0.5)), seed=3)
    first = [samples[i] for i in range(4)]
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    # Another process, with other global states, draws the same for the same (seed, epoch, index).
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    again = {i: samples[i] for i in (2, 0, 3, 1)}  # another order, as another worker would load them
    for i, (draws, image) in enumerate(first):
        assert draws == again[i][0] and torch.equal(image, again[i][1])
    # The caller's generators are where they were.
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    reference = (float(torch.rand(())), float(np.random.rand()), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    samples[1]
    assert (float(torch.rand(())), float(np.random.rand()), random.random()) == reference
    assert not torch.equal(states[0], torch.get_rng_state())  # sanity: the check above drew
    samples.set_epoch(1)
    assert samples[0][0] != first[0][0] and not torch.equal(samples[0][1], first[0][1])


def test_with_augmentation_results_do_not_depend_on_workers_and_resume_is_exact(cache_dir, tmp_path):
    options = dict(randaugment=SPEC, cutout=0.5, accum_steps=2, max_steps_per_epoch=1)
    train(_config(cache_dir, tmp_path / "straight", workers=0, **options))
    train(_config(cache_dir, tmp_path / "split", workers=2, stop_after_epoch=1, **options))
    shutil.copytree(tmp_path / "split", tmp_path / "refused")
    train(_config(cache_dir, tmp_path / "split", workers=2, resume=str(tmp_path / "split"), **options))
    straight = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    resumed = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    saved = json.loads((tmp_path / "split" / "train_config.json").read_text())
    assert (saved["randaugment"], saved["cutout"], saved["accum_steps"]) == (SPEC, 0.5, 2)

    # The augmentation and the effective batch belong to the run's recipe: they cannot change.
    refused = tmp_path / "refused"
    for change, shown in [
        (dict(randaugment=None), "--randaugment rand-m9-mstd0.5-inc1 -> None"),
        (dict(cutout=0.25), "--cutout 0.5 -> 0.25"),
        (dict(accum_steps=4), "--accum-steps 2 -> 4"),
    ]:
        with pytest.raises(ValueError, match=f"cannot change in the middle of a run: {shown}"):
            train(_config(cache_dir, refused, resume=str(refused), **{**options, **change}))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--randaugment", "rand-x9"], "unknown section 'x9'. Expected timm's RandAugment syntax"),
        (["--cutout", "1.5"], "--cutout must be a probability in [0, 1]"),
        (["--accum-steps", "0"], "--accum-steps must be >= 1"),
        (["--accum-steps", "two"], "invalid int value: 'two'"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_any_work(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MSRN_CACHE", str(tmp_path / "cache"))
    try:
        code = cli_main(["train", *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == []  # no data generated, no output folder


# ------------------------------------------------------------------------------------------ accumulation
class _Loader:
    """Batches of ``(images, targets)`` from fixed tensors, with a length, like a DataLoader."""

    def __init__(self, images, targets, batch_size):
        self.images, self.targets, self.batch_size = images, targets, batch_size

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            images = self.images[start : start + self.batch_size]
            targets = self.targets[start : start + self.batch_size]
            yield images, targets


class _Criterion(nn.Module):
    """Mean BCE plus a term of the model alone, as MSRNLoss's compactness term."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, logits, targets, **_):
        bce = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return bce + 1e-2 * self.model[1].weight.square().sum()


def _tiny_model():
    torch.manual_seed(0)  # no BatchNorm: its statistics would differ between batch sizes
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 5))


def _data(samples):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(samples, 3, 4, 4, generator=generator)
    return images, (torch.rand(samples, 5, generator=generator) > 0.5).float()


def _train(batch_size, accum_steps, samples, max_steps=None, wrap=None, epochs=2, scaler=None):
    model = _tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    trained = wrap(model) if wrap else model
    stats = []
    for epoch in range(epochs):
        loader = _Loader(*_data(samples), batch_size)
        stats.append(
            train_one_epoch(
                trained,
                _Criterion(model),
                loader,
                optimizer,
                DistributedContext(),
                epoch + 1,
                scaler=scaler,
                max_steps=max_steps,
                progress=False,
                accum_steps=accum_steps,
            )
        )
    return model, stats


def _assert_close(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_k_batches_of_b_make_the_step_of_one_batch_of_k_times_b():
    # 40 samples: windows of 4 x 4 (16, 16) and a last window of 2 batches (8), divided by 2,
    # which is the last batch of 8 a batch size of 16 gives.
    accumulated, stats = _train(batch_size=4, accum_steps=4, samples=40)
    whole, whole_stats = _train(batch_size=16, accum_steps=1, samples=40)
    _assert_close(accumulated, whole)
    assert [s["steps"] for s in stats] == [s["steps"] for s in whole_stats] == [3, 3]
    assert not torch.equal(accumulated[1].weight, _tiny_model()[1].weight)


def test_a_grad_scaler_steps_and_updates_once_per_window():
    # The loop's --amp fp16 path, with a CPU GradScaler standing in for the CUDA one.
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    accumulated, _ = _train(batch_size=4, accum_steps=4, samples=40, scaler=scaler)
    whole, _ = _train(batch_size=16, accum_steps=1, samples=40)
    _assert_close(accumulated, whole)
    assert scaler.get_scale() == 1024.0 * 2**6  # grown after each of the 6 steps, not after 20 batches


def test_max_steps_counts_optimizer_steps():
    accumulated, stats = _train(batch_size=4, accum_steps=3, samples=48, max_steps=2)
    whole, _ = _train(batch_size=12, accum_steps=1, samples=48, max_steps=2)
    _assert_close(accumulated, whole)
    assert [s["steps"] for s in stats] == [2, 2]
    assert stats[0]["images_per_s"] > 0


class _CountingNoSync(nn.Module):
    """A stand-in for DistributedDataParallel that records which forwards ran under ``no_sync``."""

    def __init__(self, module):
        super().__init__()
        self.module, self.synced, self.in_no_sync = module, [], False

    @contextlib.contextmanager
    def no_sync(self):
        self.in_no_sync = True
        yield
        self.in_no_sync = False

    def forward(self, x):
        self.synced.append(not self.in_no_sync)
        return self.module(x)


def test_only_the_batch_that_steps_all_reduces_under_ddp():
    wrappers = []

    def wrap(model):
        wrappers.append(_CountingNoSync(model))
        return wrappers[-1]

    _train(batch_size=4, accum_steps=3, samples=32, wrap=wrap, epochs=1)  # 8 batches: 3 + 3 + 2
    assert wrappers[0].synced == [False, False, True, False, False, True, False, True]


def test_ddp_accumulation_matches_one_large_batch(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        accumulated, _ = _train(
            batch_size=4, accum_steps=2, samples=24, wrap=nn.parallel.DistributedDataParallel
        )
    finally:
        torch.distributed.destroy_process_group()
    whole, _ = _train(batch_size=8, accum_steps=1, samples=24)
    _assert_close(accumulated, whole)


def test_accum_steps_below_one_is_refused():
    with pytest.raises(ValueError, match="accum_steps must be >= 1"):
        _train(batch_size=4, accum_steps=0, samples=8)
