"""What the study has spent, recomputed from its records every time.

Total spend = calibration (worker wall-clock x devices)
            + per trial: the trainer's accelerator-hours (its accounting.json: every
              segment, killed ones up to their last flush; a WSD branch's or stem
              segment's own segments only, not those it inherited from its stem,
              which the stem's trials charge; else result.json)
              + the wrapper overhead of each of its processes (start-up before
              the trainer's clock: measured at the segment's end, or the
              calibrated estimate for a segment that was killed with the sweep)
            + each sweep invocation's own time outside trials (sessions/*.json).

Nothing is accumulated incrementally, so a re-run never charges twice: a
finished trial's hours are read from the same result.json however many times
the sweep runs.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from scaling.sweep import calibrate, state
from scaling.sweep.state import Paths

FINISHED = ("done", "diverged", "failed", "stem")  # "stem": a finished WSD stem segment


@dataclasses.dataclass
class TrialRecord:
    id: str
    spec: dict  # trial.json
    status: str  # done | diverged | failed | started
    trainer_hours: float
    overhead_hours: float
    result: dict | None
    segments: int
    crashes: int

    @property
    def hours(self) -> float:
        return self.trainer_hours + self.overhead_hours

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def trainer_hours(paths: Paths, trial_id: str) -> float:
    from scaling.branching import own_hours

    run = paths.run_dir(trial_id)
    own = own_hours(run)  # flushed before result.json is written, so never behind it
    if own is not None:
        return own
    for name in ("result.json", "accounting.json"):
        rec = state.read_json(run / name)
        if rec and rec.get("accelerator_hours") is not None:
            return float(rec.get("study_accelerator_hours", rec["accelerator_hours"]))
    return 0.0


def trial_record(paths: Paths, trial_id: str) -> TrialRecord:
    spec = state.read_json(paths.trial_json(trial_id)) or {}
    result = state.read_json(paths.run_dir(trial_id) / "result.json")
    segs = state.read_jsonl(paths.segments(trial_id))
    ends = {s["seg"]: s for s in segs if s.get("event") == "end"}
    overhead = 0.0
    crashes = 0
    starts = sorted((s for s in segs if s.get("event") == "start"), key=lambda s: s.get("time", 0.0))
    for n, s in enumerate(starts):
        end = ends.get(s["seg"])
        if end:
            overhead += end["overhead_hours"]
        else:  # killed with its sweep
            overhead += _killed_startup_hours(paths, trial_id, s, starts[n + 1] if n + 1 < len(starts) else None)
        if end and end.get("rc") not in (0, None) and not end.get("stopped"):
            crashes += 1
    gave_up = state.read_json(paths.trial_dir(trial_id) / "failed.json")
    if result is not None:
        status = result.get("status", "done")
        if status == "done" and (result.get("config") or {}).get("schedule") == "constant":
            status = "stem"  # a stem segment killed between its result and its annotation (scaling.branching)
    elif gave_up is not None:
        status, result = "failed", {"status": "failed", "lr": spec.get("lr"), "val_loss": None, **gave_up}
    else:
        status = "started"
    return TrialRecord(trial_id, spec, status, trainer_hours(paths, trial_id), overhead, result,
                       sum(1 for s in segs if s.get("event") == "start"), crashes)


def _killed_startup_hours(paths: Paths, trial_id: str, start: dict, next_start: dict | None) -> float:
    """Start-up time of a segment killed with its sweep (no end record).

    Measured where the trainer's clock started (its accounting segment's
    ``started_at``); otherwise the calibrated estimate, but never more than the
    segment can have lived: until the trial's next start, or the last heartbeat
    of the sweep session that launched it (so a kill during start-up is not
    charged a full start-up it never spent).
    """
    est = start.get("est_overhead_hours", 0.0)
    t = start.get("time")
    if t is None:
        return est
    acct = state.read_json(paths.run_dir(trial_id) / "accounting.json") or {}
    clocks = [seg["started_at"] for seg in acct.get("segments", [])
              if not seg.get("inherited") and seg.get("started_at", -1.0) >= t]
    if clocks:
        return min(est, (min(clocks) - t) * start.get("devices", 1) / 3600.0)
    bounds = []
    if next_start and "time" in next_start:
        bounds.append(next_start["time"])
    if start.get("session"):
        alive = (state.read_json(paths.sessions / start["session"]) or {}).get("alive_at")
        if alive is not None:
            bounds.append(alive)
    if bounds:
        est = min(est, max(min(bounds) - t, 0.0) * start.get("devices", 1) / 3600.0)
    return est


@dataclasses.dataclass
class Snapshot:
    calibration_hours: float
    session_hours: float
    trials: dict[str, TrialRecord]

    @property
    def trial_hours(self) -> float:
        return sum(t.hours for t in self.trials.values())

    @property
    def total(self) -> float:
        return self.calibration_hours + self.session_hours + self.trial_hours

    def results(self) -> dict[str, dict]:
        """Finished trials' results keyed by id (what lr rules resolve against)."""
        return {i: t.result for i, t in self.trials.items() if t.finished}


def session_hours(paths: Paths) -> float:
    total = 0.0
    if paths.sessions.exists():
        for p in paths.sessions.glob("*.json"):
            rec = state.read_json(p)
            if rec:
                total += rec.get("overhead_seconds", 0.0) * rec.get("devices", 1) / 3600.0
    return total


def snapshot(paths: Paths) -> Snapshot:
    return Snapshot(
        calibrate.charged_hours(calibrate.load(paths.calibration)),
        session_hours(paths),
        {i: trial_record(paths, i) for i in paths.trial_ids()},
    )


def _process_age() -> float:
    """Seconds since this process started (Linux /proc), else 0."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


class Session:
    """This sweep invocation's own time: wall-clock minus time spent inside its
    children (trials, calibration) and minus time idly waiting on trials other
    sweep processes run. Charged as one device."""

    HEARTBEAT = 2.0

    def __init__(self, paths: Paths):
        self.path = paths.sessions / f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}.json"
        self.overhead = _process_age()  # interpreter start-up + imports before we got here
        self.last = time.monotonic()
        self.busy = False
        self.last_write = 0.0

    def tick(self, busy: bool) -> None:
        """Charge the time since the last tick as overhead unless it was busy
        (children running, or waiting on another sweep's trials); ``busy``
        says what the time from now on until the next tick is."""
        now = time.monotonic()
        if not self.busy:
            self.overhead += now - self.last
        self.last, self.busy = now, busy
        if now - self.last_write > self.HEARTBEAT:
            self.flush()

    def flush(self) -> None:
        state.write_json(self.path, {"overhead_seconds": self.overhead, "devices": 1, "pid": os.getpid(),
                                     "alive_at": time.time()})
        self.last_write = time.monotonic()

