"""Augmentation that depends on the sample, not on the process that loads it (:class:`SeededAugmentation`)."""

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["SeededAugmentation", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of sample ``index`` in ``epoch`` of a run with ``seed`` (a 63-bit integer).

    Mixed with :class:`numpy.random.SeedSequence`, so that neighbouring indices or epochs do not get
    related streams.
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


@contextlib.contextmanager
def _seeded_generators(seed: int) -> Iterator[None]:
    """Seed the global generators of torch (CPU), numpy and Python with ``seed``; restore them after."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


class SeededAugmentation(torch.utils.data.Dataset):
    """``dataset`` whose ``__getitem__`` runs with the global random generators seeded by
    :func:`sample_seed` ``(seed, epoch, index)``, so that a sample's random augmentation is the same
    whichever process loads it, and however many data-loading processes there are (``--workers``).

    All three generators a transform may draw from are seeded: torch's (the crop, flip and Cutout of
    :func:`msrn.data.train_transform`), and numpy's and Python's (timm's RandAugment). Their states
    in the calling process are left as they were, so loading in the training process (``workers=0``)
    does not shift the streams that the model's own randomness draws from.
    Call :meth:`set_epoch` before each epoch's loader is created (as with ``DistributedSampler``).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with _seeded_generators(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]
