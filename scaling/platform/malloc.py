"""Host memory allocator settings for XLA:CPU, applied by re-running the CLI once.

XLA:CPU allocates each step's temporary buffers afresh (gigabytes for a ViT
at batch 64) and frees them when the step ends. glibc's default malloc hands
blocks that large back to the operating system, so the next step touches
fresh pages and pays a page fault for every 4 KiB: 2.4 GB of page faults per
ViT-S/8 step at batch 64 on a 2-core CPU, 9% of its step time and 26% of
``nfnet-f0-w0.125``'s at batch 128. Keeping freed memory in the heap (one
arena, no mmap for big blocks, no trimming) removes them: zero faults per step.

glibc reads these settings (``GLIBC_TUNABLES``) only when a process starts,
and ``mallopt`` cannot raise the mmap threshold past 2 GiB, so the CLI entry
points re-execute themselves once with the variable set (same PID, same
arguments). Child processes (a sweep's trials) inherit it. A user-set
``GLIBC_TUNABLES`` is respected; ``SCALING_MALLOC=off`` turns this off.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = ":".join(
    [
        "glibc.malloc.arena_max=1",  # one heap: threads' big blocks are reused, not mmapped
        f"glibc.malloc.mmap_threshold={4 << 30}",  # blocks below 4 GiB come from the heap
        f"glibc.malloc.trim_threshold={16 << 30}",  # and stay there when freed
    ]
)


def wanted(environ=os.environ) -> bool:
    """True when this process should (re)start with ``TUNABLES``."""
    if environ.get("SCALING_MALLOC", "").lower() == "off" or "GLIBC_TUNABLES" in environ:
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def reexec_with_tuned_malloc() -> None:
    """Re-run this command with glibc's malloc tuned for XLA:CPU (no-op when not wanted).

    ``scaling.platform.entrypoint`` calls it when a CLI starts, before JAX is
    imported; never from library code.
    """
    if not wanted():
        return
    reexec(dict(os.environ, GLIBC_TUNABLES=TUNABLES))  # on failure: run untuned rather than fail


def reexec(env: dict) -> None:
    """Replace this process by the same command (same PID and arguments) with
    ``env``; returns only if that is impossible (an unusual sandbox)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return


def describe(environ=os.environ) -> str:
    """One line for benchmark output and run records: which malloc settings this process runs with."""
    current = environ.get("GLIBC_TUNABLES")
    if current == TUNABLES:
        return "malloc: tuned for XLA:CPU (scaling.platform.malloc)"
    return f"malloc: GLIBC_TUNABLES={current}" if current else "malloc: platform default"


def default_environ(environ=os.environ) -> dict:
    """``environ`` for a child process that should run with the platform's default malloc."""
    env = dict(environ, SCALING_MALLOC="off")
    if env.get("GLIBC_TUNABLES") == TUNABLES:
        del env["GLIBC_TUNABLES"]
    return env
