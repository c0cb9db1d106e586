"""Throughput of the streaming loader: ``python -m scaling.data.loader_bench DATA``.

Reads training batches of ``DATA`` (a folder, ZIP, converted ArrayRecord
folder or ``tfds``) through ``scaling.data.stream`` exactly as training would,
and reports images/s after the first batch (worker start-up is reported
apart), with the host memory (RSS of this process and its workers) at the
start and the end. ``measure`` is the function the benchmark and the
calibration call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from scaling.errors import UserError
from scaling.platform.entrypoint import entrypoint


def rss_bytes(include_children: bool = True) -> int:
    """Resident memory of this process (and its child processes), in bytes."""
    try:
        import psutil
    except ImportError:  # Linux fallback: this process only
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))
    me = psutil.Process()
    procs = [me] + (me.children(recursive=True) if include_children else [])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(data, *, image_size: int = 64, batch_size: int = 256, steps: int = 40, workers: int | None = None,
            threads: int | None = None, prefetch: int = 2, seed: int = 0, crop_scale=(0.08, 1.0)) -> dict:
    """Images/s of ``data.train_loader`` (a ``StreamData``) over ``steps`` batches after the first."""
    from scaling.data.preprocess import CropConfig

    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    crop = CropConfig(image_size, image_size, scale=tuple(crop_scale))
    loader = data.train_loader(batch_size=batch_size, seed=seed, crop=crop, workers=workers, threads=threads,
                               prefetch=prefetch, num_steps=steps + 1)
    return {**_time(loader, steps), "source_kind": data.source.kind, "train_size": data.train_size,
            "image_size": image_size}


def measure_source(source, steps: int = 20) -> dict:
    """Images/s of a streaming batch source's own loader (the run's crops, batch, seed and
    process slice): what ``scaling.measure`` reports beside the step's images/s."""
    if steps < 1:
        raise UserError(f"loader steps must be at least 1, got {steps}")
    return {**_time(source.loader(0, steps + 1), steps), "source_kind": source.data.source.kind,
            "train_size": source.train_size, "image_size": source.image_size}


def _time(loader, steps: int) -> dict:
    batch_size = loader.local_batch
    rss_start = rss_bytes()
    t0 = time.monotonic()
    with loader:
        next(loader)
        t1 = time.monotonic()
        rss_warm = rss_last = rss_peak = rss_bytes()
        for i, _ in enumerate(loader, 1):
            if i % 10 == 0 or i == steps:  # with the workers, while they run
                rss_last = rss_bytes()
                rss_peak = max(rss_peak, rss_last)
        t2 = time.monotonic()
    return dict(
        images_per_second=steps * batch_size / (t2 - t1),
        first_batch_seconds=t1 - t0,
        steps=steps, batch_size=batch_size, workers=loader.workers, threads=loader.threads,
        rss_start_mib=rss_start / 2**20, rss_warm_mib=rss_warm / 2**20, rss_end_mib=rss_last / 2**20,
        rss_peak_mib=rss_peak / 2**20, cpu_count=os.cpu_count(),
    )


@entrypoint
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scaling.data.loader_bench",
                                description="Images/s of the streaming input pipeline on this machine.")
    p.add_argument("data", help="image folder, ZIP, converted ArrayRecord folder, or 'tfds'")
    p.add_argument("--dataset", default="cifar10", help="data set name (TFDS name with 'tfds'; default %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="random-resized crop size (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40, help="batches timed after the first (default %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="decode processes (default: none up to 4 cores, else one per core)")
    p.add_argument("--threads", type=int, default=None,
                   help="decode threads per process (default: one per core without workers, else 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    from scaling.data.stream import open_stream

    data = open_stream(args.dataset, args.data)
    r = measure(data, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                workers=args.workers, threads=args.threads)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"{r['images_per_second']:.0f} images/s ({r['source_kind']}, {args.image_size} px random-resized crops, "
              f"batch {args.batch_size}, {r['workers']} workers x {r['threads']} threads, {r['cpu_count']} cores); "
              f"first batch {r['first_batch_seconds']:.1f} s; RSS with workers {r['rss_warm_mib']:.0f} MiB after the "
              f"first batch, {r['rss_end_mib']:.0f} MiB at the end (peak {r['rss_peak_mib']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
