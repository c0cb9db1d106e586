"""Named fault points, so tests can kill or crash a run at an exact place.

``SCALING_FAULT=POINT[:kill|raise]`` makes ``point(POINT)`` send the process
SIGKILL (default) or raise ``InjectedFault``. Points: ``step-N`` (after train
step N), ``final-eval``, ``write:NAME`` (a file NAME written to its temporary
path, before the atomic rename). Unset, ``point`` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal


class InjectedFault(RuntimeError):
    """A crash asked for by ``SCALING_FAULT`` (stands for any bug or runtime failure)."""


def point(name: str) -> None:
    spec = os.environ.get("SCALING_FAULT")
    if not spec:
        return
    where, _, action = spec.rpartition(":")
    if action not in ("kill", "raise"):
        where, action = spec, "kill"
    if where != name:
        return
    if action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
