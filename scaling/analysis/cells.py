"""From runs to cells: seeds are averaged, learning-rate trials keep the best.

A cell is one design point: runs that agree on every column that says what
was trained (``DESIGN``: model, size, epochs, examples seen, unique data,
dataset, ...). Within a cell:

- runs that differ only in ``seed`` (or repeat the same lr) are replicates:
  they become one point whose loss is the geometric mean (the laws are fitted
  in log space) and whose ``loss_log_var`` is the variance of log loss across
  them (the seed noise; nan for a single run). Keeping the lowest of them
  would bias the loss downward and discard the noise estimate (issue 30);
- runs that differ in ``lr`` are an lr sweep: the lr whose (seed-averaged)
  loss is lowest is kept, since the laws describe tuned runs.

Without an ``lr`` column, rows of one cell are replicates only if a ``seed``
column gives each a different seed; otherwise they cannot be told apart and
are treated as lr trials (the best is kept), as before.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

# Columns that say what was trained. Two runs that differ in any of them are
# different cells, never lr siblings (issue 22: runs sharing (params, epochs)
# but differing in data were silently dropped as "lr trials").
DESIGN = (
    "family", "model", "params", "epochs", "examples", "unique_examples", "train_size",
    "dataset", "dataset_hash", "image_size", "batch_size", "schedule",
)
AVERAGED = ("loss", "compute")


def _key_value(col: np.ndarray, i: int):
    v = col[i]
    if col.dtype == object:
        return str(v)
    return "missing" if not np.isfinite(v) else float(v)


def collapse(table):
    """One row per cell (see the module docstring); counts on the returned table.

    ``lr_duplicates``: rows dropped as worse lr trials; ``replicates``: rows
    merged into another by averaging seeds; columns ``n_seeds`` and
    ``loss_log_var`` are added.
    """
    c = table.columns
    n = len(table)
    design = [k for k in DESIGN if table.has(k)]  # none: nothing says what was trained, each row a cell
    has_lr, has_seed = table.has("lr"), table.has("seed")
    by_key: dict = collections.defaultdict(list)
    for i in range(n):
        by_key[tuple(_key_value(c[k], i) for k in design) if design else (i,)].append(i)
    cells = []
    for idx in by_key.values():
        groups: dict = collections.defaultdict(list)
        seeds = [_key_value(c["seed"], i) for i in idx] if has_seed else []
        for i in idx:
            if has_lr:
                groups[_key_value(c["lr"], i)].append(i)
            elif has_seed and len(set(seeds)) == len(idx):
                groups["seeds of one lr"].append(i)  # lr not recorded, every row its own seed
            else:
                groups[i].append(i)  # indistinguishable rows: lr trials, as before
        cells.append(groups)

    rows, n_seeds, log_var, loss, compute = [], [], [], [], []
    dropped = merged = 0
    for groups in cells:
        best = None
        for idx in groups.values():
            ll = np.log(c["loss"][idx])
            cand = (float(ll.mean()), idx)
            if best is None or cand[0] < best[0]:
                best = cand
        for idx in groups.values():
            if idx is not best[1]:
                dropped += len(idx)
        idx = best[1]
        merged += len(idx) - 1
        rows.append(idx[0])
        n_seeds.append(len(idx))
        ll = np.log(c["loss"][idx])
        log_var.append(float(ll.var(ddof=1)) if len(idx) > 1 else np.nan)
        loss.append(float(np.exp(ll.mean())))
        compute.append(float(np.mean(c["compute"][idx])))
    order = np.argsort(rows, kind="stable")
    keep = np.asarray(rows, int)[order]
    cols = {k: v[keep] for k, v in c.items()}
    cols["loss"] = np.asarray(loss)[order]
    cols["compute"] = np.asarray(compute)[order]
    cols["n_seeds"] = np.asarray(n_seeds, float)[order]
    cols["loss_log_var"] = np.asarray(log_var)[order]
    return dataclasses.replace(table, columns=cols, lr_duplicates=dropped, replicates=merged)


def seed_noise(table) -> dict | None:
    """How many cells were averaged over seeds and the median std of log loss among them."""
    c = table.columns
    if "n_seeds" not in c or not np.any(c["n_seeds"] > 1):
        return None
    v = c["loss_log_var"][c["n_seeds"] > 1]
    return {
        "cells_with_replicates": int(np.sum(c["n_seeds"] > 1)),
        "replicates_averaged": int(table.replicates),
        "median_log_loss_std": float(np.sqrt(np.median(v))),
    }
