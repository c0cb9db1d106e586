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


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_report", STUDY / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_prints_the_fit_commands_that_made_its_numbers():
    """Issue 30: the section's command and the block's commands are exactly those report.py runs."""
    report = _report_module()
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Reference study") :]
    section = section[: section.index("\n## ", 3)]
    printed = [ln.strip() for ln in section.splitlines() if ln.strip().startswith("python -m scaling.fit")]
    assert printed and set(printed) <= set(report.COMMANDS.values()), printed
    assert report.COMMANDS["hours"] in printed and report.COMMANDS["flops"] in printed
    assert report.printed_commands(report.current_block()) == report.COMMANDS


def test_the_block_says_not_identified_where_the_fit_does():
    """Issue 22: the committed study's warnings (N* below the smallest model, epochs* beyond the largest)."""
    doc = json.loads((STUDY / "figures" / "fit.json").read_text())
    nfnet = doc["groups"]["nfnet"]
    assert not nfnet["optimal_params"]["identified"] and not nfnet["optimal_epochs"]["identified"]
    assert "below the smallest model trained" in nfnet["optimal_params"]["not_identified_because"][0]
    assert "above the largest epoch budget trained" in nfnet["optimal_epochs"]["not_identified_because"][0]
    assert not doc["groups"]["vit"]["optimal_params"]["identified"]
    block = _report_module().current_block()
    assert block.count("**not identified**") == sum(
        not g[k]["identified"] for g in doc["groups"].values() for k in ("optimal_params", "optimal_epochs")
    )


def test_text_predict_on_the_degenerate_vit_fit_does_not_crash(capsys):
    """Issue 30: text-mode --predict on the reference ViT group crashed (TypeError on a degenerate fit)."""
    from scaling import fit

    assert fit.main([str(RESULTS), "--law", "power", "--predict", "1", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    vit = out[out.index("== vit"):]
    assert "params = 0" in vit and "NOT IDENTIFIED" in vit and "epochs = n/a" in vit


@pytest.mark.slow
def test_text_predict_never_crashes_and_tags_a_loss_from_a_degenerate_optimum(capsys):
    """Every law in text mode: exit 0 (or one-line exit 2 where the law cannot be fitted), no traceback."""
    from scaling import fit

    for law in ("parametric", "data-constrained", "saturating", "isoflop"):
        rc = fit.main([str(RESULTS), "--law", law, "--predict", "1", "--bootstrap", "10"])
        out, err = capsys.readouterr()
        assert rc in (0, 2) and "Traceback" not in err, (law, err)
        if law == "parametric":
            vit = out[out.index("== vit"):]
            loss_line = next(ln for ln in vit.splitlines() if ln.strip().startswith("loss ="))
            assert "NOT IDENTIFIED" in loss_line  # the loss at N* = 0 is no answer
