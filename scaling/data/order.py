"""The example order of a run, and which part of each global batch a process reads.

Pure rules, shared by every input path. Step ``s`` of a run with global batch
``B`` takes positions ``[s*B, (s+1)*B)`` of the endless concatenation of
per-epoch permutations, each derived from ``(seed, epoch)`` exactly as
``scaling.data.pipeline.ExampleStream`` does: with the same seed, the
in-memory and the streaming path train on the same examples in the same order,
fractional epochs are exact, and a run resumed at step ``s`` sees exactly the
batches of an uninterrupted run. In a run of ``n`` processes, process ``i``
reads the contiguous slice ``[i*B/n, (i+1)*B/n)`` of every global batch.

This module imports only NumPy, so the loader's worker processes can use it.
"""

from __future__ import annotations

import numpy as np


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training examples in ``epoch`` (int32)."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def local_batch_size(global_batch: int, process_count: int) -> int:
    if process_count < 1 or global_batch % process_count:
        raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
    return global_batch // process_count


def process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
    """The slots of a global batch that process ``process_index`` of ``process_count`` reads."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} outside [0, {process_count})")
    b = local_batch_size(global_batch, process_count)
    return slice(process_index * b, (process_index + 1) * b)


def global_position(local_position: int, global_batch: int, process_index: int, process_count: int) -> int:
    """Map the ``local_position``-th example a process reads to its position in the run's order."""
    b = local_batch_size(global_batch, process_count)
    step, slot = divmod(local_position, b)
    return step * global_batch + process_index * b + slot


class ExampleOrder:
    """Position in the run -> example index, caching the last few epoch permutations.

    Equal to ``ExampleStream(n, B, seed).indices(s)`` for the positions of step ``s``.
    """

    def __init__(self, num_examples: int, seed: int, cache_epochs: int = 3):
        if num_examples < 1:
            raise ValueError("no examples to order")
        self.n, self.seed, self.cache_epochs = num_examples, seed, cache_epochs
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) >= self.cache_epochs:
                self._perms.pop(min(self._perms))
            perm = self._perms[epoch] = epoch_permutation(self.seed, epoch, self.n)
        return perm

    def example(self, position: int) -> int:
        epoch, offset = divmod(position, self.n)
        return int(self.permutation(epoch)[offset])

    def indices(self, step: int, global_batch: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Example indices of step ``step`` that process ``process_index`` reads (int32)."""
        sl = process_slice(global_batch, process_index, process_count)
        start = step * global_batch + sl.start
        return np.array([self.example(p) for p in range(start, step * global_batch + sl.stop)], np.int32)

    def __getstate__(self):  # workers rebuild permutations themselves
        return {"n": self.n, "seed": self.seed, "cache_epochs": self.cache_epochs}

    def __setstate__(self, state):
        self.__init__(state["n"], state["seed"], state["cache_epochs"])
