"""Learning-rate choice per epoch budget: P23's factor-2 tuning "within 2 trials".

P23 §2 tunes the base learning rate separately for every epoch budget on a log
grid spaced by factors of 2, and observes that the optimum falls slowly and
monotonically as the epoch budget and the model size grow, so that "one can
efficiently tune the learning rate within 2 trials". The sweep implements that
rule per family:

- The lr is tuned on one model per epoch budget: the family's smallest model
  (``lr_tune_on="smallest"``, default: the cheapest place to learn it, as the
  brief of this project suggests) or the smallest model planned at that budget
  (``lr_tune_on="band"``: closer in size to the models that reuse it, costlier).
- At the smallest epoch budget it runs ``lr_first_multipliers`` x the base lr
  (the family recipe's lr, or ``lr_base``): by default {1, 1/2}.
- At each next epoch budget it runs 2 trials: the previous budget's best lr and
  half of it (the optimum can only stay or fall).
- Every other model at that budget reuses the budget's best lr, times
  ``lr_size_factor`` per ladder step (1.0 by default: "falls slowly").

"Best" = lowest validation loss among finished trials; a diverged trial
counts as worst. If every candidate diverged, half the smallest one is used.

A rule is JSON: ``{"kind": "fixed", "lr": x}`` or
``{"kind": "best_of", "deps": [trial ids], "mult": m}``.
"""

from __future__ import annotations

import math
from typing import Mapping


def fixed(lr: float) -> dict:
    return {"kind": "fixed", "lr": float(lr)}


def best_of(deps: list[str], mult: float) -> dict:
    return {"kind": "best_of", "deps": list(deps), "mult": float(mult)}


def deps(rule: dict) -> list[str]:
    return list(rule.get("deps", [])) if rule["kind"] == "best_of" else []


def best_lr(results: Mapping[str, dict], ids: list[str]) -> float:
    """The lr of the lowest finite val_loss among ``ids`` (each result has lr, val_loss)."""
    scored = [
        (results[i]["val_loss"], results[i]["lr"])
        for i in ids
        if results[i].get("val_loss") is not None and math.isfinite(results[i]["val_loss"])
    ]
    if scored:
        return min(scored)[1]
    return 0.5 * min(results[i]["lr"] for i in ids)


def resolve(rule: dict, results: Mapping[str, dict]) -> float | None:
    """The lr for a rule, or None while a dependency has not finished."""
    if rule["kind"] == "fixed":
        return rule["lr"]
    if any(d not in results for d in rule["deps"]):
        return None
    return best_lr(results, rule["deps"]) * rule["mult"]
