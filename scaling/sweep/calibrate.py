"""Calibration: measure each candidate model's costs on this machine, once.

A worker subprocess (``python -m scaling.sweep.calibrate``; a subprocess so the
sweep itself never holds an accelerator; on a multi-GPU host it sees one GPU,
like each trial) imports the trainer's modules, loads the data set, then
answers one trial config per stdin line (``study.trial_config``: the trials'
own config of that model) with ``scaling.measure.measure_config`` (compile
seconds, steady-state step seconds, eval seconds per example, FLOPs, the
train step's fingerprint). Its first line reports the process start-up
time (interpreter + imports, which the trainer's own clock never sees) and the
data-load time, the fixed overhead of every trial process.

Models are measured smallest first per family; before measuring the next
model, its cheapest trial is estimated from the previous model's measurement
scaled by the FLOP ratio, and the ladder stops there if that would take more
than ``STOP_FRACTION`` of the budget: such a model cannot be planned
usefully, so measuring it would waste budget.
Results are cached in ``calibration.json`` (rewritten after every model) and
the worker's whole wall-clock x devices is charged to the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from scaling.errors import UserError
from scaling.platform.entrypoint import entrypoint
from scaling.sweep import state
from scaling.sweep.study import StudyConfig

STOP_FRACTION = 0.3  # stop a ladder once a model's cheapest trial would exceed this share of the budget


def key(cfg: StudyConfig) -> dict:
    return dict(
        dataset=cfg.dataset,
        data_source=cfg.data_source,
        val_size=cfg.val_size,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        compute_dtype=cfg.compute_dtype,
        train_overrides=cfg.train_overrides,
    )


def load(path: Path) -> dict | None:
    return state.read_json(path)


def charged_hours(calib: dict | None) -> float:
    if not calib:
        return 0.0
    return sum(r["wall_seconds"] * r.get("devices", 1) for r in calib.get("runs", [])) / 3600.0


class Worker:
    """The calibration subprocess, driven one model at a time."""

    def __init__(self, cfg: StudyConfig, first_model: str, env: dict | None = None):
        from scaling.sweep.executors import child_preexec, one_device_env
        from scaling.sweep.study import trial_config

        self.cfg = cfg
        first = json.dumps(trial_config(cfg, first_model).to_json())
        cmd = [sys.executable, "-m", "scaling.sweep.calibrate", "--config-json", first]

        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or one_device_env(), preexec_fn=child_preexec,
        )
        self.ready = self._read()
        self.ready["startup_seconds"] = time.monotonic() - self.t0 - self.ready.pop("data_seconds_abs", 0.0)

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise UserError(f"calibration failed: {err[-1] if err else 'worker exited'}")
        msg = json.loads(line)
        if msg.get("event") == "error":
            raise UserError(f"calibration failed: {msg['message']}")
        return msg

    def measure(self, model: str) -> dict:
        """Time the trials' own config of ``model`` (``study.trial_config``: overrides and model kwargs in)."""
        from scaling.sweep.study import trial_config

        self.proc.stdin.write(json.dumps(trial_config(self.cfg, model).to_json()) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def close(self) -> float:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.elapsed()


def ensure(
    path: Path,
    cfg: StudyConfig,
    ladders: dict[str, list[str]],
    budget: float,
    cheapest_hours: Callable[[dict, str], float],
    estimate: Callable[[dict, str, str], dict],
    log: Callable[[str], None] = print,
) -> dict:
    """Measure what is missing, cache it, return the calibration.

    ``cheapest_hours(calib, model)`` prices the model's cheapest trial;
    ``estimate(calib, measured, next)`` guesses ``next``'s calibration entry from
    a measured smaller model.
    """
    calib = load(path)
    if calib is None or calib.get("key") != key(cfg):
        calib = {"key": key(cfg), "data": None, "models": {}, "stopped": {}, "runs": []}
    worker: Worker | None = None
    run: dict | None = None

    def save() -> None:
        if worker is not None:
            run["wall_seconds"] = worker.elapsed()
        state.write_json(path, calib)

    try:
        for fam, ladder in ladders.items():
            stop = calib["stopped"].get(fam)
            if stop is not None and stop["budget"] >= budget:
                continue  # a larger budget may afford more of the ladder
            for n, model in enumerate(ladder):
                if n >= 1 and model not in calib["models"]:
                    guess = {**calib, "models": {**calib["models"], model: estimate(calib, ladder[n - 1], model)}}
                    if cheapest_hours(guess, model) > STOP_FRACTION * budget:
                        calib["stopped"][fam] = {"model": model, "budget": budget, "estimated": True}
                        break
                if model not in calib["models"]:
                    if worker is None:
                        log(f"calibrating on this machine ({cfg.dataset}, batch {cfg.batch_size}) ...")
                        worker = Worker(cfg, model)
                        run = {"wall_seconds": 0.0, "devices": worker.ready["device_count"], "models": []}
                        calib["runs"].append(run)
                        calib["data"] = {k: v for k, v in worker.ready.items() if k != "event"}
                        save()
                    m = worker.measure(model)
                    m.pop("event", None)
                    calib["models"][model] = m
                    run["models"].append(model)
                    save()
                    log(f"  {model}: compile {m['compile_seconds']:.1f}s, step {m['step_seconds'] * 1e3:.1f}ms")
                if cheapest_hours(calib, model) > STOP_FRACTION * budget:
                    calib["stopped"][fam] = {"model": model, "budget": budget}
                    break
            else:
                calib["stopped"].pop(fam, None)
    finally:
        if worker is not None:
            worker.close()
            save()
    return calib


def calibrated_ladders(calib: dict, ladders: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each ladder cut to its calibrated prefix."""
    out = {}
    for fam, ladder in ladders.items():
        cut = []
        for m in ladder:
            if m not in calib["models"]:
                break
            cut.append(m)
        out[fam] = cut
    return out


# ---- the worker process ------------------------------------------------------------


@entrypoint
def _worker(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="calibration worker (used by scaling.sweep)")
    p.add_argument("--config-json", required=True, help="the first trial's TrainConfig (JSON): its data and pipeline")
    args = p.parse_args(argv)

    def send(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        from scaling import checkpoint, programs  # noqa: F401  (the trainer's imports: part of every trial's start-up)
        from scaling.config import TrainConfig, resolve
        from scaling.data import batch_sources, selection
        from scaling.measure import measure_config

        t = time.monotonic()
        first = resolve(TrainConfig.from_json(json.loads(args.config_json)))
        choice = selection.choose(first)
        data = batch_sources.open_source(first, choice)  # the trials' own pipeline: in memory or streaming
        data_seconds = time.monotonic() - t
        import jax

        send(dict(
            event="ready",
            train_size=int(data.train_size),
            val_size=int(data.val_size),
            test_size=int(data.test_size),
            num_classes=int(data.num_classes),
            image_size=int(data.image_size),
            data_pipeline=data.pipeline,
            data_pipeline_reason=choice.reason,
            setup_seconds=data_seconds,
            data_seconds_abs=data_seconds,
            device_kind=jax.devices()[0].device_kind,
            device_count=jax.device_count(),
            platform=jax.devices()[0].platform,
        ))
        data.close()
        for line in sys.stdin:
            if not line.strip():
                continue
            r = measure_config(TrainConfig.from_json(json.loads(line)))
            # A run goes at the slower of its step and its loader: the planner prices that.
            send(dict(event="model", step_seconds=r["bound_step_seconds"], compute_step_seconds=r["step_seconds"],
                      **{k: r[k] for k in ("model", "compile_seconds", "eval_seconds_per_example", "flops_per_example",
                                           "params", "wall_seconds", "program_fingerprint",
                                           "loader_images_per_second", "data_pipeline")}))
    except Exception as e:  # reported to the sweep as one line
        send(dict(event="error", message=f"{type(e).__name__}: {e}"))
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(_worker())
