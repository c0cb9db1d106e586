"""Restart after compiling: re-run a CLI once so it trains with cached programs.

On XLA:CPU a process that compiled a large program itself runs it 30-50%
slower than one that loaded it from the persistent compilation cache, and a
compile after the train step is loaded costs ~14% more (measurements in
docs/performance.md). So a CLI whose compile was a cache miss of at least
``threshold()`` seconds re-executes itself once (same PID and arguments) and
the new process loads every program from the cache. The trainer asks
``should_restart`` after compiling; this module holds the whole policy.
"""

from __future__ import annotations

import os
import sys
import time

from scaling.errors import UserError
from scaling.platform.malloc import reexec

# Restart only after a compile at least this long (seconds; override with
# SCALING_RESTART_AFTER_COMPILE=SECONDS|off): a restart costs ~10 s (start-up,
# data, programs from the cache), and short compiles leave the process fast.
DEFAULT_SECONDS = 5.0

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

    CLIs only; never from library code.
    """
    if restarted_at() is not None:
        return
    print(reason, file=sys.stderr)
    reexec(dict(os.environ, **{RESTARTED_AT: repr(time.time())}))


def threshold(environ=os.environ) -> float | None:
    """Seconds of fresh compiling that make a CLI restart (None: never), from
    ``SCALING_RESTART_AFTER_COMPILE`` (a number or ``off``)."""
    value = environ.get("SCALING_RESTART_AFTER_COMPILE", str(DEFAULT_SECONDS))
    if value.lower() == "off":
        return None
    try:
        return float(value)
    except ValueError:
        raise UserError(f"SCALING_RESTART_AFTER_COMPILE must be a number of seconds or 'off', got {value!r}") from None


def should_restart(fresh: dict[str, float], limit: float | None, backend: str) -> bool:
    """After compiling: restart when the train step itself was compiled here (so the
    new process would load it from the cache; a program the cache cannot store, e.g.
    the ViT's oneDNN step, would only compile again), the fresh compiles took at
    least ``limit`` seconds, this process is not already a restart, and on a CPU."""
    return (limit is not None and bool(fresh.get("train")) and sum(fresh.values()) >= limit
            and restarted_at() is None and backend == "cpu")
