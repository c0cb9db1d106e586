"""Process-wide JAX setup: the persistent compilation cache, on by default,
and a count of the compilations this process did itself (cache misses)."""

from __future__ import annotations

import os
import time
import warnings

import jax

from scaling.paths import cache_dir

_done = False
# JAX's warning when the persistent cache cannot store a compiled program.
_UNWRITTEN = "Error writing persistent compilation cache entry"


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
    # Some executables cannot be serialised (XLA:CPU's oneDNN fusions, used
    # by the ViT's CPU programs): JAX warns on each such compile. Expected
    # here, and ``CacheMisses`` reports it as ``unwritten``.
    warnings.filterwarnings("ignore", message=_UNWRITTEN)


_CACHE_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_events = {_CACHE_REQUESTS: 0, _CACHE_HITS: 0}
_listening = False


def _count(event: str, **_kwargs) -> None:
    if event in _events:
        _events[event] += 1


def _listen() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_listener(_count)
        _listening = True


def compiles_so_far() -> int:
    """XLA compilations this process did itself (persistent-cache misses) since
    this was first called; counted only while the cache is on."""
    _listen()
    return _events[_CACHE_REQUESTS] - _events[_CACHE_HITS]


class CacheMisses:
    """Persistent-cache misses (XLA compilations done in this process) inside a
    ``with`` block: ``count``; ``unwritten``, how many of them the cache
    could not store (an executable XLA cannot serialise); and
    ``fresh_seconds``, the block's wall time when it missed and the cache now
    holds the result (too-short programs are never cached and unserialisable
    ones cannot be, so those miss in every process).

    Zero when the cache is off: then there is no cached copy to come back to.
    """

    def __enter__(self) -> "CacheMisses":
        self._start = compiles_so_far()
        self._t0 = time.monotonic()
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.monotonic() - self._t0
        self._warnings.__exit__(*exc)
        self.unwritten = 0
        for w in self._caught:
            if str(w.message).startswith(_UNWRITTEN):
                self.unwritten += 1
            else:  # not ours to swallow
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.count = compiles_so_far() - self._start
        cacheable = seconds >= jax.config.jax_persistent_cache_min_compile_time_secs
        written = self.count > self.unwritten
        self.fresh_seconds = seconds if written and cacheable else 0.0
