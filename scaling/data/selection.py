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
