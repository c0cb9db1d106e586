"""Where images come from: a local image folder or ZIP, TFDS, or synthetic noise.

Each reader returns raw splits ``{"train": (images, labels), "test": ...}`` and
the class names; caching and the validation hold-out live elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from scaling.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def content_hash(path: Path) -> str:
    """sha256 of a ZIP's bytes; for a folder, of its file names, sizes and mtimes."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    else:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _index(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Group ``<split>/<class>/<file>`` names by split: [(class, name), ...]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        parts = name.strip("/").split("/")
        if len(parts) < 3 or not name.lower().endswith(IMAGE_SUFFIXES):
            continue
        split, cls = parts[-3], parts[-2]
        out.setdefault(split, []).append((cls, name))
    return out


def _decode(item: tuple[str, bytes]) -> np.ndarray:
    from PIL import Image

    name, data = item
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's ways of saying "not an image I can read"
        raise UserError(f"cannot decode image {name}: {e}") from None


def _layout(path: Path):
    """(index by split, read(name) -> bytes) of a ZIP or folder; one-line errors for a wrong layout."""
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserError(f"data path is neither a folder nor a ZIP file: {path}")
        try:
            zf = zipfile.ZipFile(path)
            index = _index(zf.namelist())
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(f"cannot read ZIP file {path}: {e}") from None
        read = zf.read
    else:
        index = _index([str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()])
        read = lambda name: (path / name).read_bytes()  # noqa: E731
    if "train" not in index or "test" not in index:
        raise UserError(f"{path} must hold train/<class>/<file> and test/<class>/<file> images")
    return index, read


def check_image_folder(path: Path) -> None:
    """The cheap part of ``read_image_folder``: the path exists and has the layout (nothing decoded)."""
    _layout(path)


def read_image_folder(path: Path) -> tuple[Splits, tuple[str, ...]]:
    """Read ``<split>/<class>/<file>`` from a ZIP file or a directory."""
    index, read = _layout(path)
    class_names = tuple(sorted({c for c, _ in index["train"]}))
    class_id = {c: i for i, c in enumerate(class_names)}
    splits: Splits = {}
    for split in ("train", "test"):
        items = sorted(index[split], key=lambda t: t[1])
        unknown = {c for c, _ in items} - set(class_id)
        if unknown:
            raise UserError(f"{path}: test classes not in train: {sorted(unknown)[:3]}")
        blobs = [(name, read(name)) for _, name in items]  # zip reads are not thread-safe
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            images = list(pool.map(_decode, blobs, chunksize=512))
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise UserError(f"{path}: images of different sizes {sorted(shapes)[:3]}; resize them first")
        labels = np.array([class_id[c] for c, _ in items], dtype=np.int32)
        splits[split] = (np.stack(images), labels)
    return splits, class_names


def read_tfds(name: str) -> tuple[Splits, tuple[str, ...]]:
    """Read an image-classification data set with TFDS (``pip install vision-scaling[tfds]``)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError(
            "TFDS is not installed: `pip install 'vision-scaling[tfds]'`, or give a local copy "
            "with --data PATH (a ZIP or folder of <split>/<class>/<file> images)"
        ) from None
    data_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
        builder.download_and_prepare()
        splits: Splits = {}
        for split in ("train", "test"):
            ds = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
            splits[split] = (np.asarray(ds[0], np.uint8), np.asarray(ds[1], np.int32))
        names = tuple(builder.info.features["label"].names)
    except Exception as e:  # TFDS raises many kinds; all mean "could not get the data"
        raise UserError(
            f"TFDS could not provide {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "without internet, give a local copy with --data PATH or set TFDS_DATA_DIR"
        ) from None
    return splits, names


def synthetic(num_classes: int = 10, image_size: int = 32, train: int = 2048, test: int = 512):
    """Random class-dependent images, for plumbing tests only (never for results)."""
    rng = np.random.default_rng(0)
    # Smooth class prototypes (4x4 colour blocks, upsampled) so that a class
    # survives the random crops and flips of the augmentation.
    coarse = rng.integers(0, 256, (num_classes, 4, 4, 3))
    prototypes = coarse.repeat(-(-image_size // 4), 1).repeat(-(-image_size // 4), 2)[:, :image_size, :image_size]
    splits: Splits = {}
    for split, n in (("train", train), ("test", test)):
        labels = rng.integers(0, num_classes, n).astype(np.int32)
        noise = rng.normal(0, 40, (n, image_size, image_size, 3))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        splits[split] = (images, labels)
    return splits, tuple(f"class_{i}" for i in range(num_classes))
