"""Step arithmetic of the learning-rate schedules: warmup length and cooldown start.

Pure Python (no JAX), so the sweep plans WSD branch points with the same
functions the trainer's schedule (``scaling.optim``) and the branch checks
(``scaling.branching``) use.
"""

from __future__ import annotations

SCHEDULES = ("cosine", "wsd", "constant")
COOLDOWN_SHAPES = ("1-sqrt", "linear")


def warmup_steps(cfg, total_steps: int) -> int:
    """Warmup length in steps: ``warmup_steps`` if set, else ``warmup_fraction`` of
    the run; always shorter than the run."""
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    else:
        warmup = int(round(cfg.warmup_fraction * total_steps))
    return min(max(warmup, 0), max(total_steps - 1, 0))


def cooldown_start(total_steps: int, cooldown_fraction: float, warmup_steps: int) -> int:
    """First step of a WSD run's cooldown: the last ``round(fraction x steps)`` steps (at
    least one) decay, never before the warmup ends."""
    cool = max(1, int(round(cooldown_fraction * total_steps)))
    return max(total_steps - cool, warmup_steps)


def run_cooldown_start(cfg, total_steps: int) -> int:
    """The first cooldown step of the run ``cfg``: a ``constant`` run (a stem) has none
    (its cooldown would start at its end)."""
    if cfg.schedule == "constant":
        return total_steps
    return cooldown_start(total_steps, cfg.cooldown_fraction, warmup_steps(cfg, total_steps))
