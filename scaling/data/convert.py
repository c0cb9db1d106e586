"""Convert an image folder or ZIP to ArrayRecord shards: ``python -m scaling.data.convert SRC DST``.

``SRC`` holds ``<split>/<class>/<file>`` images (``train`` and ``test``) of any
size and format. ``DST`` becomes a folder of ``<split>-NNNNN-of-NNNNN.array_record``
shards plus ``metadata.json`` (class names, counts, sizes, a content hash),
which ``--data DST`` then reads by random access, without walking a directory
tree every epoch. Images keep their encoded bytes; each one is decoded once
here, so an unreadable file is found now rather than hours into a run.

Unreadable images: by default the conversion stops with a one-line error
naming the file (a silent skip would change the data set, its size and so its
epochs); ``--skip-corrupt`` skips them instead, and counts and names them in
``metadata.json``. ``DST`` is written atomically: it appears complete or not
at all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from scaling.data import records as rec
from scaling.data.preprocess import decode_rgb
from scaling.errors import UserError
from scaling.platform.entrypoint import entrypoint

DEFAULT_SHARD_SIZE = 5000  # records per shard (about 0.5 GB of ImageNet JPEGs)


def _read_all(src: Path, names: list[str]):
    """Yield (name, bytes) in order, from a folder or a ZIP (one handle: ZIP reads are not thread-safe)."""
    if src.is_file():
        import zipfile

        with zipfile.ZipFile(src) as zf:
            for n in names:
                yield n, zf.read(n)
    else:
        for n in names:
            yield n, (src / n).read_bytes()


def _checked(pool, items, chunk: int = 256):
    """``_check`` over ``items`` in order, ``chunk`` at a time (Executor.map alone would read everything)."""
    buf = []
    for item in items:
        buf.append(item)
        if len(buf) == chunk:
            yield from pool.map(_check, buf)
            buf = []
    yield from pool.map(_check, buf)


def _check(item):
    name, data = item
    try:
        return name, data, decode_rgb(data, name).shape
    except UserError as e:
        return name, data, e


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, shard_size: int = DEFAULT_SHARD_SIZE,
            skip_corrupt: bool = False, progress: bool = True, threads: int | None = None) -> dict:
    """Write ``src`` as ArrayRecord shards in ``dst``; return the metadata written."""
    from array_record.python.array_record_module import ArrayRecordWriter
    from tqdm import tqdm

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if shard_size < 1:
        raise UserError(f"--shard-size must be at least 1, got {shard_size}")
    if not src.exists():
        raise UserError(f"data path not found: {src}")
    if dst.exists():
        raise UserError(f"{dst} already exists: give a new destination (or delete it)")
    if not dst.parent.is_dir():
        raise UserError(f"destination folder {dst.parent} does not exist")
    listing, class_names = rec.list_folder(src)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    total = sum(len(v) for v in listing.values())
    digest = hashlib.sha256()
    meta = {"format": rec.FORMAT, "source": str(src), "class_names": list(class_names), "splits": {},
            "skipped": []}
    decoded_bytes, shapes = 0, set()
    bar = tqdm(total=total, unit="img", desc=f"convert {src.name}", disable=not progress, file=sys.stderr)
    pool = concurrent.futures.ThreadPoolExecutor(threads or os.cpu_count() or 1)  # PIL decodes without the GIL
    try:
        tmp.mkdir()
        for split, items in listing.items():
            labels = dict(items)
            names = [n for n, _ in items]
            kept = 0
            writer, shard_files = None, []
            for name, data, shape in _checked(pool, _read_all(src, names)):
                bar.update(1)
                if isinstance(shape, UserError):
                    if not skip_corrupt:
                        raise UserError(f"{shape} (pass --skip-corrupt to skip unreadable images)")
                    meta["skipped"].append(name)
                    continue
                if kept % shard_size == 0:
                    if writer is not None:
                        writer.close()
                    shard_files.append(f"{split}-{len(shard_files):05d}")
                    writer = ArrayRecordWriter(str(tmp / shard_files[-1]), "group_size:1")
                record = rec.encode_record(data, labels[name], name)
                writer.write(record)
                digest.update(len(record).to_bytes(8, "little") + record)
                decoded_bytes += shape[0] * shape[1] * 3
                shapes.add((shape[0], shape[1], 3))
                kept += 1
            if writer is not None:
                writer.close()
            if kept == 0:
                raise UserError(f"{src}: no readable {split} images")
            final = []
            for i, stem in enumerate(shard_files):  # name shards NNNNN-of-NNNNN once their number is known
                name = f"{stem}-of-{len(shard_files):05d}.array_record"
                os.replace(tmp / stem, tmp / name)
                final.append(name)
            meta["splits"][split] = {"count": kept, "shards": final}
        meta["summary"] = rec.Summary(total - len(meta["skipped"]), decoded_bytes,
                                      next(iter(shapes)) if len(shapes) == 1 else None).to_json()
        meta["content_hash"] = digest.hexdigest()[:16]
        (tmp / rec.METADATA).write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(tmp, dst)  # atomic: dst appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return meta


@entrypoint
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scaling.data.convert",
        description="Convert a <split>/<class>/<file> image folder or ZIP (train and test splits) to "
                    "ArrayRecord shards for the streaming input pipeline (--data DST).",
    )
    p.add_argument("src", help="image folder or ZIP of <split>/<class>/<file> images, any size and format")
    p.add_argument("dst", help="new folder to write (must not exist); written atomically")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="records per shard (default %(default)s)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip unreadable images (counted and named in metadata.json) instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    meta = convert(args.src, args.dst, shard_size=args.shard_size, skip_corrupt=args.skip_corrupt,
                   progress=not args.quiet)
    counts = ", ".join(f"{s} {v['count']}" for s, v in meta["splits"].items())
    skipped = f"; skipped {len(meta['skipped'])} unreadable (first: {meta['skipped'][0]})" if meta["skipped"] else ""
    print(f"wrote {args.dst}: {counts} images, {len(meta['class_names'])} classes{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
