"""The one CLI wrapper: platform set-up at process start, user errors as one line.

Every CLI's ``main`` is decorated with ``entrypoint``. Called as a process's
command (``python -m ...``, a console script such as ``scaling-train``, an
experiment script: ``argv`` is None), it first re-executes the process with
the tuned malloc (``scaling.platform.malloc``); called from Python with an
argument list (tests, notebooks) it changes nothing about the process. Either
way a ``UserError`` prints ``error: ...`` on one line and returns 2.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

from scaling.errors import UserError


def entrypoint(fn: Callable[..., int | None]) -> Callable[..., int]:
    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> int:
        if argv is None:
            from scaling.platform.malloc import reexec_with_tuned_malloc

            reexec_with_tuned_malloc()  # returns only when not wanted (or impossible)
        try:
            return fn(argv) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def run(main: Callable[..., int]) -> None:
    """``if __name__ == "__main__": run(main)``: exit with ``main``'s status."""
    sys.exit(main())
