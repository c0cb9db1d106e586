"""Run tiny linear algebra single-threaded.

L-BFGS-B calls BLAS on vectors of a few elements per iteration. With the
OpenBLAS shipped in NumPy/SciPy wheels, multithreaded dispatch of those calls
was measured 30x slower than single-threaded on a loaded 2-core machine
(0.63 s vs 0.018 s for one power-law fit). This context manager sets the
thread count of every OpenBLAS already loaded in the process to one and
restores it afterwards (the same mechanism as threadpoolctl, without the
dependency). It does nothing where no OpenBLAS is found.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Iterator

_SUFFIXES = ("", "64_", "_64")
_PREFIXES = ("openblas", "scipy_openblas")


@functools.lru_cache(maxsize=1)
def _openblas_handles() -> tuple:
    paths = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1] if "/" in line else ""
                if "openblas" in path.rsplit("/", 1)[-1]:
                    paths.add(path)
    except OSError:
        return ()
    handles = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in _PREFIXES:
            for suf in _SUFFIXES:
                get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                set_ = getattr(lib, f"{pre}_set_num_threads{suf}", None)
                if get is not None and set_ is not None:
                    handles.append((get, set_))
                    break
            else:
                continue
            break
    return tuple(handles)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    handles = _openblas_handles()
    before = [get() for get, _ in handles]
    for _, set_ in handles:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), n in zip(handles, before):
            set_(n)
