"""Augmentation that depends on the sample, not on the process that loads it (:class:`SeededAugmentation`)."""

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


class SeededAugmentation(torch.utils.data.Dataset):
    """``dataset`` whose ``__getitem__`` runs under the torch seed :func:`sample_seed` ``(seed, epoch,
    index)``, so that a sample's random crop and flip are the same whichever process loads it, and
    however many data-loading processes there are (``--workers``).

    The torch random state of the calling process is left as it was, so loading in the training
    process (``workers=0``) does not shift the stream that the model's own randomness draws from.
    Call :meth:`set_epoch` before each epoch's loader is created (as with ``DistributedSampler``).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]
