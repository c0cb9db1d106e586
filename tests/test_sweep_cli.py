"""User errors of ``python -m scaling.sweep``: one line on stderr, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaling.sweep import state, study

REPO = Path(__file__).resolve().parents[1]


def sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling.sweep", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def assert_user_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("budget", ["0", "-1", "abc", "nan", "inf"])
def test_bad_budget(tmp_path, budget):
    assert_user_error(sweep("--budget", budget, "--workdir", str(tmp_path / "w")), "--budget", budget)
    assert not (tmp_path / "w").exists()  # nothing is created for a refused command


def test_unknown_family(tmp_path):
    r = sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", "cifar10_cnn", "--families", "nosuchfamily",
              "--data", "synthetic")
    assert_user_error(r, "unknown model family", "nosuchfamily")


def test_config_that_fails_to_load(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def get_config(arg=None):\n    return dict(epochs=[1, 2], families=['cnn'], nope=1/0)\n")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", str(bad)),
                      "broken.py", "ZeroDivisionError")
    unknown = tmp_path / "unknown_field.py"
    unknown.write_text("def get_config(arg=None):\n    return dict(familys=['cnn'])\n")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", str(unknown)),
                      "familys")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", "no_such_study"),
                      "no_such_study", "not found")


def test_workdir_of_another_study(tmp_path):
    other = study.StudyConfig(name="other", families=["cnn"])
    state.claim_workdir(tmp_path / "w", other.identity(), other.to_json())
    r = sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", "cifar10_cnn", "--data", "synthetic")
    assert_user_error(r, "belongs to study 'other'", "cifar10_cnn")


def test_same_study_is_recognised_and_overrides_change_identity(tmp_path):
    a = study.apply_overrides(study.load("cifar10_cnn")).validate()
    b = study.apply_overrides(study.load("cifar10_cnn")).validate()
    assert a.identity() == b.identity()
    assert state.claim_workdir(tmp_path, a.identity(), a.to_json()) is True
    assert state.claim_workdir(tmp_path, b.identity(), b.to_json()) is False
    c = study.apply_overrides(study.load("cifar10_cnn"), batch_size=64).validate()
    assert c.identity() != a.identity()


def test_every_experiment_config_loads_and_names_known_models():
    configs = [study.packaged(n) for n in study.packaged_names()]
    assert {"cifar10_cnn", "cifar10_small", "cifar10_reference"} <= {p.stem for p in configs}
    from scaling.models import registry

    for p in configs:
        cfg = study.load(str(p)).validate()
        known = registry.families()
        for fam in cfg.families:
            if fam in known:  # families still being written are skipped, not failed
                study.check_models(study.apply_overrides(cfg, families=fam))


def test_help_explains_itself():
    r = sweep("--help")
    assert r.returncode == 0 and "--budget" in r.stdout and "--dry-run" in r.stdout


def test_packaged_configs_are_found_from_a_plain_install(tmp_path):
    """A non-editable install (the package copied into site-packages) finds
    ``--config cifar10_cnn`` from any directory: the configs ship in the package."""
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    probe = ("import scaling.sweep.study as s; p, _ = s.resolve_path('cifar10_cnn'); "
             "print(p); print(s.load('cifar10_cnn').name)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}, timeout=120)
    assert out.returncode == 0, out.stderr
    path, name = out.stdout.split()
    assert path.startswith(str(target)) and name == "cifar10_cnn"


@pytest.mark.parametrize("width", ["0", "-0.1", "abc", "nan"])
def test_bad_target_width(tmp_path, width):
    r = sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--dry-run", "--target-width", width)
    assert_user_error(r, "--target-width", width)
    assert not (tmp_path / "w").exists()


def test_design_flags_need_the_design_tool_and_a_known_accelerator(tmp_path):
    w = str(tmp_path / "w")
    assert_user_error(sweep("--budget", "0.1", "--workdir", w, "--target-width", "0.2"), "--target-width", "--dry-run")
    assert_user_error(sweep("--budget", "0.1", "--workdir", w, "--dry-run", "--accelerator", "h100"),
                      "--target-width")
    assert_user_error(sweep("--budget", "0.1", "--workdir", w, "--dry-run", "--target-width", "0.2",
                            "--accelerator", "nosuchchip"), "unknown accelerator", "nosuchchip", "h100")
    assert_user_error(sweep("--budget", "0.1", "--workdir", w, "--dry-run", "--target-width", "0.2",
                            "--accelerator", "h100", "--mfu", "2"), "--mfu")
    assert not (tmp_path / "w").exists()


def test_placement_typo_is_one_line(tmp_path):
    typo = tmp_path / "typo.py"
    typo.write_text("def get_config(arg=None):\n    return dict(families=['cnn'], placement='adaptiv')\n")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", str(typo),
                            "--data", "synthetic"), "unknown placement", "adaptiv", "band", "adaptive")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--placement", "adaptiv"),
                      "--placement", "adaptiv")
    wave = tmp_path / "wave.py"
    wave.write_text("def get_config(arg=None):\n    return dict(families=['cnn'], placement='adaptive', "
                    "adaptive_first_wave=1.5)\n")
    assert_user_error(sweep("--budget", "0.1", "--workdir", str(tmp_path / "w"), "--config", str(wave),
                            "--data", "synthetic"), "adaptive_first_wave")
    assert not (tmp_path / "w").exists()
