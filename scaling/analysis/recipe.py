"""From answer to action: the runnable training config of a predicted compute-optimal run.

``python -m scaling.fit DIR --predict B --emit-config PATH`` takes the fit's N* and
epochs* at budget B for one family and writes a ``TrainConfig`` JSON that
``python -m scaling.train --config PATH --workdir W`` runs: the trained model of
that family nearest N* (in log parameters; the study's models are the ones it
can vouch for), epochs*, the study's own recipe (the best run's config), and
the learning rate its tuner chose at the epoch budget nearest epochs*. The
prediction (loss with its interval, N*, epochs*, whether identified, and which
choices were rounded) travels under ``_prediction``, which the trainer ignores.
"""

from __future__ import annotations

import json
import math

import numpy as np

from scaling.errors import UserError
from scaling.jsonio import write_json

DROPPED = ("steps", "examples", "init_from", "warmup_steps")  # the run's length is epochs*; no stem


def _runs(table, family: str) -> list[dict]:
    c = table.columns
    if "run_dir" not in c:
        raise UserError("--emit-config needs a study directory (run records with configs), not a CSV table")
    fam = c["family"] if "family" in c else np.array([""] * len(c["loss"]), dtype=object)
    out = []
    for i in np.flatnonzero(fam == family):
        path = f"{c['run_dir'][i]}/result.json"
        try:
            rec = json.loads(open(path, encoding="utf-8").read())
        except (OSError, ValueError):
            continue
        if isinstance(rec.get("config"), dict) and rec.get("params") and rec.get("val_loss") is not None:
            out.append(rec)
    if not out:
        raise UserError(f"--emit-config: no finished run of family {family!r} with a config to start from")
    return out


def emit(doc: dict, table, path: str, family: str | None = None) -> dict:
    """Write the config for the predicted optimum of ``family`` (or the fit's only family); return it."""
    groups = doc.get("groups") or {}
    if family is None:
        if len(groups) != 1:
            raise UserError(f"--emit-config: the fit has families {', '.join(sorted(groups))}: name one with --family")
        family = next(iter(groups))
    if family not in groups:
        raise UserError(f"--emit-config: no family {family!r} in the fit (families: {', '.join(sorted(groups))})")
    pr = groups[family].get("prediction")
    if not pr:
        raise UserError("--emit-config needs --predict BUDGET")
    n_star, e_star = (pr.get(k, {}).get("value") for k in ("params", "epochs"))
    for name, v in (("N*", n_star), ("epochs*", e_star)):
        if v is None or not math.isfinite(v) or v <= 0:
            raise UserError(f"--emit-config: the fit gives no usable {name} for {family} at {pr['budget']:g} "
                            f"({v}); see its warnings")
    runs = _runs(table, family)
    models = {r["model"]: float(r["params"]) for r in runs}
    model = min(models, key=lambda m: abs(math.log(models[m] / n_star)))
    mine = [r for r in runs if r["model"] == model]
    budgets = sorted({float(r["epochs"]) for r in mine})
    nearest = min(budgets, key=lambda e: abs(math.log(e / e_star)))
    best = min((r for r in mine if float(r["epochs"]) == nearest), key=lambda r: r["val_loss"])
    epochs = float(f"{e_star:.3g}")
    cfg = {k: v for k, v in best["config"].items() if k not in DROPPED}
    cfg.update(model=model, epochs=epochs, lr=best["config"]["lr"])
    if cfg.get("schedule") == "constant":  # a stem's recipe: the standalone run cools down
        cfg["schedule"] = "wsd"
    notes = []
    if not (min(models.values()) <= n_star <= max(models.values())):
        notes.append(f"N* {n_star:.3g} is outside the trained sizes ({min(models.values()):.3g}-"
                     f"{max(models.values()):.3g}): {model} is the nearest")
    if not (budgets[0] <= e_star <= budgets[-1]):
        notes.append(f"epochs* {e_star:.3g} is outside {model}'s trained budgets ({budgets[0]:g}-{budgets[-1]:g}): "
                     f"its lr comes from the nearest ({nearest:g})")
    identified = all(pr.get(k, {}).get("identified", True) for k in ("params", "epochs"))
    out = {"_prediction": {
        "family": family, "budget": pr["budget"], "loss": pr.get("loss"), "params": pr.get("params"),
        "epochs": pr.get("epochs"), "identified": identified, "model_params": models[model],
        "lr_from": {"epochs": nearest, "seed": best["config"].get("seed"), "val_loss": best["val_loss"]},
        "notes": notes + ([] if identified else ["the fit does not identify this allocation: a guess, not an answer"]),
    }, **cfg}
    write_json(path, out)
    return out
