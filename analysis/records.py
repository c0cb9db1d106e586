"""Loading runs: study trees of ``result.json`` and CSV tables, as one column table.

Normalised column names: ``loss`` (validation loss, the y-axis of the laws),
``compute`` (the chosen x column), ``params``, ``examples`` (examples seen,
the D of the parametric law; CSV alias ``tokens``), ``epochs``, ``family``,
``model``. Study records keep every scalar field of ``result.json`` as well,
so any of them can be the x-axis.

Runs whose status is not ``done`` (diverged, failed), unreadable records and
runs without a finite positive loss are excluded and counted, never silently
dropped. Several runs of one (model, epochs) cell that differ in learning rate
are an LR sweep: ``best_per_cell`` keeps the one with the lowest validation
loss, since the laws describe tuned runs.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from scaling.errors import UserError

STUDY_DEFAULT_X = "accelerator_hours"
CSV_DEFAULT_X = "compute"
_ALIASES = {"tokens": "examples", "examples_seen": "examples", "val_loss": "loss"}
_TEXT = ("family", "model", "status", "dataset", "device_kind", "schema", "version")


@dataclasses.dataclass
class Table:
    columns: dict[str, np.ndarray]
    excluded: collections.Counter  # reason -> count
    kinds: set  # {"study", "csv"}
    lr_duplicates: int = 0

    def __len__(self) -> int:
        return len(self.columns["loss"])

    def has(self, name: str) -> bool:
        col = self.columns.get(name)
        if col is None:
            return False
        if col.dtype == object:
            return any(v not in (None, "") for v in col)
        return bool(np.isfinite(col).any())

    def subset(self, mask: np.ndarray) -> "Table":
        return Table({k: v[mask] for k, v in self.columns.items()}, self.excluded, self.kinds, self.lr_duplicates)


def _study_rows(root: Path, excluded: collections.Counter) -> list[dict]:
    rows = []
    for path in sorted(root.rglob("result.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            excluded["unreadable result.json"] += 1
            continue
        status = rec.get("status", "done")
        if status != "done":
            excluded[f"status {status}"] += 1
            continue
        row = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
        row["loss"] = rec.get("val_loss")
        row["examples"] = rec.get("examples_seen")
        row["run_dir"] = str(path.parent)
        rows.append(row)
    return rows


def _csv_rows(path: Path, excluded: collections.Counter) -> list[dict]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        rows = []
        for raw in reader:
            row = {_ALIASES.get(k.strip(), k.strip()): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
            if row.get("status", "done") not in ("done", ""):
                excluded[f"status {row['status']}"] += 1
                continue
            rows.append(row)
    if "loss" not in {_ALIASES.get(f, f) for f in fields}:
        raise UserError(f"{path}: CSV has no 'loss' column (columns: {', '.join(fields) or 'none'})")
    return rows


def _to_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def load(paths: list[str | Path]) -> Table:
    """Read study directories and CSV files into one table."""
    excluded: collections.Counter = collections.Counter()
    rows: list[dict] = []
    kinds = set()
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or directory")
        if p.is_dir():
            found = _study_rows(p, excluded)
            if not found and not excluded:
                raise UserError(f"{p}: no result.json below this directory")
            rows += found
            kinds.add("study")
        else:
            rows += _csv_rows(p, excluded)
            kinds.add("csv")
    names = sorted({k for r in rows for k in r})
    cols: dict[str, np.ndarray] = {}
    for name in names:
        vals = [r.get(name) for r in rows]
        if name in _TEXT or name == "run_dir":
            cols[name] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
        else:
            num = np.array([_to_float(v) for v in vals])
            if np.isfinite(num).any() or all(v in (None, "") for v in vals):
                cols[name] = num
            else:
                cols[name] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
    cols.setdefault("loss", np.array([]))
    table = Table(cols, excluded, kinds)
    bad = ~(np.isfinite(table.columns["loss"]) & (table.columns["loss"] > 0))
    if bad.any():
        excluded["non-finite or non-positive loss"] += int(bad.sum())
        table = table.subset(~bad)
    if len(table) == 0:
        why = ", ".join(f"{v} {k}" for k, v in sorted(excluded.items())) or "no runs found"
        raise UserError(f"0 usable run(s) ({why}); at least 3 are needed to fit a law")
    return table


def select_x(table: Table, x: str | None) -> tuple[Table, str]:
    """Put the x column under ``compute``; drop (and count) runs where it is not positive."""
    if x is None:
        x = STUDY_DEFAULT_X if "study" in table.kinds else CSV_DEFAULT_X
    col = table.columns.get(x)
    if col is None or col.dtype == object:
        have = ", ".join(k for k, v in table.columns.items() if v.dtype != object)
        raise UserError(f"no numeric column {x!r} in the runs (numeric columns: {have or 'none'})")
    cols = dict(table.columns)
    cols["compute"] = col
    t = Table(cols, table.excluded, table.kinds, table.lr_duplicates)
    bad = ~(np.isfinite(col) & (col > 0))
    if bad.any():
        t.excluded[f"missing or non-positive {x}"] += int(bad.sum())
        t = t.subset(~bad)
    return t, x


def best_per_cell(table: Table) -> Table:
    """Keep, per (model, epochs) cell, the run with the lowest loss (the tuned LR)."""
    c = table.columns
    model = c["model"] if table.has("model") else c.get("params", np.arange(len(table)))
    dur = c["epochs"] if table.has("epochs") else c.get("examples", np.arange(len(table)))
    group = c["family"] if table.has("family") else np.full(len(table), "")
    best: dict = {}
    for i, key in enumerate(zip(group, model, dur)):
        if key not in best or c["loss"][i] < c["loss"][best[key]]:
            best[key] = i
    keep = np.zeros(len(table), bool)
    keep[list(best.values())] = True
    out = table.subset(keep)
    out.lr_duplicates = int(len(table) - keep.sum())
    return out
