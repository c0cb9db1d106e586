"""Per-user directories (data cache, JAX compilation cache).

The JSON helpers are re-exported from ``scaling.jsonio`` (the one module for
files on disk) for the trainer's callers.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaling.jsonio import atomic_write_bytes, read_json, write_json as atomic_write_json  # noqa: F401


def cache_dir() -> Path:
    """``$SCALING_CACHE_DIR``, else ``$XDG_CACHE_HOME/scaling``, else ``~/.cache/scaling``."""
    if os.environ.get("SCALING_CACHE_DIR"):
        return Path(os.environ["SCALING_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scaling"
