"""On-disk cache of decoded splits, keyed by the source's content hash.

Decoding 60,000 JPEGs takes tens of seconds; loading the cached arrays takes
well under a second. The cache is derived data: it lives in the per-user cache
directory, never in the project.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from scaling.paths import atomic_write_bytes, cache_dir


def _path(name: str, key: str) -> Path:
    return cache_dir() / "datasets" / f"{name}-{key}.npz"


def load(name: str, key: str):
    path = _path(name, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = {s: (z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "test")}
            class_names = tuple(str(c) for c in z["class_names"])
        return splits, class_names
    except (OSError, KeyError, ValueError):
        return None  # a corrupt cache entry is rebuilt, not trusted


def store(name: str, key: str, splits, class_names) -> None:
    buf = io.BytesIO()
    arrays = {f"{s}_{k}": v for s, (im, lb) in splits.items() for k, v in (("images", im), ("labels", lb))}
    np.savez(buf, class_names=np.array(class_names), **arrays)
    atomic_write_bytes(_path(name, key), buf.getvalue())
