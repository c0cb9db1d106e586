"""Calibration times the step the trials train: the study's whole trial config
(overrides and model kwargs included) goes to the calibration worker, and the
lowered train step it times has the same fingerprint as the trial's."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from scaling.sweep import calibrate, study

OVERRIDES = {"label_smoothing": 0.1, "augment": False, "model_kwargs": {"pool": "avg"}}


def _fingerprint(cfg: study.StudyConfig) -> str:
    worker = calibrate.Worker(cfg, "cnn-xs")
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


def test_calibration_of_a_streaming_study_prices_the_slower_of_step_and_loader(cifar10_path, tmp_path):
    """Real CIFAR-10 images re-saved at varied sizes: the study's trials stream, so the
    calibration worker opens the same streaming pipeline, reports the loader's images/s,
    and the step time the planner prices is the slower of the step and the loader."""
    from test_stream import build_varied_folder

    folder = build_varied_folder(cifar10_path, tmp_path / "images")
    raw = {"families": ["cnn"], "ladders": {"cnn": ["cnn-xs"]}, "data_source": str(folder), "batch_size": 32,
           "image_size": 32, "val_size": 50}
    cfg = study.from_raw(raw).validate()
    worker = calibrate.Worker(cfg, "cnn-xs")
    try:
        assert worker.ready["data_pipeline"] == "stream" and "differ in size" in worker.ready["data_pipeline_reason"]
        m = worker.measure("cnn-xs")
    finally:
        worker.close()
    assert m["data_pipeline"] == "stream" and m["loader_images_per_second"] > 0
    loader_step = 32 / m["loader_images_per_second"]
    assert m["step_seconds"] == pytest.approx(max(m["compute_step_seconds"], loader_step), rel=1e-9)
