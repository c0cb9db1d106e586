"""Loading runs: study trees of ``result.json`` and CSV tables, as one column table.

Normalised column names: ``loss`` (validation loss, the y-axis of the laws),
``compute`` (the chosen x column), ``params``, ``examples`` (examples seen,
the D of the parametric law; CSV alias ``tokens``), ``epochs``, ``family``,
``model``. Study records keep every scalar field of ``result.json`` as well,
so any of them can be the x-axis.

Runs whose status is not ``done`` (diverged, failed), unreadable records and
study runs without a finite positive loss are excluded and counted, never
silently dropped. A CSV is the user's own table, so it is held to more: a
file that is not UTF-8 text, a row with more fields than the header, text in
a numeric column, or a ``done`` row whose loss or compute is missing, NaN,
zero or negative is an error naming the file and line (``source`` column).

``best_per_cell`` turns runs into cells (scaling.analysis.cells): seeds averaged, the
best learning rate kept.
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
_TEXT = ("family", "model", "schedule", "status", "dataset", "device_kind", "schema", "version", "source", "input")
# columns that must be positive where a CSV gives them (they are logged by the laws)
POSITIVE = ("params", "examples", "epochs", "unique_examples", "train_size")


@dataclasses.dataclass
class Table:
    columns: dict[str, np.ndarray]
    excluded: collections.Counter  # reason -> count
    kinds: set  # {"study", "csv"}
    lr_duplicates: int = 0
    replicates: int = 0  # runs merged into another cell's point by averaging seeds (scaling.analysis.cells)
    unreadable: list = dataclasses.field(default_factory=list)  # paths of result.json files that could not be read

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
        return dataclasses.replace(self, columns={k: v[mask] for k, v in self.columns.items()})

    def from_csv(self) -> np.ndarray:
        """Rows that came from a CSV file (held to the strict checks)."""
        return self.columns["input"] == "csv"


def _study_rows(root: Path, excluded: collections.Counter, unreadable: list) -> list[dict]:
    rows = []
    for path in sorted(root.rglob("result.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            excluded["unreadable result.json"] += 1
            unreadable.append(str(path))
            continue
        status = rec.get("status", "done")
        if status != "done":
            excluded[f"status {status}"] += 1
            continue
        row = {k: v for k, v in rec.items() if not isinstance(v, (dict, list))}
        row["loss"] = rec.get("val_loss")
        row["examples"] = rec.get("examples_seen")
        config, stem = rec.get("config"), rec.get("stem")
        if isinstance(config, dict) and config.get("schedule"):
            row["schedule"] = config["schedule"]  # a WSD branch and a cosine run are different cells
        if isinstance(stem, dict) and stem.get("step") is not None:
            row["branch_step"] = stem["step"]  # a WSD cooldown branch: the stem step it started from
        row["run_dir"] = str(path.parent)
        row["source"], row["input"] = str(path), "study"
        rows.append(row)
    return rows


def _csv_rows(path: Path, excluded: collections.Counter) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            rows = []
            for raw in reader:
                where = f"{path} line {reader.line_num}"
                if None in raw:
                    raise UserError(f"{where}: {len(fields) + len(raw[None])} fields, the header has {len(fields)}")
                row = {_ALIASES.get(k.strip(), k.strip()): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
                if row.get("status", "done") not in ("done", ""):
                    excluded[f"status {row['status']}"] += 1
                    continue
                row["source"], row["input"] = where, "csv"
                rows.append(row)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text CSV file (undecodable byte at offset {e.start})") from None
    except csv.Error as e:
        raise UserError(f"{path} line {reader.line_num}: not a readable CSV row ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if "loss" not in {_ALIASES.get(f, f) for f in fields}:
        raise UserError(f"{path}: CSV has no 'loss' column (columns: {', '.join(fields) or 'none'})")
    return rows


def _number(v) -> float | None:
    """float(v), nan for a missing value, None for text that is not a number."""
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return float("nan")
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _check_csv_values(name: str, vals: list, rows: list[dict]) -> None:
    """Text in a numeric CSV column, or a non-positive value of a positive one: error naming file and line."""
    for v, r in zip(vals, rows):
        if r["input"] != "csv":
            continue
        x = _number(v)
        if x is None:
            raise UserError(f"{r['source']}: column {name!r} holds {v!r}, not a number")
        must = name == "loss" or name == "compute" or name in POSITIVE
        if name in ("loss", "compute") and not np.isfinite(x):
            what = "missing" if v in (None, "") else f"{v!r}"
            raise UserError(f"{r['source']}: {name} is {what}; a finite positive number is needed "
                            "(mark failed runs with a 'status' column)")
        if must and np.isfinite(x) and x <= 0:
            raise UserError(f"{r['source']}: {name} is {v!r}; it must be positive")


def load(paths: list[str | Path]) -> Table:
    """Read study directories and CSV files into one table."""
    excluded: collections.Counter = collections.Counter()
    unreadable: list[str] = []
    rows: list[dict] = []
    kinds = set()
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or directory")
        if p.is_dir():
            found = _study_rows(p, excluded, unreadable)
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
            continue
        nums = [_number(v) for v in vals]
        if any(x is not None and np.isfinite(x) for x in nums) or all(v in (None, "") for v in vals):
            _check_csv_values(name, vals, rows)
            cols[name] = np.array([np.nan if x is None else x for x in nums])
        else:
            cols[name] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
    if "csv" in kinds and "loss" in cols and cols["loss"].dtype == object:
        _check_csv_values("loss", [r.get("loss") for r in rows], rows)
    cols.setdefault("loss", np.array([]))
    for name in ("source", "input"):
        cols.setdefault(name, np.array([], dtype=object))
    if "unique_examples" in cols and "examples" in cols and cols["unique_examples"].dtype != object:
        more = cols["unique_examples"] > cols["examples"]  # nan compares False
        for i in np.flatnonzero(more):
            if rows[i]["input"] == "csv":
                raise UserError(f"{rows[i]['source']}: unique_examples ({rows[i].get('unique_examples')}) is larger "
                                f"than examples ({rows[i].get('examples')}): unique examples are among those seen")
    table = Table(cols, excluded, kinds, unreadable=unreadable)
    bad = ~(np.isfinite(table.columns["loss"]) & (table.columns["loss"] > 0))
    if bad.any():
        excluded["non-finite or non-positive loss"] += int(bad.sum())
        table = table.subset(~bad)
    if len(table) == 0:
        why = ", ".join(f"{v} {k}" for k, v in sorted(excluded.items())) or "no runs found"
        first = f"; e.g. {unreadable[0]} is not a readable JSON record" if unreadable else ""
        raise UserError(f"0 usable run(s) ({why}{first}); at least 3 are needed to fit a law")
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
    t = dataclasses.replace(table, columns=cols)
    bad = ~(np.isfinite(col) & (col > 0))
    csv_bad = bad & t.from_csv()
    if csv_bad.any():
        i = int(np.flatnonzero(csv_bad)[0])
        v = col[i]
        what = "missing" if np.isnan(v) else f"{v:g}"
        raise UserError(f"{t.columns['source'][i]}: {x} is {what}; the x column must be a finite positive number")
    if bad.any():
        t.excluded[f"missing or non-positive {x}"] += int(bad.sum())
        t = t.subset(~bad)
    return t, x


def best_per_cell(table: Table) -> Table:
    """One point per cell: seeds averaged, the best lr kept (see analysis.cells)."""
    from scaling.analysis import cells

    return cells.collapse(table)
