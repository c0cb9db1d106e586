"""What earlier studies learned about trial costs on this kind of device.

Calibration measures steps, evals and compiles, but not everything a trial
process pays for (interpreter start-up, the trainer's set-up: data, init,
checkpoints). A study learns those from its own finished trials; until its
first trial finishes, it starts from what earlier studies on the same device
kind measured, so its first plan is already close. Kept per user in
``<cache>/sweep-priors.json``; ``SCALING_SWEEP_PRIORS=off`` disables it
(the sweep then starts from calibration alone).
"""

from __future__ import annotations

import os
from pathlib import Path

from scaling.sweep import state


def path() -> Path | None:
    if os.environ.get("SCALING_SWEEP_PRIORS", "").lower() == "off":
        return None
    from scaling.paths import cache_dir

    return cache_dir() / "sweep-priors.json"


def load(device_kind: str) -> dict | None:
    p = path()
    if p is None:
        return None
    return (state.read_json(p) or {}).get(device_kind)


def store(device_kind: str, ratios: dict[str, float], other_seconds: float | None,
          startup_seconds: float | None) -> None:
    """Record what a study measured (latest study wins: the machine may have changed)."""
    p = path()
    if p is None or other_seconds is None:
        return
    try:
        allp = state.read_json(p) or {}
        allp[device_kind] = {"ratios": ratios, "other_seconds": other_seconds, "startup_seconds": startup_seconds}
        state.write_json(p, allp)
    except OSError:
        pass  # a read-only cache only costs a less accurate first plan
