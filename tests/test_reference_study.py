"""The committed reference study: its records are complete and the README's numbers refit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "cifar10_reference"
RESULTS = STUDY / "results"

pytestmark = pytest.mark.skipif(not RESULTS.exists(), reason="no committed reference results")


def _records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.rglob("result.json"))]


def test_four_sizes_and_three_epoch_budgets_per_family_on_real_cifar10(cifar10_path):
    from scaling import data

    real = data.load("cifar10", cifar10_path).content_hash
    done = [r for r in _records() if r["status"] == "done"]
    for fam in ("nfnet", "vit"):
        runs = [r for r in done if r["family"] == fam]
        assert len({r["model"] for r in runs}) >= 4, fam
        assert len({r["config"]["epochs"] for r in runs}) >= 3, fam
        assert all(r["dataset"] == "cifar10" and r["train_size"] == 45000 and r["steps"] > 0 for r in runs)
        assert all(r["dataset_hash"] == real for r in runs)  # the real images, not synthetic ones
    assert not list(RESULTS.rglob("checkpoints")), "checkpoints must not be committed"


def test_spend_within_five_percent_of_budget():
    s = json.loads((RESULTS / "summary.json").read_text())
    assert s["complete"] and 0.95 <= s["spent"] / s["budget"] <= 1.05


def test_readme_numbers_reproduce_from_a_fresh_fit():
    r = subprocess.run([sys.executable, str(STUDY / "report.py"), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
