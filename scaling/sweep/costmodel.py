"""Predicted accelerator-hours of one trial, from calibration and measured trials.

A trial's cost is what the study pays for its training process::

    startup  (interpreter + imports, before the trainer's own clock starts)
  + setup    (data load, model init: the trainer's "other" time)
  + compile  (train step + eval step)
  + steps x step_seconds
  + evals x eval examples x eval_seconds_per_example   (intermediate val, final val, test)

all times the devices the trial uses. A WSD stem segment or cooldown branch
(``scaling.branching``) trains only steps [start, end) of its run: its train
and intermediate-eval terms count those steps (the ``start``/``end``/
``eval_every`` keywords), its fixed costs are a whole trial's. Calibration measures each term once per
model; as trials finish, the measured/predicted ratio of each part (per
model, else pooled) and the measured fixed costs (set-up, start-up) replace
the guesses, which is how re-planning converges on the real cost. Before the
study's first trial finishes, what earlier studies measured on this kind of
device (``priors.py``) stands in.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from scaling.evaluation import intermediate_evals, padded

PARTS = ("compile", "train", "eval", "other")


@dataclasses.dataclass
class CostModel:
    """Everything needed to price a (model, epochs) trial."""

    calibration: dict[str, Any]  # calibrate.load(...) contents
    batch_size: int
    eval_every: int = 0
    # measured / predicted seconds per part: {model: {part: ratio}} and pooled {part: ratio}
    corrections: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    pooled: dict[str, float] = dataclasses.field(default_factory=dict)
    startup_seconds: float | None = None  # measured wrapper overhead per process
    other_seconds: float | None = None  # measured trainer set-up per trial (data, init, checkpoints)

    @property
    def data(self) -> dict:
        return self.calibration["data"]

    @property
    def devices(self) -> int:
        return int(self.data.get("device_count", 1))

    def steps(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.data["train_size"] / self.batch_size))

    def parts(self, model: str, epochs: float, start: int = 0, end: int | None = None,
              eval_every: int | None = None) -> dict[str, float]:
        """Uncorrected trainer seconds per accounting part, from calibration, of a run of
        ``epochs`` (or ``end`` steps) that trains from step ``start``."""
        m = self.calibration["models"][model]
        total = self.steps(epochs) if end is None else end
        spe = math.ceil(self.data["train_size"] / self.batch_size)
        every = self.eval_every if eval_every is None else eval_every
        n_val = intermediate_evals(total, spe, every, start) + 1
        eval_examples = n_val * padded(self.data["val_size"]) + padded(self.data["test_size"])
        return {
            "compile": m["compile_seconds"],  # bench: train step + eval step
            "train": (total - start) * m["step_seconds"],
            "eval": eval_examples * m["eval_seconds_per_example"],
            "other": self.other_seconds if self.other_seconds is not None else self.data.get("setup_seconds", 0.0),
        }

    def ratio(self, model: str, part: str) -> float:
        if part == "other":  # a fixed cost per trial, measured in seconds, not a ratio
            return 1.0
        return self.corrections.get(model, {}).get(part, self.pooled.get(part, 1.0))

    def trainer_seconds(self, model: str, epochs: float, **work) -> float:
        """The trainer's own wall time (what its accounting.json will report), corrected.
        ``work``: ``start``/``end``/``eval_every`` of a stem segment or branch (see ``parts``)."""
        return sum(v * self.ratio(model, k) for k, v in self.parts(model, epochs, **work).items())

    def startup(self) -> float:
        if self.startup_seconds is not None:
            return self.startup_seconds
        return self.data.get("startup_seconds", 0.0)

    def trial_hours(self, model: str, epochs: float, **work) -> float:
        """Predicted accelerator-hours of a whole new trial."""
        return (self.trainer_seconds(model, epochs, **work) + self.startup()) * self.devices / 3600.0

    def remaining_hours(self, model: str, epochs: float, spent_trainer_hours: float, **work) -> float:
        """Predicted hours still to pay for a started trial (one more process start)."""
        total = self.trainer_seconds(model, epochs, **work) * self.devices / 3600.0
        return max(total - spent_trainer_hours, 0.0) + self.startup() * self.devices / 3600.0

    def train_flops(self, model: str, epochs: float) -> float:
        m = self.calibration["models"][model]
        return m["flops_per_example"] * self.steps(epochs) * self.batch_size


def fit_corrections(model: CostModel, finished: list[dict], prior: dict | None = None) -> CostModel:
    """Measured/predicted ratio per accounting part (per model and pooled), and the
    measured fixed costs per trial (trainer set-up, process start-up).

    ``finished``: dicts with model, epochs, optional ``work`` (start/end/eval_every
    of a stem segment or branch), ``breakdown_seconds`` (the trainer's
    per-part seconds x devices, from result.json) and ``overhead_seconds`` (mean
    wrapper overhead of its processes, or None). Correcting each part separately
    keeps a compile-dominated short trial from distorting a long trial's price.
    ``prior`` (``priors.load``) stands in while the study has no finished trial.
    """
    sums: dict[str, dict[str, list[float]]] = {}
    pooled: dict[str, list[float]] = {k: [0.0, 0.0] for k in PARTS if k != "other"}
    overheads, others = [], []
    for t in finished:
        bd = t.get("breakdown_seconds")
        if t["model"] not in model.calibration["models"] or not bd:
            continue
        pred = model.parts(t["model"], t["epochs"], **(t.get("work") or {}))
        per = sums.setdefault(t["model"], {k: [0.0, 0.0] for k in pooled})
        for k in pooled:
            actual = bd.get(k, 0.0) / model.devices
            per[k][0] += actual
            per[k][1] += pred[k]
            pooled[k][0] += actual
            pooled[k][1] += pred[k]
        others.append(bd.get("other", 0.0) / model.devices)
        if t.get("overhead_seconds") is not None:
            overheads.append(t["overhead_seconds"])

    def ratios(acc: dict[str, list[float]]) -> dict[str, float]:
        return {k: a / p for k, (a, p) in acc.items() if p > 0}

    if not others and prior:
        return dataclasses.replace(model, pooled=dict(prior.get("ratios", {})),
                                   other_seconds=prior.get("other_seconds", model.other_seconds),
                                   startup_seconds=prior.get("startup_seconds", model.startup_seconds))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return dataclasses.replace(
        model,
        corrections={m: ratios(v) for m, v in sums.items()},
        pooled=ratios(pooled),
        other_seconds=mean(others) if others else model.other_seconds,
        startup_seconds=mean(overheads) if overheads else model.startup_seconds,
    )
