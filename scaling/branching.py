"""WSD stems and cooldown branches: runs that start from another run's checkpoint.

A warmup-stable-decay study trains one *stem* per (model, lr, seed) at a
constant learning rate and branches a short cooldown off it at every epoch
budget, instead of one cosine run per budget (``scaling.optim`` has the
schedules). The stem is a chain of *segments*: runs of their own
(``schedule="constant"``, ``steps`` = where the next budget's cooldown
starts, ``init_from`` = the previous segment). A *branch* (``schedule="wsd"``,
``epochs`` = its budget, ``init_from`` = the segment ending at its cooldown
start) cools down from there to 0. Segments rather than one long stem run:
a higher budget extends the stem by one more segment without changing any
run's config, a branch can start as soon as its segment ends, and each piece
resumes, locks and is charged like any other run.

A run with ``init_from`` starts from a copy (hard links) of that run's last
checkpoint and its accounting starts with that run's segments, marked
``inherited``. So its ``result.json`` reads as the standalone run of its
budget would: ``steps``, ``train_flops`` and ``accelerator_hours`` count from
step 0, the stem included (the x-axis of the laws, comparable with cosine
studies); ``study_accelerator_hours`` and ``study_train_flops`` are what this
run itself spent (the stem is charged once, on the stem); ``stem`` says which
run it came from, at which step. A finished segment's status is ``stem``: a
constant-lr point is not a result of its budget, so the fits skip it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from scaling.config import TrainConfig, check_length
from scaling.errors import UserError
from scaling.jsonio import read_json, read_json_if_exists, write_json
from scaling.schedules import run_cooldown_start, warmup_steps

# Fields a branch or segment may set differently from its stem; every other
# field (model, data, batch, lr, optimizer, seed, ...) must be the stem's.
FREE_FIELDS = {"epochs", "steps", "schedule", "cooldown_fraction", "cooldown_shape", "init_from",
               "warmup_fraction", "warmup_steps", "eval_every", "checkpoint_every", "log_every"}


def _finished_stem(stem_dir: Path) -> dict:
    result = read_json_if_exists(stem_dir / "result.json")
    if result is None:
        raise UserError(f"--init-from {stem_dir}: no finished run there (no result.json); train the stem first")
    cfg = result.get("config") or {}
    if cfg.get("schedule") != "constant" or result.get("status") not in ("stem", "done"):
        raise UserError(f"--init-from {stem_dir} is not a finished WSD stem (status {result.get('status')}, "
                        f"schedule {cfg.get('schedule')}); a branch starts from a --schedule constant run")
    return result


def start_step(stem_dir: str | os.PathLike) -> int:
    """The step a run started from ``stem_dir`` begins at: the stem's last step."""
    return int(_finished_stem(Path(stem_dir))["steps"])


def check_stem(cfg) -> int:
    """Check that a resolved config with ``init_from`` continues its stem; the step it
    starts at. One-line UserErrors: no finished stem, a different run (model, lr, data,
    ...), a warmup that differs, a branch budget longer (or shorter) than its stem."""
    stem_dir = Path(cfg.init_from)
    stem = _finished_stem(stem_dir)
    mine, theirs = json.loads(json.dumps(cfg.to_json())), stem["config"]
    differ = sorted(k for k in set(mine) | set(theirs) if k not in FREE_FIELDS and mine.get(k) != theirs.get(k))
    if differ:
        raise UserError(f"--init-from {stem_dir} is a different run (differs in {', '.join(differ[:4])})")
    if cfg.schedule == "cosine":
        raise UserError("--init-from needs --schedule wsd (a cooldown branch) or constant (a stem segment)")
    end = int(stem["steps"])
    total = check_length(cfg, int(stem["train_size"]), 1)
    ours = warmup_steps(cfg, total)
    stem_cfg = TrainConfig.from_json(theirs)
    stems = warmup_steps(stem_cfg, int(stem.get("planned_steps", end)))
    if ours != stems:
        raise UserError(f"warmup of {ours} steps differs from the stem's ({stems}); set --warmup-steps {stems}")
    if cfg.schedule == "wsd":
        start = run_cooldown_start(cfg, total)
        if start > end:
            raise UserError(f"the branch budget is longer than the stem: its cooldown starts at step {start}, "
                            f"the stem {stem_dir} ends at step {end}; extend the stem first")
        if start < end:
            raise UserError(f"the stem {stem_dir} ran past this branch's cooldown start (step {start} < {end}); "
                            "branch from the stem segment that ends there")
    elif total <= end:
        raise UserError(f"a stem segment must end after the run it continues ({total} <= {end} steps)")
    if not (stem_dir / "checkpoints" / str(end)).is_dir():
        raise UserError(f"the stem {stem_dir} has no checkpoint at its last step {end}")
    return end


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _step_dirs(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def adopt(cfg, workdir: Path) -> None:
    """Before a run with ``init_from`` trains for the first time: seed its accounting
    with the stem's segments (``inherited``) and its checkpoints with the stem's last.
    Each part is skipped once done and written atomically, so a kill anywhere is safe."""
    stem_dir, workdir = Path(cfg.init_from), Path(workdir)
    step = start_step(stem_dir)
    acct = workdir / "accounting.json"
    if not acct.exists():
        theirs = read_json_if_exists(stem_dir / "accounting.json") or {}
        segs = [dict(s, inherited=True) for s in theirs.get("segments", [])]
        write_json(acct, {"segments": segs, "accelerator_hours": _hours(segs)})
    ckpts = workdir / "checkpoints"
    if not _step_dirs(ckpts):
        ckpts.mkdir(parents=True, exist_ok=True)
        tmp = ckpts / f".adopting-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(stem_dir / "checkpoints" / str(step), tmp, copy_function=_link_or_copy)
        os.replace(tmp, ckpts / str(step))


def _hours(segments: list[dict]) -> float:
    return sum(s.get("wall", 0.0) * s.get("devices", 1) for s in segments) / 3600


def own_hours(run_dir: str | os.PathLike) -> float | None:
    """Accelerator-hours the run in ``run_dir`` spent itself (inherited stem time
    excluded), from its accounting; None before it has any."""
    path = Path(run_dir) / "accounting.json"
    rec = read_json_if_exists(path)
    if not rec or "segments" not in rec:
        return None
    return _hours([s for s in rec["segments"] if not s.get("inherited")])


def annotate(workdir: str | os.PathLike, result: dict | None = None) -> dict:
    """Add the stem/branch fields to a finished run's ``result.json`` (idempotent)."""
    workdir = Path(workdir)
    result = read_json(workdir / "result.json") if result is None else result
    cfg = result.get("config") or {}
    if (result.get("status") == "failed" or "study_accelerator_hours" in result
            or (cfg.get("schedule") != "constant" and not cfg.get("init_from"))):
        return result
    out = dict(result)
    own = own_hours(workdir)
    out["study_accelerator_hours"] = own if own is not None else result.get("accelerator_hours")
    out["standalone_accelerator_hours"] = result.get("accelerator_hours")
    start = 0
    if cfg.get("init_from"):
        stem_dir = Path(cfg["init_from"])
        start = start_step(stem_dir)
        root = stem_dir
        while (root_cfg := (read_json_if_exists(root / "config.json") or {})).get(
                "init_from"):
            root = Path(root_cfg["init_from"])
        out["stem"] = dict(run=str(stem_dir), root=str(root), step=start,
                           accelerator_hours=(result.get("accelerator_hours") or 0.0) - out["study_accelerator_hours"])
    fpe, batch = result.get("flops_per_example"), result.get("batch_size")
    if fpe is not None and batch is not None and result.get("steps") is not None:
        out["study_train_flops"] = fpe * max(result["steps"] - start, 0) * batch
        out["standalone_train_flops"] = result.get("train_flops")
    if cfg.get("schedule") == "constant" and result.get("status") == "done":
        out["status"] = "stem"
    write_json(workdir / "result.json", out)
    return out


def run(cfg, workdir: str | os.PathLike, train: Callable[[], dict]) -> dict:
    """The trainer's hook: ``train()`` (the run itself), started from the stem's
    checkpoint when ``cfg.init_from`` is set, its record annotated for stems and branches."""
    if cfg.init_from is None and cfg.schedule != "constant":
        return train()
    if cfg.init_from is not None:
        adopt(cfg, Path(workdir))
    return annotate(workdir, train())
