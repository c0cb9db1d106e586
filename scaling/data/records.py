"""Random-access records of encoded images for the streaming path.

A record is ``(encoded image bytes, label, name)``; ``name`` identifies the
image in error messages (its path in a folder or ZIP). Three kinds, chosen by
``open_source``:
- an image folder or ZIP of ``<split>/<class>/<file>`` images of any size and
  format (files sorted by name, as ``sources.read_image_folder`` sorts them,
  so a record's index is the same on the in-memory and the streaming path);
- ArrayRecord shards written by ``python -m scaling.data.convert`` (a folder
  with ``metadata.json``): one file read per image instead of a directory walk;
- a TFDS data set prepared locally, through ``tfds.data_source`` (no full load).

Record sets pickle cheaply (file handles are reopened in each worker process)
and are safe to read from several threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np

from scaling.data import sources
from scaling.errors import UserError

FORMAT = "scaling-arrayrecord-v1"
METADATA = "metadata.json"
SPLITS = ("train", "test")
_HEADER = struct.Struct("<iH")  # label, length of the name in bytes


def encode_record(image: bytes, label: int, name: str) -> bytes:
    raw = name.encode()
    return _HEADER.pack(label, len(raw)) + raw + image


def decode_record(record: bytes) -> tuple[bytes, int, str]:
    label, n = _HEADER.unpack_from(record)
    start = _HEADER.size
    return record[start + n :], label, record[start : start + n].decode()


class FolderRecords:
    """One split of an image folder or ZIP."""

    def __init__(self, root: Path, names, labels: np.ndarray):
        # names as one fixed-width byte array: pickled to each worker as one buffer, not a million strings
        self.root, self.labels = Path(root), np.asarray(labels, np.int32)
        self.names = names if isinstance(names, np.ndarray) else np.array([n.encode() for n in names], np.bytes_)
        self._is_zip = self.root.is_file()
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.names)

    def _zip(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zip", None)
        if zf is None or self._local.pid != os.getpid():  # one handle per thread and process
            zf = self._local.zip = zipfile.ZipFile(self.root)
            self._local.pid = os.getpid()
        return zf

    def __getitem__(self, i: int) -> tuple[bytes, int, str]:
        name = self.names[i].decode()
        try:
            data = self._zip().read(name) if self._is_zip else (self.root / name).read_bytes()
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise UserError(f"cannot read image {name} from {self.root}: {e}") from None
        return data, int(self.labels[i]), name

    def __getstate__(self):
        return {"root": self.root, "names": self.names, "labels": self.labels}

    def __setstate__(self, state):
        self.__init__(state["root"], state["names"], state["labels"])


class ArrayRecordRecords:
    """One split of a converted data set (ArrayRecord shards, read by Grain's source)."""

    def __init__(self, paths: list[str]):
        import grain

        self.paths = paths
        self._source = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[bytes, int, str]:
        return decode_record(self._source[int(i)])

    def __getstate__(self):
        return {"paths": self.paths}

    def __setstate__(self, state):
        self.__init__(state["paths"])


class TfdsRecords:
    """One split of a locally prepared TFDS data set, images left encoded."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        self.args = (name, split, data_dir)
        self._source = tfds.data_source(
            name, split=split, data_dir=data_dir, try_gcs=False, download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[bytes, int, str]:
        ex = self._source[int(i)]
        return bytes(ex["image"]), int(ex["label"]), f"{self.args[0]}/{self.args[1]}[{int(i)}]"

    def __getstate__(self):
        return {"args": self.args}

    def __setstate__(self, state):
        self.__init__(*state["args"])


class Subset:
    """The records at ``indices`` of ``records`` (the training split minus the hold-out)."""

    def __init__(self, records, indices: np.ndarray):
        self.records, self.indices = records, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.records[int(self.indices[i])]


@dataclasses.dataclass(frozen=True)
class Summary:
    """What the memory-vs-stream rule needs to know about a data set."""

    num_images: int
    decoded_bytes: int | None  # uint8 bytes of all images decoded; None: not known
    shape: tuple[int, int, int] | None  # the one (H, W, C) all images share; None: sizes differ or unknown

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Source:
    """A data set opened for streaming: its splits as record sets, and its identity."""

    kind: str  # "folder" | "zip" | "arrayrecord" | "tfds"
    location: str
    class_names: tuple[str, ...]
    splits: dict  # split -> record set
    content_hash: str
    metadata: dict = dataclasses.field(default_factory=dict)

    def summary(self, stop_above_bytes: int | None = None) -> Summary:
        """Image count and decoded size. Folders read every image header (so a file
        that is not an image is found here), stopping early only once the size
        exceeds ``stop_above_bytes``."""
        n = sum(len(r) for r in self.splits.values())
        if self.kind == "arrayrecord":
            s = self.metadata["summary"]
            return Summary(n, s["decoded_bytes"], tuple(s["shape"]) if s["shape"] else None)
        if self.kind == "tfds":
            shape = self.metadata.get("image_shape")
            if shape and all(shape):
                return Summary(n, n * int(np.prod(shape)), tuple(shape))
            return Summary(n, None, None)
        return _scan_headers(self.splits, stop_above_bytes)


def read_splits(source: Source) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Decode every image of ``source`` into ``{split: (images, labels)}`` for the
    in-memory path (what ``sources.read_image_folder`` gives for a folder), e.g. for
    a converted ArrayRecord folder that the selection rule puts in memory."""
    from scaling.data.preprocess import decode_rgb

    out = {}
    for split, records in source.splits.items():
        images, labels = [], np.empty(len(records), np.int32)
        for i in range(len(records)):
            data, labels[i], name = records[i]
            images.append(decode_rgb(data, name))
            if images[-1].shape != images[0].shape:
                raise UserError(f"{source.location}: images of different sizes ({images[0].shape[:2]} and "
                                f"{images[-1].shape[:2]} at {name}); use the streaming pipeline")
        out[split] = (np.stack(images), labels)
    return out, source.class_names


def _scan_headers(splits: dict, stop_above_bytes: int | None) -> Summary:
    from scaling.data.preprocess import open_image

    n = sum(len(r) for r in splits.values())
    total, shape, uniform, seen = 0, None, True, 0
    for records in splits.values():
        for i in range(len(records)):
            data, _, name = records[i]
            im = open_image(data, name)  # every header is read: a file that is not an image is named now
            hwc = (im.size[1], im.size[0], 3)
            shape = shape or hwc
            uniform = uniform and hwc == shape
            total += hwc[0] * hwc[1] * 3
            seen += 1
            if stop_above_bytes is not None and total > stop_above_bytes:
                return Summary(n, total * n // seen, shape if uniform else None)
    return Summary(n, total, shape if uniform else None)


def open_source(source: str, name: str = "cifar10") -> Source:
    """Open ``source``: ``"tfds"`` (data set ``name``), a converted ArrayRecord
    folder, an image folder or a ZIP. Bad input raises ``UserError``."""
    if source == "tfds":
        return _open_tfds(name)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"data path not found: {path}")
    if path.is_dir() and (path / METADATA).exists():
        return open_arrayrecord(path)
    if path.is_file() and path.suffix == ".array_record":
        raise UserError(f"{path} is one ArrayRecord shard; give the folder python -m scaling.data.convert wrote")
    return _open_folder(path)


def list_folder(path: Path) -> tuple[dict[str, list[tuple[str, int]]], tuple[str, ...]]:
    """``{split: [(name, label), ...]}`` sorted by name, and the class names (from train)."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise UserError(f"data path is neither a folder nor a ZIP file: {path}")
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    else:
        names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    index = sources._index(names)
    if not index:
        raise UserError(
            f"no images in {path}: expected train/<class>/<file> and test/<class>/<file> images "
            f"({', '.join(sources.IMAGE_SUFFIXES)})"
        )
    missing = [s for s in SPLITS if s not in index]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)} images: it must hold train/<class>/<file> and "
                        "test/<class>/<file>")
    class_names = tuple(sorted({c for c, _ in index["train"]}))
    class_id = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split in SPLITS:
        items = sorted(index[split], key=lambda t: t[1])
        unknown = {c for c, _ in items} - set(class_id)
        if unknown:
            raise UserError(f"{path}: {split} classes not in train: {sorted(unknown)[:3]}")
        out[split] = [(n, class_id[c]) for c, n in items]
    return out, class_names


def _open_folder(path: Path) -> Source:
    listing, class_names = list_folder(path)
    splits = {s: FolderRecords(path, [n for n, _ in items], np.array([l for _, l in items], np.int32))
              for s, items in listing.items()}
    kind = "zip" if path.is_file() else "folder"
    return Source(kind, str(path), class_names, splits, sources.content_hash(path))


def open_arrayrecord(path: Path) -> Source:
    try:
        meta = json.loads((path / METADATA).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path / METADATA}: {e}") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a data set written by python -m scaling.data.convert "
                        f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    splits = {}
    for split, info in meta["splits"].items():
        paths = [str(path / f) for f in info["shards"]]
        gone = [p for p in paths if not os.path.exists(p)]
        if gone:
            raise UserError(f"ArrayRecord shard not found: {gone[0]}")
        splits[split] = ArrayRecordRecords(paths)
        if len(splits[split]) != info["count"]:
            raise UserError(f"{path}: {split} holds {len(splits[split])} records, metadata says {info['count']}")
    return Source("arrayrecord", str(path), tuple(meta["class_names"]), splits, meta["content_hash"], meta)


def _open_tfds(name: str) -> Source:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise UserError("TFDS is not installed: `pip install 'vision-scaling[tfds]'`, or give a local "
                        "<split>/<class>/<file> folder, ZIP or converted ArrayRecord folder") from None
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about absent folders: the error says it once
    data_dir = os.environ.get("TFDS_DATA_DIR")
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
        if not builder.is_prepared():
            raise FileNotFoundError(f"not prepared in {builder.data_dir}")
        splits = {s: TfdsRecords(name, s, data_dir) for s in SPLITS}
        label = builder.info.features["label"]
        shape = tuple(builder.info.features["image"].shape)
    except Exception as e:  # TFDS raises many kinds; all mean "not available offline"
        raise UserError(f"TFDS data set {name!r} is not available offline ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); prepare it with TFDS_DATA_DIR set, "
                        "or give a local folder") from None
    meta = {"image_shape": [d or 0 for d in shape]}
    key = f"tfds-{name}-{builder.info.version}"
    return Source("tfds", name, tuple(label.names), splits, key, meta)
