"""Resumable, shardable data loading shared by all trainers.

The order of samples is a pure function of ``(seed, epoch)``: :class:`EpochBatchSampler` draws one
permutation per epoch from its own generator, cuts it into *global* batches of
``batch_size * num_processes`` samples, gives process ``rank`` its slice of each global batch, and can
start at any batch (mid-epoch resume without loading the skipped samples). Because every process
sees a slice of the same global batch, a run on N GPUs consumes the same samples per update as a
1-GPU run with the same global batch.

Random augmentation is made resumable by :class:`SeededDataset`: each item is fetched under
:func:`lightnet.train.rng.isolated_seed` with a seed derived from ``(seed, epoch, index)``, so the
augmented sample does not depend on worker count or on what was loaded before.

Typical use::

    sampler = EpochBatchSampler(len(ds), batch_size=64, seed=cfg.run.seed, rank=acc.process_index,
                                world_size=acc.num_processes, shuffle=True, drop_last=True)
    loader = make_loader(SeededDataset(ds, seed=cfg.run.seed), sampler, num_workers=2)
    sampler.set_epoch(epoch, start_batch=batches_done)   # before iterating each epoch
    for images, labels in loader: ...
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .rng import derive_seed, isolated_seed

__all__ = ["EpochBatchSampler", "SeededDataset", "make_loader"]


class EpochBatchSampler(Sampler[list]):
    """Yields batches of ``(index, epoch)`` pairs for one process; deterministic in ``(seed, epoch)``.

    Args:
        num_samples: dataset length.
        batch_size: per-process batch size.
        seed: base seed of the shuffling.
        rank, world_size: this process and the number of processes (data parallel).
        shuffle: permute per epoch (training) or keep order (evaluation).
        drop_last: drop the last incomplete global batch (training). With ``drop_last=False`` the
            samples are dealt round-robin without padding, so every sample is seen exactly once over
            all processes (evaluation; ranks may get batches of different sizes).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError("the dataset is empty (0 samples)")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and num_samples < batch_size * world_size:
            raise ValueError(f"the dataset has {num_samples} samples, fewer than one global batch "
                             f"({batch_size} x {world_size} processes); lower the batch size")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_batch`` batches."""
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0x5A3F))
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[list]:
        order = self._order()
        gb = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch):
            chunk = order[b * gb:(b + 1) * gb]
            if self.drop_last:
                mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            else:
                mine = chunk[self.rank::self.world_size]
            if mine:
                yield [(i, self.epoch) for i in mine]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch)


class SeededDataset(Dataset):
    """Wraps a map-style dataset; item ``(index, epoch)`` is fetched under a seed from ``(seed, epoch, index)``.

    Any randomness inside ``dataset[index]`` (timm/torchvision transforms use ``random``, NumPy and
    torch) becomes a deterministic function of the triple.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        with isolated_seed(derive_seed(self.seed, epoch, index)):
            return self.dataset[index]


def make_loader(dataset: Dataset, batch_sampler: Sampler, num_workers: int = 0,
                collate_fn: Callable[[Sequence[Any]], Any] | None = None, pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` over ``batch_sampler`` that never touches the global torch RNG.

    (The DataLoader draws a base seed for its workers on every ``iter()``; giving it a private
    generator keeps the global random stream, and hence dropout/mixup, identical across resumes.)
    Workers are persistent: the batch sampler runs in the main process, so ``set_epoch`` still applies.
    """
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_fn,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0),
                      persistent_workers=num_workers > 0)
