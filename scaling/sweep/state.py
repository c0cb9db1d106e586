"""The study's persisted state: atomic files, per-trial locks, study identity.

Layout of a study workdir::

    study.json                 identity (config name + hash) and the resolved config
    calibration.json           measured per-model costs (see calibrate.py)
    plan.json                  the latest plan (rewritten on every re-plan)
    sessions/<id>.json         one sweep invocation's own overhead (heartbeat)
    trials/<id>/trial.json     what the trial is (model, epochs, lr, seed, config)
    trials/<id>/segments.jsonl one line per start / end of a training process
    trials/<id>/run/           the trainer's workdir (config, checkpoints, result.json)
    trials/<id>.lock           flock held while a process runs the trial

Every JSON file is written to a temporary file and ``os.replace``d, so a
SIGKILL leaves either the old or the new version. The per-trial lock is an
``fcntl.flock``: the kernel drops it when its holder dies, so a lock left by a
killed sweep is reclaimed automatically. The lock fd is also handed to the
training subprocess, so the trial stays locked until that process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

from scaling.errors import UserError
from scaling.jsonio import (  # noqa: F401  (the sweep reads a missing file as None)
    append_jsonl, atomic_write_bytes, read_json_if_exists as read_json, read_jsonl, write_json)


class TrialLock:
    """A non-blocking exclusive flock on ``trials/<id>.lock``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock right now."""
        if self.fd is not None:
            return False
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


@contextlib.contextmanager
def study_lock(workdir: Path) -> Iterator[None]:
    """Short critical sections across sweep processes (identity check, launch decisions)."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(workdir) / "study.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# What a new study's workdir may already hold: a calibration copied from an
# earlier study on the same machine (it is keyed, so a stale one is re-measured).
SEEDABLE = {"calibration.json"}


def check_workdir(workdir: Path) -> None:
    """Refuse, before anything is written, a workdir that is not (or cannot become) this
    sweep's: a file, an unwritable place, or a folder holding anything but a study."""
    workdir = Path(workdir)
    if not str(workdir).strip():
        raise UserError("--workdir must be a directory path, got ''")
    if workdir.exists():
        if not workdir.is_dir():
            raise UserError(f"workdir {workdir} is a file, not a directory")
        if not (workdir / "study.json").exists():
            if (workdir / "config.json").exists() or (workdir / "result.json").exists():
                raise UserError(f"workdir {workdir} holds a training run, not a study; use another --workdir")
            foreign = sorted(p.name for p in workdir.iterdir() if p.name not in SEEDABLE)
            if foreign:
                raise UserError(f"workdir {workdir} is not empty and holds no study "
                                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); use another --workdir")
        target = workdir
    else:
        target = workdir.parent
        while not target.exists() and target != target.parent:
            target = target.parent
        if not target.is_dir():
            raise UserError(f"workdir {workdir} cannot be created: {target} is a file")
    try:  # a probe that leaves nothing behind (permissions alone miss read-only mounts and root)
        os.rmdir(tempfile.mkdtemp(dir=target, prefix=".scaling-probe-"))
    except OSError as e:
        raise UserError(f"workdir {workdir} is not writable ({target}: {e.strerror})") from None


def claim_workdir(workdir: Path, identity: dict, config: dict) -> bool:
    """Record the study identity in a new workdir, or check it matches. True if new."""
    workdir = Path(workdir)
    check_workdir(workdir)
    _check_identity(workdir, read_json(workdir / "study.json"), identity)  # before the lock file is made
    with study_lock(workdir):
        existing = read_json(workdir / "study.json")
        if existing is None:
            if (workdir / "trials").exists():
                raise UserError(f"workdir {workdir} has trials but no study.json; refusing to adopt it")
            write_json(workdir / "study.json", {"identity": identity, "config": config})
            return True
        _check_identity(workdir, existing, identity)
        return False


def _check_identity(workdir: Path, existing: dict | None, identity: dict) -> None:
    if existing is None:
        return
    have = existing.get("identity", {})
    if have != identity:
        raise UserError(
            f"workdir {workdir} belongs to study {have.get('name')!r} (hash {have.get('hash')}), "
            f"not {identity['name']!r} (hash {identity['hash']}); use another --workdir"
        )


class Paths:
    """Where each piece of a study lives."""

    def __init__(self, workdir: Path):
        self.root = Path(workdir)

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    def trial_dir(self, trial_id: str) -> Path:
        if "/" in trial_id or trial_id.startswith("."):
            raise ValueError(f"trial id {trial_id!r} is not a plain directory name")
        return self.root / "trials" / trial_id

    def trial_json(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / "trial.json"

    def segments(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / "segments.jsonl"

    def run_dir(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / "run"

    def lock(self, trial_id: str) -> Path:
        return self.root / "trials" / f"{trial_id}.lock"

    def trial_ids(self) -> list[str]:
        d = self.root / "trials"
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "trial.json").exists())
