"""Deterministic, resumable, rank-sharded batch sampling.

The training stream is the concatenation of seeded random permutations of the dataset
(one per epoch). Global position ``p`` (0, 1, 2, ...) maps to dataset index
``perm_{p // N}[p % N]`` and to a per-sample seed ``(seed * 1000003 + p) mod 2**62`` that
the dataset uses for its own randomness (pair choice, augmentation). So a batch depends
only on (seed, step), never on worker processes or on global RNG state: resuming at step
``s`` reproduces exactly the batches of an uninterrupted run, and ``world`` processes with
per-rank batch ``B / world`` see, together, exactly the global batch ``B`` of one process
(rank ``r`` takes positions ``s*B + r*b ... s*B + (r+1)*b - 1``).

Datasets used with it accept ``dataset[(index, sample_seed)]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["StepBatchSampler", "sample_seed"]

_MOD = 2 ** 62


def sample_seed(seed: int, position: int) -> int:
    """Per-sample seed for global stream position ``position``."""
    return (seed * 1000003 + position) % _MOD


class StepBatchSampler(Sampler):
    """Infinite batch sampler yielding, per step, this rank's list of ``(index, seed)``.

    Args:
        num_items: dataset length N (> 0).
        batch_size: GLOBAL batch size B (divisible by ``world``).
        seed: stream seed.
        rank, world: this process and the number of processes.
        start_step: first step to yield (for resuming).
        shuffle: False gives the identity order in every epoch.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world: int = 1, start_step: int = 0, shuffle: bool = True):
        if num_items <= 0:
            raise ValueError("dataset is empty")
        if batch_size <= 0 or batch_size % world:
            raise ValueError(f"global batch size {batch_size} must be a positive multiple "
                             f"of the number of processes {world}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in [0, {world})")
        self.n, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world, self.start_step, self.shuffle = rank, world, start_step, shuffle
        self.local = batch_size // world
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            if self.shuffle:
                g = torch.Generator().manual_seed((self.seed * 7919 + epoch) % _MOD)
                self._perm_cache[epoch] = torch.randperm(self.n, generator=g)
            else:
                self._perm_cache[epoch] = torch.arange(self.n)
        return self._perm_cache[epoch]

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        """This rank's ``(index, seed)`` list for ``step``."""
        start = step * self.batch_size + self.rank * self.local
        out = []
        for p in range(start, start + self.local):
            out.append((int(self._perm(p // self.n)[p % self.n]), sample_seed(self.seed, p)))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:  # effectively infinite
        return 2 ** 62
