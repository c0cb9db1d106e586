"""Data sets: one ``load`` for CIFAR-10 and any TFDS image-classification set.

Source selection (``source`` argument, ``--data`` on the CLIs):
- a path to a ZIP or folder in the ``<split>/<class>/<file>`` layout, or a
  folder of ArrayRecord shards written by ``python -m scaling.data.convert``;
- ``"tfds"``: TensorFlow Datasets (no GCS; honours ``TFDS_DATA_DIR``);
- ``"synthetic"``: random class-dependent images, for plumbing tests only;
- ``None``: ``$SCALING_<NAME>`` (e.g. ``SCALING_CIFAR10``) if set, else TFDS.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaling.data import cache, sources
from scaling.data.dataset import Dataset, hold_out
from scaling.errors import UserError

# Default validation hold-out per data set; others use 10% of train.
DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000}


def default_source(name: str) -> str:
    return os.environ.get(f"SCALING_{name.upper().replace('-', '_')}", "tfds")


def load(name: str = "cifar10", source: str | None = None, val_size: int | None = None) -> Dataset:
    source = source or default_source(name)
    if source == "synthetic":
        splits, class_names = sources.synthetic()
        key = "synthetic"
    elif source == "tfds":
        _check_tfds_name(name)
        key = f"tfds-{os.environ.get('TFDS_DATA_DIR', 'default')}".replace("/", "_")
        cached = cache.load(name, key)
        if cached is None:
            cached = _read_tfds(name)
            cache.store(name, key, *cached)
        splits, class_names = cached
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"data path not found: {path}")
        from scaling.data import records

        converted = path.is_dir() and (path / records.METADATA).exists()  # python -m scaling.data.convert's
        src = records.open_arrayrecord(path) if converted else None
        key = src.content_hash if converted else sources.content_hash(path)
        cached = cache.load(name, key)
        if cached is None:
            cached = records.read_splits(src) if converted else sources.read_image_folder(path)
            cache.store(name, key, *cached)
        splits, class_names = cached
    train_images, train_labels = splits["train"]
    if val_size is None:
        default = None if source == "synthetic" else DEFAULT_VAL_SIZE.get(name)
        val_size = default or len(train_images) // 10
    if not 0 < val_size < len(train_images):
        raise UserError(f"--val-size must be between 1 and {len(train_images) - 1}, got {val_size}")
    tr_x, tr_y, va_x, va_y = hold_out(train_images, train_labels, val_size)
    return Dataset(
        name=name,
        class_names=class_names,
        train_images=tr_x,
        train_labels=tr_y,
        val_images=va_x,
        val_labels=va_y,
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        source=source,
        content_hash=key,
    )


def _read_tfds(name: str):
    """A prepared ArrayRecord TFDS data set through ``tfds.data_source`` (no TensorFlow
    needed), else TFDS's own reader (downloads and prepares; needs TensorFlow)."""
    from scaling.data import records

    try:
        src = records.open_source("tfds", name)
    except UserError:
        return sources.read_tfds(name)
    return records.read_splits(src)


def check_source(name: str, source: str | None) -> None:
    """Validate a data source without loading it (for a sweep, before it claims its workdir)."""
    source = source or default_source(name)
    if source == "synthetic":
        return
    if source == "tfds":
        _check_tfds_name(name)
    else:
        path = Path(source).expanduser()
        from scaling.data import records

        if path.is_dir() and (path / records.METADATA).exists():
            records.open_arrayrecord(path)  # a converted data set: metadata and every shard present
        else:
            sources.check_image_folder(path)


def _check_tfds_name(name: str) -> None:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        hint = " or set SCALING_CIFAR10 to a local copy" if name == "cifar10" else ""
        raise UserError(
            f"data set {name!r} needs TFDS (pip install 'vision-scaling[tfds]'); "
            f"or pass --data PATH to a local <split>/<class>/<file> ZIP or folder{hint}"
        ) from None
    if name not in tfds.list_builders(with_community_datasets=False):
        raise UserError(f"unknown data set {name!r}: not a TFDS builder")


__all__ = ["Dataset", "load", "default_source", "check_source"]
