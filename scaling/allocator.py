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
import time

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

    Call it first thing in a CLI's ``if __name__ == "__main__":`` block, before
    JAX is imported; never from library code.
    """
    if not wanted():
        return
    _reexec(dict(os.environ, GLIBC_TUNABLES=TUNABLES))  # on failure: run untuned rather than fail


def _reexec(env: dict) -> None:
    """Replace this process by the same command (same PID and arguments) with
    ``env``; returns only if that is impossible (an unusual sandbox)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:
        return


def describe() -> str:
    """One line for benchmark output: which malloc settings this process runs with."""
    current = os.environ.get("GLIBC_TUNABLES")
    if current == TUNABLES:
        return "malloc: tuned for XLA:CPU (scaling.allocator)"
    return f"malloc: GLIBC_TUNABLES={current}" if current else "malloc: platform default"


def default_environ(environ=os.environ) -> dict:
    """``environ`` for a child process that should run with the platform's default malloc."""
    env = dict(environ, SCALING_MALLOC="off")
    if env.get("GLIBC_TUNABLES") == TUNABLES:
        del env["GLIBC_TUNABLES"]
    return env


# Set in the environment of a process that ``restart_clean`` started: the
# wall-clock time (time.time()) at which the previous process handed over.
RESTARTED_AT = "SCALING_RESTARTED_AT"


def restarted_at(environ=os.environ) -> float | None:
    """When this process was started by ``restart_clean`` (None: it was not)."""
    value = environ.get(RESTARTED_AT)
    return float(value) if value else None


def restart_clean(reason: str) -> None:
    """Re-run this command once in a fresh process (same PID and arguments),
    saying ``reason`` on stderr; returns only if it cannot (already restarted
    once, or the exec failed), and then the caller carries on in this process.

    Why: on XLA:CPU a process that compiled a large program itself runs it
    30-50% slower than one that loaded it from the persistent compilation
    cache (2-core CPU, ``nfnet-f0-w0.125`` batch 128: 285-300 ms vs 200 ms
    per step; compiling leaves the heap in a state the step's buffers then
    pay for; untuned malloc 258 ms, so it is not the tuning alone). A CLI that
    had to compile therefore restarts once, and the new process loads the
    programs from the cache. That process must not compile anything either:
    one compile after the step is loaded (the parameter initialiser, 12 s)
    still costs ~14% (220 vs 192 ms), so the trainer compiles every program
    before the restart. CLIs only; never from library code.
    """
    if restarted_at() is not None:
        return
    print(reason, file=sys.stderr)
    _reexec(dict(os.environ, **{RESTARTED_AT: repr(time.time())}))
