"""User-facing errors: one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable


class UserError(Exception):
    """A mistake in what the user asked for (bad flag, missing file, ...)."""


def cli_main(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main`` so that a UserError prints one line and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper




class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse's own print the usage too)."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")
