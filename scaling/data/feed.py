"""Host batches -> global device arrays, a few batches ahead of the train step.

Each process hands in its slice of the global batch (``stream.TrainLoader``);
``jax.make_array_from_process_local_data`` assembles the global array on the
data-parallel sharding without gathering anything on one host. Transfers are
asynchronous, so putting ``prefetch`` batches in flight overlaps them with the
steps. Example ids stay on the host (for logs and resume checks).
"""

from __future__ import annotations

import collections
from typing import Iterable, Iterator

DEVICE_KEYS = ("image", "label", "mask")


def to_device(batch: dict, sharding) -> dict:
    """``batch`` with its image/label/mask arrays as global ``jax.Array`` on ``sharding``."""
    import jax

    return {k: jax.make_array_from_process_local_data(sharding, v) if k in DEVICE_KEYS else v
            for k, v in batch.items()}


def device_batches(batches: Iterable[dict], sharding, prefetch: int = 2) -> Iterator[dict]:
    """Yield ``to_device(b)`` for each batch, keeping ``prefetch`` transfers in flight."""
    it = iter(batches)
    queue: collections.deque = collections.deque()
    for b in it:
        queue.append(to_device(b, sharding))
        if len(queue) >= max(prefetch, 1):
            break
    while queue:
        out = queue.popleft()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(to_device(nxt, sharding))
        yield out
