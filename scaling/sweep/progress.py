"""Live progress of a sweep and its final summary table.

On a terminal: one tqdm bar (trials done / total) whose postfix shows
accelerator-hours spent / budget and the ETA. Otherwise (logs, CI): one plain
line per event, so a log file reads as a history.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def fmt_hours(h: float) -> str:
    return f"{h:.4f}h" if h < 1 else f"{h:.2f}h"


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    def __init__(self, budget: float, stream: TextIO | None = None, enabled: bool = True):
        stream = stream or sys.stderr  # looked up now, not when this module was imported
        self.budget, self.stream, self.enabled = budget, stream, enabled
        self.bar = None
        self.t0 = time.monotonic()
        if enabled and stream.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=0, unit="trial", file=stream, dynamic_ncols=True, desc="sweep")
            except ImportError:
                pass

    def log(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def update(self, done: int, total: int, spent: float, eta_s: float, running: list[str]) -> str:
        line = (
            f"{done}/{total} trials | {fmt_hours(spent)} of {fmt_hours(self.budget)} spent "
            f"({100 * spent / self.budget:.0f}%), {fmt_hours(max(self.budget - spent, 0))} left | "
            f"ETA {fmt_duration(eta_s)}"
            + (f" | running {', '.join(running)}" if running else "")
        )
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(line.split(" | ", 1)[1], refresh=True)
        return line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit_line(family: str, fit: dict) -> str:
    """One family's current allocation fit (adaptive placement): exponents and interval widths."""
    lo, hi = fit["n_star_ci95"]
    elo, ehi = fit["epochs_star_ci95"]
    return (f"fit    {family}: N* ~ C^{fit['n_star_exponent']:.3g} [{lo:.3g}, {hi:.3g}] (width {hi - lo:.3g}), "
            f"epochs* ~ C^{fit['epochs_star_exponent']:.3g} [{elo:.3g}, {ehi:.3g}] (width {ehi - elo:.3g})")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table; ``columns``: (key, header, format spec)."""

    def cell(v: Any, spec: str) -> str:
        if v is None:
            return "-"
        try:
            return format(v, spec)
        except (TypeError, ValueError):
            return str(v)

    body = [[cell(r.get(k), spec) for k, _, spec in columns] for r in rows]
    heads = [h for _, h, _ in columns]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))) for b in body]
    return "\n".join(lines)


SUMMARY_COLUMNS = [
    ("id", "trial", "s"),
    ("status", "status", "s"),
    ("lr", "lr", ".4g"),
    ("val_loss", "val_loss", ".4f"),
    ("val_accuracy", "val_acc", ".3f"),
    ("test_accuracy", "test_acc", ".3f"),
    ("train_flops", "train FLOPs", ".2e"),
    ("predicted_hours", "pred h", ".5f"),
    ("hours", "acc-h", ".5f"),
]

PLAN_COLUMNS = [
    ("id", "trial", "s"),
    ("role", "role", "s"),
    ("lr", "lr", "s"),
    ("train_flops", "train FLOPs", ".2e"),
    ("predicted_hours", "pred h", ".5f"),
    ("state", "state", "s"),
]
