"""Process-wide JAX setup: the persistent compilation cache, on by default."""

from __future__ import annotations

import os

import jax

from scaling.paths import cache_dir

_done = False


def setup() -> None:
    """Enable JAX's persistent compilation cache in the per-user cache directory.

    ``SCALING_JAX_CACHE=off`` disables it; ``SCALING_JAX_CACHE=DIR`` moves it.
    Re-running a model (a resumed run, a sweep's next trial) then skips most of
    the compile time.
    """
    global _done
    if _done:
        return
    _done = True
    where = os.environ.get("SCALING_JAX_CACHE", str(cache_dir() / "jax"))
    if where.lower() == "off":
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
