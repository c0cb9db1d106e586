"""Which input pipeline a run uses: the whole data set on the device, or streaming.

The in-memory path (``scaling.data.pipeline``) is fast and exact but needs
every image decoded in memory at one size; streaming (``scaling.data.stream``)
reads any size from disk. ``choose_pipeline`` is the rule, a pure function.
"""

from __future__ import annotations

import dataclasses
import os

from scaling.data.records import Summary
from scaling.errors import UserError

PIPELINES = ("memory", "stream")
DEFAULT_CAP_FRACTION = 0.25  # of physical memory, when no cap is given


def default_memory_cap() -> int:
    """A quarter of this machine's physical memory, in bytes (8 GiB if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * DEFAULT_CAP_FRACTION)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclasses.dataclass(frozen=True)
class Choice:
    pipeline: str  # "memory" | "stream"
    reason: str  # one line, for --help, logs and the run record

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def choose_pipeline(summary: Summary, memory_cap_bytes: int, forced: str | None = None) -> Choice:
    """``forced`` ("memory" | "stream") wins, except that the in-memory path cannot
    hold images of different sizes. Otherwise: memory when the decoded data set
    is known to fit ``memory_cap_bytes`` and all images share one size; else stream."""
    if forced is not None and forced not in PIPELINES:
        raise UserError(f"--data-pipeline must be one of {', '.join(PIPELINES)}, got {forced!r}")
    if memory_cap_bytes < 0:
        raise UserError(f"the memory cap must be non-negative, got {memory_cap_bytes} bytes")
    size = "unknown size" if summary.decoded_bytes is None else _gib(summary.decoded_bytes)
    if forced == "stream":
        return Choice("stream", "forced by --data-pipeline stream")
    if forced == "memory":
        if summary.shape is None:
            raise UserError("--data-pipeline memory needs images of one size; these differ (or are unknown): "
                            "use --data-pipeline stream")
        return Choice("memory", f"forced by --data-pipeline memory ({size} decoded)")
    if summary.shape is None:
        return Choice("stream", f"images differ in size ({summary.num_images} images, {size} decoded)")
    if summary.decoded_bytes is None or summary.decoded_bytes > memory_cap_bytes:
        return Choice("stream", f"{summary.num_images} images, {size} decoded, above the memory cap "
                                f"{_gib(memory_cap_bytes)}")
    h, w, c = summary.shape
    return Choice("memory", f"{summary.num_images} images of {h}x{w}x{c}, {size} decoded, within the memory cap "
                            f"{_gib(memory_cap_bytes)}")


def memory_cap_bytes(cap_gb: float | None) -> int:
    """``--memory-cap-gb`` in bytes; None: ``default_memory_cap()``."""
    return default_memory_cap() if cap_gb is None else int(cap_gb * 2**30)


def summarize(name: str, source: str) -> Summary | None:
    """What the rule needs to know about ``source`` (validated; one-line errors), or None
    where the in-memory path is the only one (``synthetic``) or TFDS has not prepared it
    yet (the in-memory reader downloads it). Folders and ZIPs read image headers once;
    the summary is cached beside the decoded arrays, keyed by the content hash."""
    import json

    from scaling.data import records
    from scaling.paths import atomic_write_json, cache_dir

    if source == "synthetic":
        return None
    if source == "tfds":
        try:
            return records.open_source("tfds", name).summary()
        except UserError:
            if not _tfds_known(name):
                raise
            return None
    src = records.open_source(source, name)
    if src.kind == "arrayrecord":
        return src.summary()
    path = cache_dir() / "datasets" / f"{name}-{src.content_hash}.summary.json"
    try:
        d = json.loads(path.read_text())
        return Summary(d["num_images"], d["decoded_bytes"], tuple(d["shape"]) if d["shape"] else None)
    except (OSError, ValueError, KeyError):
        pass
    from scaling.data import cache

    decoded = cache.load(name, src.content_hash)  # decoded before: one size, known bytes
    if decoded is not None:
        arrays = [x for x, _ in decoded[0].values()]
        summary = Summary(sum(len(x) for x in arrays), sum(x.nbytes for x in arrays), tuple(arrays[0].shape[1:]))
    else:
        summary = src.summary()
    atomic_write_json(path, summary.to_json())
    return summary


def _tfds_known(name: str) -> bool:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return False
    return name in tfds.list_builders(with_community_datasets=False)


def choose(cfg) -> Choice:
    """The pipeline of a resolved ``TrainConfig`` (``data_pipeline``, ``memory_cap_gb``) and why."""
    from scaling.data import default_source

    source = cfg.data_source or default_source(cfg.dataset)
    forced = None if cfg.data_pipeline == "auto" else cfg.data_pipeline
    summary = summarize(cfg.dataset, source)
    if summary is None:
        if forced == "stream" and source == "synthetic":
            raise UserError("--data synthetic has no files to stream: use --data-pipeline memory or auto")
        why = "synthetic data" if source == "synthetic" else f"TFDS {cfg.dataset!r} not prepared yet (downloaded into memory)"
        return Choice("stream", "forced by --data-pipeline stream") if forced == "stream" else \
            Choice("memory", f"forced by --data-pipeline memory ({why})" if forced else why)
    return choose_pipeline(summary, memory_cap_bytes(cfg.memory_cap_gb), forced)
