"""Sweep state: atomic files, per-trial flocks, and spend recomputed from records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scaling.sweep import ledger, state

HOLDER = """
import sys, time
from scaling.sweep.state import TrialLock
lock = TrialLock(sys.argv[1])
assert lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_atomic_json_and_torn_jsonl_line(tmp_path):
    p = tmp_path / "a" / "x.json"
    state.write_json(p, {"v": 1})
    state.write_json(p, {"v": 2})
    assert state.read_json(p) == {"v": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]  # no temporary files left behind
    j = tmp_path / "s.jsonl"
    state.append_jsonl(j, {"event": "start", "seg": "a"})
    with open(j, "a") as f:
        f.write('{"event": "end", "se')  # a writer killed mid-line
    assert state.read_jsonl(j) == [{"event": "start", "seg": "a"}]


def test_trial_lock_is_exclusive_and_reclaimed_after_sigkill(tmp_path):
    path = tmp_path / "t.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = state.TrialLock(path)
        assert mine.is_held_elsewhere()
        assert not mine.acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert not mine.is_held_elsewhere()
        assert mine.acquire()  # the kernel dropped the dead holder's lock: no stale-lock cleanup needed
        other = state.TrialLock(path)
        assert not other.acquire()
        mine.release()
        assert other.acquire()
        other.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def fake_trial(paths: state.Paths, tid: str, acct: float | None, result: float | None, segments: list[dict]):
    state.write_json(paths.trial_json(tid), {"id": tid, "model": "cnn-xs", "epochs": 1.0, "lr": 0.1})
    if acct is not None:
        state.write_json(paths.run_dir(tid) / "accounting.json", {"accelerator_hours": acct})
    if result is not None:
        state.write_json(paths.run_dir(tid) / "result.json",
                         {"status": "done", "accelerator_hours": result, "lr": 0.1, "val_loss": 1.0})
    for s in segments:
        state.append_jsonl(paths.segments(tid), s)


def test_spend_is_recomputed_from_records_without_double_counting(tmp_path):
    paths = state.Paths(tmp_path)
    state.write_json(paths.calibration, {"runs": [{"wall_seconds": 36.0, "devices": 1},
                                                  {"wall_seconds": 18.0, "devices": 2}]})
    start = lambda seg: {"event": "start", "seg": seg, "est_overhead_hours": 0.001}  # noqa: E731
    end = lambda seg: {"event": "end", "seg": seg, "overhead_hours": 0.0005, "rc": 0}  # noqa: E731
    # Finished after a killed first segment: result.json holds the total of both segments.
    fake_trial(paths, "a", acct=0.02, result=0.02, segments=[start("1"), start("2"), end("2")])
    # Killed mid-run: only its accounting so far, and the start-up estimate of the dead segment.
    fake_trial(paths, "b", acct=0.005, result=None, segments=[start("3")])
    state.write_json(paths.sessions / "s1.json", {"overhead_seconds": 3.6, "devices": 1})
    snap = ledger.snapshot(paths)
    assert snap.calibration_hours == pytest.approx((36 + 36) / 3600)
    assert snap.trials["a"].hours == pytest.approx(0.02 + 0.001 + 0.0005)
    assert snap.trials["b"].hours == pytest.approx(0.005 + 0.001)
    assert snap.trials["a"].finished and not snap.trials["b"].finished
    assert snap.total == pytest.approx(0.02 + 0.0215 + 0.006 + 0.001)
    assert ledger.snapshot(paths).total == pytest.approx(snap.total)  # reading again charges nothing more


def test_a_segment_killed_in_start_up_is_charged_no_more_than_it_lived(tmp_path):
    """The start-up estimate of a killed segment is capped by what is known of its life:
    the trainer's clock start where it got that far, else its session's last heartbeat."""
    paths = state.Paths(tmp_path)
    t = 1_000_000.0
    est = 5.0 / 3600  # the calibrated start-up: 5 s
    seg = lambda name, **kw: {"event": "start", "seg": name, "time": t, "est_overhead_hours": est,  # noqa: E731
                              "devices": 1, **kw}
    # Killed 2 s into its start-up: the session that launched it was last alive 1.5 s after the start.
    state.write_json(paths.sessions / "s1.json", {"overhead_seconds": 0.0, "devices": 1, "alive_at": t + 1.5})
    fake_trial(paths, "early", acct=None, result=None, segments=[seg("1", session="s1.json")])
    # Its trainer's clock started 3 s after the launch, then it was killed: 3 s of start-up, measured.
    fake_trial(paths, "late", acct=None, result=None, segments=[seg("2", session="s1.json")])
    state.write_json(paths.run_dir("late") / "accounting.json",
                     {"accelerator_hours": 10 / 3600, "segments": [{"wall": 10.0, "started_at": t + 3.0}]})
    # No heartbeat and no clock known: the estimate, as before.
    fake_trial(paths, "unknown", acct=None, result=None, segments=[seg("3")])
    snap = ledger.snapshot(paths)
    assert snap.trials["early"].overhead_hours == pytest.approx(1.5 / 3600)
    assert snap.trials["late"].overhead_hours == pytest.approx(3.0 / 3600)
    assert snap.trials["late"].trainer_hours == pytest.approx(10 / 3600)
    assert snap.trials["unknown"].overhead_hours == pytest.approx(est)


def test_session_charges_only_its_own_time(tmp_path):
    paths = state.Paths(tmp_path)
    s = ledger.Session(paths)
    s.overhead = 0.0
    s.tick(busy=True)
    time.sleep(0.2)  # a child runs: not sweep overhead
    s.tick(busy=False)
    time.sleep(0.1)  # bookkeeping: overhead
    s.tick(busy=False)
    s.flush()
    rec = json.loads(s.path.read_text())
    assert 0.09 <= rec["overhead_seconds"] < 0.19
