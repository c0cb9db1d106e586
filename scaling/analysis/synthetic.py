"""Synthetic run records drawn from known laws: plumbing only, never results.

Used by the notebook tests, the benchmark and the docs examples to exercise
the analysis end to end before a real study exists. Every record says
``"synthetic": true`` and its ``dataset`` is ``synthetic-from-known-law``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Per family: parametric law in (params, examples), FLOPs per parameter per
# example (training, 2xMAC fwd+bwd), accelerator-hours per FLOP.
FAMILIES = {
    "vit": {"E": 0.35, "A": 36.0, "B": 47.0, "alpha": 0.33, "beta": 0.36, "k": 300.0, "hours_per_flop": 1 / 3e16},
    "nfnet": {"E": 0.33, "A": 30.0, "B": 60.0, "alpha": 0.31, "beta": 0.38, "k": 900.0, "hours_per_flop": 1 / 2e16},
}
TRAIN_SIZE = 45_000


def loss_of(fam: dict, params, examples):
    return fam["E"] + fam["A"] / np.asarray(params) ** fam["alpha"] + fam["B"] / np.asarray(examples) ** fam["beta"]


def draw_cells(
    fam: dict,
    rng: np.random.Generator,
    *,
    sizes: int = 6,
    epochs=(1, 2, 4, 8, 16, 32, 64),
    noise: float = 0.01,
    model_offset: float = 0.0,
) -> dict[str, np.ndarray]:
    """One family's tuned cells in memory: columns params, epochs, examples, compute (FLOPs), loss, model.

    ``noise``: std of independent log-normal noise per run; ``model_offset``: std of a
    log-normal offset shared by every run of one model (a model that is simply a bit
    better or worse than the law, as real architectures are), the case a bootstrap over
    runs treats as independent noise (issue 30).
    """
    params = np.logspace(5, 7.5, sizes).round()
    offset = np.exp(rng.normal(0, model_offset, sizes)) if model_offset else np.ones(sizes)
    n, ep = (a.ravel() for a in np.meshgrid(params, np.asarray(epochs, float), indexing="ij"))
    model = np.repeat(np.arange(sizes), len(epochs))
    examples = ep * TRAIN_SIZE
    loss = loss_of(fam, n, examples) * offset[model] * np.exp(rng.normal(0, noise, len(n)))
    return {"params": n, "epochs": ep, "examples": examples, "compute": fam["k"] * n * examples,
            "loss": loss, "model": model.astype(float)}


def write_study(
    root: str | Path,
    *,
    seed: int = 0,
    sizes: int = 6,
    epochs=(1, 2, 4, 8, 16, 32, 64),
    noise: float = 0.01,
    model_offset: float = 0.0,
    lrs=(1e-3, 3e-3),
) -> Path:
    """Write a study tree of result.json files (plus one diverged and one failed run per family)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for fam_name, fam in FAMILIES.items():
        offset = np.exp(rng.normal(0, model_offset, sizes)) if model_offset else np.ones(sizes)
        for i, params in enumerate(np.logspace(5, 7.5, sizes).round()):
            for ep in epochs:
                for j, lr in enumerate(lrs):
                    examples = ep * TRAIN_SIZE
                    flops = fam["k"] * params * examples
                    # the second LR is detuned: worse loss, so the analysis must pick the first
                    loss = float(loss_of(fam, params, examples) * offset[i] * np.exp(rng.normal(0, noise)) * (1.05 if j else 1.0))
                    hours = flops * fam["hours_per_flop"] * float(np.exp(rng.normal(0, 0.02)))
                    _write(root / fam_name / f"m{i}-e{ep}-lr{j}", fam_name, f"{fam_name}-s{i}", params, ep, examples, lr, loss, flops, hours, "done")
        for status in ("diverged", "failed"):
            _write(root / fam_name / f"bad-{status}", fam_name, f"{fam_name}-s0", 1e5, 1, TRAIN_SIZE, 1.0, float("nan"), 1e12, 1e-4, status)
    return root


def _write(d: Path, family, model, params, epochs, examples, lr, loss, flops, hours, status):
    d.mkdir(parents=True, exist_ok=True)
    rec = {
        "schema": 1,
        "version": "synthetic",
        "synthetic": True,
        "model": model,
        "family": family,
        "params": int(params),
        "dataset": "synthetic-from-known-law",
        "image_size": 32,
        "epochs": epochs,
        "steps": int(examples // 128),
        "batch_size": 128,
        "examples_seen": int(examples),
        "lr": lr,
        "seed": 0,
        "status": status,
        "val_loss": None if loss != loss else loss,
        "val_accuracy": None,
        "test_loss": None,
        "test_accuracy": None,
        "train_loss": None if loss != loss else loss * 0.9,
        "flops_per_example": flops / examples,
        "train_flops": flops,
        "accelerator_hours": hours,
        "accelerator_hours_breakdown": {"compile": 0.0, "train": hours, "eval": 0.0},
        "compile_seconds": 0.0,
        "wall_seconds": hours * 3600,
        "device_kind": "synthetic",
        "device_count": 1,
        "mfu": None,
    }
    (d / "result.json").write_text(json.dumps(rec))
