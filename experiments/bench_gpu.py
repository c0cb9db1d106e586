"""GPU throughput and MFU of the ImageNet-size models, and the grouped-conv choice on GPU.

Times the trainer's exact train step (``scaling.measure.measure``: forward,
backward, optimizer, on-device augmentation) for ViT-S/16 and ViT-B/16 at 224
px and NFNet-F0 at its 192 px training resolution, in bf16 and fp32, and times
NFNet with each grouped-conv lowering (``native`` = ``feature_group_count``,
``split`` = one dense conv per group) to show which one ``conv_impl="auto"``
should pick on this backend. Synthetic images (throughput does not depend on
pixel values). Prints one line per case and writes JSON when ``--out`` is given.

    python experiments/bench_gpu.py [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scaling.measure import measure
from scaling.platform.entrypoint import entrypoint

CASES = [
    # model, image px, batch, dtype, model kwargs
    ("vit-s/16", 224, 256, "bfloat16", {}),
    ("vit-b/16", 224, 256, "bfloat16", {}),
    ("vit-b/16", 224, 256, "bfloat16", {"scan": True}),
    ("vit-b/16", 224, 128, "float32", {}),
    ("nfnet-f0", 192, 128, "bfloat16", {"conv_impl": "native"}),
    ("nfnet-f0", 192, 128, "bfloat16", {"conv_impl": "split"}),
    ("nfnet-f0", 192, 128, "float32", {"conv_impl": "native"}),
    ("nfnet-f0-w0.125", 32, 128, "float32", {"conv_impl": "native"}),
    ("nfnet-f0-w0.125", 32, 128, "float32", {"conv_impl": "split"}),
    ("vit-c1/4", 32, 128, "float32", {}),
]


@entrypoint
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny batches, CPU smoke test of the script")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    for model, px, batch, dtype, kw in CASES:
        if args.quick:
            if px > 64:
                continue
            batch = 8
        t = time.monotonic()
        r = measure(model, batch, px, "cifar10", args.steps, dtype, "synthetic", model_kwargs=kw)
        r["model_kwargs"] = kw
        rows.append(r)
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(
            f"{model:16s} {px:4d}px b{batch:<4d} {dtype:9s} {json.dumps(kw):24s} "
            f"{r['step_seconds'] * 1e3:8.2f} ms/step {r['images_per_second']:9.0f} img/s "
            f"{r['achieved_flops_per_second'] / 1e12:7.1f} TFLOP/s  MFU {mfu:>6s}  "
            f"xla/analytic {r['flops_per_example_xla'] / r['flops_per_example'] if r['flops_per_example_xla'] else float('nan'):.3f}  "
            f"compile {r['train_compile_seconds']:.0f}s  ({time.monotonic() - t:.0f}s) on {r['device_kind']}",
            flush=True,
        )
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
