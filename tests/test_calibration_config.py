"""Calibration times the step the trials train: the study's whole trial config
(overrides and model kwargs included) goes to the calibration worker, and the
lowered train step it times has the same fingerprint as the trial's."""

from __future__ import annotations

import json

from conftest import run_cli
from scaling.sweep import calibrate, study

OVERRIDES = {"label_smoothing": 0.1, "augment": False, "model_kwargs": {"pool": "avg"}}


def _fingerprint(cfg: study.StudyConfig) -> str:
    worker = calibrate.Worker(cfg)
    try:
        return worker.measure("cnn-xs")["program_fingerprint"]
    finally:
        worker.close()


def test_calibration_and_trial_compile_the_same_step(tmp_path):
    raw = {"families": ["cnn"], "ladders": {"cnn": ["cnn-xs"]}, "data_source": "synthetic", "batch_size": 32}
    cfg = study.from_raw({**raw, "train_overrides": OVERRIDES}).validate()
    calibrated = _fingerprint(cfg)

    trial = study.trial_config(cfg, "cnn-xs", steps=3, seed=1, lr=0.05)  # as the sweep's runner builds it
    (tmp_path / "trial.json").write_text(json.dumps(trial.to_json()))
    r = run_cli("scaling.train", "--config", str(tmp_path / "trial.json"), "--workdir", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["program_fingerprint"] == calibrated
    assert result["config"]["model_kwargs"] == {"pool": "avg"} and result["config"]["augment"] is False

    # The fingerprint sees the overrides: calibrating without them times another program.
    assert _fingerprint(study.from_raw(raw).validate()) != calibrated
