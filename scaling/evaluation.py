"""The evaluation policy, in one place: how often a run evaluates and in which batches.

The trainer runs it, the benchmark times it and the sweep's cost model prices
it, so all three read these numbers from here.
"""

from __future__ import annotations

import math

MAX_INTERMEDIATE_EVALS = 4
EVAL_BATCH = 1000  # examples per evaluation call; the last batch is padded (one compiled shape)


def default_eval_every(total_steps: int, steps_per_epoch: int) -> int:
    """At most 4 intermediate evaluations, and at most one per epoch: evaluation
    is compute the study pays for, so short runs only evaluate at the end."""
    return max(math.ceil(total_steps / (MAX_INTERMEDIATE_EVALS + 1)), steps_per_epoch)


def eval_batch(n: int, device_count: int) -> int:
    """The evaluation batch for a split of ``n`` examples: at most ``EVAL_BATCH``, divisible by the devices."""
    eb = min(EVAL_BATCH, n)
    return eb - eb % device_count


def padded(n: int, device_count: int = 1) -> int:
    """Examples actually computed to evaluate ``n`` (the last batch padded)."""
    eb = eval_batch(n, device_count)
    return math.ceil(n / eb) * eb


def intermediate_evals(total_steps: int, steps_per_epoch: int, eval_every: int = 0, start: int = 0) -> int:
    """Intermediate validation evaluations a run makes after step ``start``."""
    every = eval_every or default_eval_every(total_steps, steps_per_epoch)
    return (total_steps - 1) // every - start // every if every > 0 else 0
