"""Time loading CIFAR-10: a cold decode (cache emptied) and a warm load from the cache.

    python experiments/bench_data.py [--data PATH]

Uses a temporary cache directory so the user's cache is left alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("SCALING_CIFAR10", "../shared/datasets/cifar10/cifar10-jpeg.zip"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SCALING_CACHE_DIR"] = cache
        import scaling.data as data

        t = time.perf_counter()
        ds = data.load("cifar10", args.data)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        data.load("cifar10", args.data)
        warm = time.perf_counter() - t
    print(f"cifar10: {ds.train_size} train / {ds.val_size} val / {ds.test_size} test images")
    print(f"  first load (decode + cache write): {cold:.2f} s")
    print(f"  second load (from cache):          {warm:.2f} s   (goal: < 2 s)")


if __name__ == "__main__":
    main()
