"""JSON on disk, one way: atomic writes (temp file, fsync, rename) and reads.

A SIGKILL during a write leaves the old file or the new one, never a torn one.
``read_json`` raises on a missing file; ``read_json_if_exists`` returns None for
a missing file (or one not written here and torn). JSON lines are appended
with a single write, and a torn last line is skipped on read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from scaling import faults


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _default(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy and JAX scalars
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def dumps(obj: Any) -> str:
    """The one formatting: indented, sorted keys, numpy scalars as Python numbers."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, dumps(obj).encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_if_exists(path: str | os.PathLike) -> Any | None:
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None  # only possible for files not written by write_json


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one line with a single write (atomic for lines well under PIPE_BUF on local fs)."""
    line = json.dumps(obj, sort_keys=True, default=_default) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a torn last line from a killed writer
    except FileNotFoundError:
        pass
    return out
