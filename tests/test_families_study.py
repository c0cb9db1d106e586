"""The all-family study config: it validates, names ladder models of every family, and plans (dry run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from scaling.models import registry
from scaling.studies.cifar10_families import LADDERS
from scaling.sweep import calibrate, state, study

FAMILIES = {"nfnet", "vit", "resnet", "cct", "deit", "swin", "mobilevit"}


def test_config_validates_and_names_each_familys_ladder():
    cfg = study.load("cifar10_families").validate()
    assert set(cfg.families) == FAMILIES == set(cfg.ladders)
    for fam, models in cfg.ladders.items():
        ranks = [registry.get(m).ladder_rank for m in models]
        assert all(registry.get(m).family == fam for m in models) and ranks == sorted(ranks) and None not in ranks
    tiny = study.load("cifar10_families:tiny").validate()
    assert all(len(m) == 2 for m in tiny.ladders.values()) and set(tiny.families) == FAMILIES


def _seed_calibration(work: Path) -> None:
    """A cached calibration (nothing is measured): step times from each model's FLOPs at 20 GFLOP/s."""
    cfg = study.load("cifar10_families").validate()
    models = {}
    for names in LADDERS.values():
        for name in names:
            f = registry.get(name).forward_flops(32, 10)
            models[name] = {"compile_seconds": 10.0, "step_seconds": 3 * f * 128 / 2e10,
                            "eval_seconds_per_example": f / 2e10, "flops_per_example": f, "params": 1000}
    state.write_json(work / "calibration.json", {
        "key": calibrate.key(cfg),
        "data": {"train_size": 45000, "val_size": 5000, "test_size": 10000, "num_classes": 10, "image_size": 32,
                 "device_count": 1, "device_kind": "cpu", "platform": "cpu", "startup_seconds": 5.0,
                 "setup_seconds": 5.0},
        "models": models, "stopped": {}, "runs": [],
    })


def test_dry_run_plans_every_family(tmp_path):
    work = tmp_path / "families"
    _seed_calibration(work)
    cmd = [sys.executable, "-m", "scaling.sweep", "--config", "cifar10_families", "--workdir", str(work),
           "--budget", "1", "--dry-run", "--json"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["dry_run"] and plan["predicted_total"] <= 1
    assert {t["family"] for t in plan["trials"]} == FAMILIES
    for fam in FAMILIES:  # at least two cells of different compute per family
        assert len({t["train_flops"] for t in plan["trials"] if t["family"] == fam}) >= 2, fam
    assert not (work / "trials").exists()  # nothing trained
    small = subprocess.run(cmd[:-4] + ["--budget", "0.05"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert small.returncode == 2 and "too small" in small.stderr and small.stderr.strip().count("\n") == 0
