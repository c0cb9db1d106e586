"""WSD stems and cooldown branches in the trainer: a branch from a stem's checkpoint
is the straight WSD run of its budget; its record; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli

ENV = {"SCALING_RESTART_AFTER_COMPILE": "off"}
WARMUP = "4"


def _train(workdir: Path, steps: int, schedule: str, *extra: str) -> dict:
    r = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64",
                "--steps", str(steps), "--schedule", schedule, "--warmup-steps", WARMUP, "--log-every", "1",
                "--checkpoint-every", "8", "--workdir", str(workdir), "--quiet", *extra, env=ENV)
    assert r.returncode == 0, r.stderr
    return json.loads((workdir / "result.json").read_text())


def _losses(workdir: Path) -> dict[int, float]:
    lines = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {ln["step"]: ln["train_loss"] for ln in lines if "train_loss" in ln}


def test_branches_from_a_segmented_stem_equal_straight_wsd_runs(tmp_path):
    """Stem 0 -> 16 -> 32 steps at constant lr; branches of 20 and 40 steps cool down from
    16 and 32 (20% of each). Each equals a WSD run of its length trained from scratch."""
    seg1 = _train(tmp_path / "stem16", 16, "constant")
    seg2 = _train(tmp_path / "stem32", 32, "constant", "--init-from", str(tmp_path / "stem16"))
    b20 = _train(tmp_path / "b20", 20, "wsd", "--init-from", str(tmp_path / "stem16"))
    b40 = _train(tmp_path / "b40", 40, "wsd", "--init-from", str(tmp_path / "stem32"))
    for branch, steps, start in ((b20, 20, 16), (b40, 40, 32)):
        straight = _train(tmp_path / f"straight{steps}", steps, "wsd")
        got, want = _losses(tmp_path / f"b{steps}"), _losses(tmp_path / f"straight{steps}")
        assert sorted(got) == list(range(start + 1, steps + 1))  # the branch trained its cooldown only
        for s in got:
            assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-6), s
        assert branch["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)
        assert branch["val_accuracy"] == straight["val_accuracy"]
        # The record reads as the standalone run (stem included) and says what the branch spent.
        assert branch["status"] == "done" and branch["steps"] == steps and branch["examples_seen"] == steps * 64
        assert branch["train_flops"] == straight["train_flops"] == branch["standalone_train_flops"]
        assert branch["study_train_flops"] == branch["flops_per_example"] * (steps - start) * 64
        assert branch["stem"]["step"] == start and branch["stem"]["root"] == str(tmp_path / "stem16")
        assert 0 < branch["study_accelerator_hours"] < branch["accelerator_hours"]
        assert branch["accelerator_hours"] == pytest.approx(branch["study_accelerator_hours"]
                                                            + branch["stem"]["accelerator_hours"])
    # The stem is charged once: each segment's own spend plus the branches' add up to the study's.
    assert seg1["status"] == seg2["status"] == "stem"
    assert seg2["stem"]["accelerator_hours"] == pytest.approx(seg1["accelerator_hours"])
    assert b40["stem"]["accelerator_hours"] == pytest.approx(seg1["study_accelerator_hours"]
                                                             + seg2["study_accelerator_hours"])
    # Re-running a finished branch trains nothing and returns the same record.
    again = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64", "--steps", "40",
                    "--schedule", "wsd", "--warmup-steps", WARMUP, "--log-every", "1", "--checkpoint-every", "8",
                    "--init-from", str(tmp_path / "stem32"), "--workdir", str(tmp_path / "b40"), "--json", env=ENV)
    assert again.returncode == 0 and json.loads(again.stdout) == b40


def _refused(tmp_path: Path, *args: str) -> str:
    work = tmp_path / "refused"
    r = run_cli("scaling.train", "--model", "cnn-xs", "--data", "synthetic", "--batch-size", "64", "--workdir",
                str(work), "--quiet", *args, env=ENV)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not work.exists()  # nothing written
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--schedule", "step"], "invalid choice: 'step'"),
    (["--schedule", "wsd", "--cooldown-fraction", "0"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "1.5"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "-0.2"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--schedule", "wsd", "--cooldown-fraction", "nan"], "--cooldown-fraction must be a number in (0, 1]"),
    (["--cooldown-shape", "cubic"], "invalid choice: 'cubic'"),
    (["--warmup-steps", "-1"], "--warmup-steps must be a non-negative integer"),
])
def test_bad_schedule_input_is_one_line_exit_2(tmp_path, args, message):
    assert message in _refused(tmp_path, "--steps", "10", *args)


def test_config_file_with_unknown_schedule_is_refused(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"schedule": "wsd-ish", "steps": 10}))
    assert "--schedule must be cosine, wsd or constant, got 'wsd-ish'" in _refused(tmp_path, "--config", str(cfg))


def test_branch_that_does_not_fit_its_stem_is_refused(tmp_path):
    """A branch budget longer (or shorter) than the stem, another lr, or no stem: one line, nothing written."""
    _train(tmp_path / "stem", 16, "constant")
    stem = str(tmp_path / "stem")
    common = ("--schedule", "wsd", "--warmup-steps", WARMUP, "--init-from", stem)
    assert "branch budget is longer than the stem" in _refused(tmp_path, "--steps", "40", *common)
    assert "ran past this branch's cooldown start" in _refused(tmp_path, "--steps", "10", *common)
    assert "different run (differs in lr)" in _refused(tmp_path, "--steps", "20", "--lr", "0.5", *common)
    assert "warmup of 1 steps differs from the stem's (4)" in _refused(
        tmp_path, "--steps", "20", "--schedule", "wsd", "--warmup-steps", "1", "--init-from", stem)
    assert "no finished run there" in _refused(tmp_path, "--steps", "20", *common[:-1], str(tmp_path / "nothing"))
    assert "--schedule wsd (a cooldown branch) or constant" in _refused(
        tmp_path, "--steps", "20", "--warmup-steps", WARMUP, "--init-from", stem)


@pytest.mark.slow
def test_validation_script_is_resumable_and_prints_the_table(tmp_path):
    """experiments/wsd_vs_cosine.py on tiny settings: cosine runs, a stem and its branches,
    the table; re-running trains nothing, a second cooldown shape reuses the stem."""
    script = [sys.executable, str(REPO / "experiments" / "wsd_vs_cosine.py"), "--workdir", str(tmp_path),
              "--models", "cnn-xs", "--epochs", "1,2", "--epoch-steps", "10", "--data", "synthetic",
              "--batch-size", "64"]
    env = {**os.environ, **ENV}
    first = subprocess.run(script + ["--cooldowns", "0.2:1-sqrt"], capture_output=True, text=True, env=env,
                           timeout=900)
    assert first.returncode == 0, first.stderr
    trained = [ln.split()[1] for ln in first.stderr.splitlines() if ln.startswith("train ")]
    assert trained == ["cnn-xs/cosine-e1", "cnn-xs/cosine-e2", "cnn-xs/stem-8", "cnn-xs/stem-16",
                       "cnn-xs/wsd-e1-c0.2-1-sqrt", "cnn-xs/wsd-e2-c0.2-1-sqrt"]
    rows = [ln for ln in first.stdout.splitlines() if ln.startswith("cnn-xs ")]
    assert len(rows) == 2 and "0.2:1-sqrt val" in first.stdout
    out = json.loads((tmp_path / "wsd_vs_cosine.json").read_text())
    for row in out["rows"]:
        w = row["wsd"]["0.2:1-sqrt"]
        assert w["branch_step"] == {1: 8, 2: 16}[row["epochs"]]
        assert w["relative_val_loss_diff"] == pytest.approx(w["val_loss"] / row["cosine_val_loss"] - 1)
        assert 0 < w["study_hours"] < w["standalone_hours"]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cnn-xs/*/result.json")}
    again = subprocess.run(script + ["--cooldowns", "0.2:1-sqrt,0.2:linear", "--json"], capture_output=True,
                           text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    # Only the two linear branches are new: same branch points, so the same stem.
    assert sorted(p.name for p in (tmp_path / "cnn-xs").iterdir() if p.is_dir()) == sorted(
        ["cosine-e1", "cosine-e2", "stem-8", "stem-16", "wsd-e1-c0.2-1-sqrt", "wsd-e2-c0.2-1-sqrt",
         "wsd-e1-c0.2-linear", "wsd-e2-c0.2-linear"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained or rewritten again
    rows2 = json.loads(again.stdout)["rows"]
    assert [r["wsd"]["0.2:1-sqrt"] for r in rows2] == [r["wsd"]["0.2:1-sqrt"] for r in out["rows"]]
    bad = subprocess.run(script + ["--cooldowns", "1.5:linear"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--cooldowns" in bad.stderr
