"""Shared fixtures: the real CIFAR-10 archive and a helper to run the CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CIFAR10 = REPO.parent / "shared" / "datasets" / "cifar10" / "cifar10-jpeg.zip"


@pytest.fixture(scope="session")
def cifar10_path() -> str:
    path = os.environ.get("SCALING_CIFAR10") or str(DEFAULT_CIFAR10)
    if not Path(path).exists():
        pytest.skip(f"CIFAR-10 archive not found at {path} (set SCALING_CIFAR10)")
    return path


def run_cli(module: str, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def varied(cifar10_path, tmp_path_factory):
    """Real CIFAR-10 images re-saved at random 40-160 px sizes (``test_stream.build_varied_folder``)."""
    from test_stream import build_varied_folder

    return build_varied_folder(cifar10_path, tmp_path_factory.mktemp("varied") / "images")


@pytest.fixture(scope="module")
def converted(varied, tmp_path_factory):
    """``varied`` converted to ArrayRecord shards."""
    from scaling.data import convert

    dst = tmp_path_factory.mktemp("ar") / "shards"
    convert.convert(varied, dst, shard_size=128, progress=False)
    return dst
