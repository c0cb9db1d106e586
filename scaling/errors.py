"""User-facing errors: one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse


class UserError(Exception):
    """A mistake in what the user asked for (bad flag, missing file, ...)."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (argparse's own print the usage too)."""

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")
