"""Registry: families discovered by name (no hard-coded list, no import circle), lazy loading, CLI errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run_cli
from scaling.models import registry


def test_registry_imports_no_family_module():
    tree = ast.parse((REPO / "scaling" / "models" / "registry.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not [m for m in imported if m.startswith("scaling.models")], imported


def test_every_module_of_the_package_is_a_family_or_registers_nothing():
    modules = registry._family_modules()
    files = {p.stem for p in (REPO / "scaling" / "models").glob("*.py") if not p.stem.startswith("_")}
    assert set(modules) == files  # nothing listed by hand: a new file is found
    specs = registry.all_specs()
    assert {"cnn", "nfnet", "vit", "resnet", "cct", "deit", "swin", "mobilevit"} <= set(registry.families())
    for spec in specs:  # a model's family is its module's name, which prefixes the model name
        assert spec.family in modules and spec.name.startswith(spec.family + "-"), spec.name
        assert sys.modules[spec.build.__module__].__name__ == f"scaling.models.{spec.family}"


def test_get_imports_only_the_named_family():
    code = ("import sys; from scaling.models import registry; registry.get('deit-s/16'); "
            "print(sorted(m for m in sys.modules if m.startswith('scaling.models.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = eval(r.stdout.strip())  # noqa: S307 (our own printout)
    assert "scaling.models.deit" in loaded
    assert not {"scaling.models.vit", "scaling.models.nfnet", "scaling.models.cnn", "scaling.models.resnet",
                "scaling.models.swin", "scaling.models.mobilevit"} & set(loaded)


def test_cli_lists_a_family_and_bad_model_input_exits_2(tmp_path: Path):
    r = run_cli("scaling.models", "--family", "cct", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["family"] for row in rows} == {"cct"} and len(rows) == 8
    assert next(row for row in rows if row["name"] == "cct-7/3x1")["params"] == 3_760_139
    r = run_cli("scaling.train", "--model", "deit-c0/4", "--image-size", "30", "--model-kwargs",
                '{"drop_path_rate": 0.0}', "--steps", "1", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "not a multiple of patch 4" in r.stderr
    r = run_cli("scaling.train", "--model", "resnet-999", "--steps", "1", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and "unknown model 'resnet-999'" in r.stderr
