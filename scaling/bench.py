"""Throughput, FLOPs and MFU of one model on this machine: ``python -m scaling.bench``.

The measurement itself is ``scaling.measure.measure_config`` (the trainer's own
programs, also the sweep's calibration); this module is its command line.
"""

from __future__ import annotations

import json
import sys

from scaling.config import parse_crop_scale
from scaling.errors import OneLineParser, UserError
from scaling.measure import measure, measure_matmul_peak
from scaling.platform import malloc
from scaling.platform.entrypoint import entrypoint


@entrypoint
def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m scaling.bench",
        description="Time one model's train step on this machine; report FLOPs, throughput, MFU "
        "and the input pipeline's share of step time.",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data", dest="data_source", help="ZIP/folder path, 'tfds' or 'synthetic'")
    p.add_argument("--steps", type=int, default=10, help="timed steps (after one warm-up)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict passed to the model builder")
    p.add_argument("--data-pipeline", choices=["auto", "memory", "stream"], default="auto",
                   help="input pipeline, chosen as by scaling.train (auto: memory when the data fits "
                        "--memory-cap-gb at one image size, else stream)")
    p.add_argument("--memory-cap-gb", type=float)
    p.add_argument("--eval-image-size", type=int, help="streaming: eval resolution (default: the train one)")
    p.add_argument("--crop-scale", type=parse_crop_scale, metavar="MIN,MAX", help="streaming: random-resized crop area")
    p.add_argument("--measure-peak", action="store_true", help="also measure this device's fp32 matmul peak and report MFU against it")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    r = measure(args.model, args.batch_size, args.image_size, args.dataset, args.steps, args.dtype, args.data_source,
                model_kwargs=args.model_kwargs, data_pipeline=args.data_pipeline, memory_cap_gb=args.memory_cap_gb,
                eval_image_size=args.eval_image_size, crop_scale=args.crop_scale)
    if args.measure_peak:
        r["measured_peak_flops"] = measure_matmul_peak()
        r["mfu_vs_measured_peak"] = r["achieved_flops_per_second"] / (r["measured_peak_flops"] * r["device_count"])
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    xla = r["flops_per_example_xla"]
    print(f"{r['model']} ({r['family']}), {r['params']:,} params, batch {r['batch_size']} at {r['image_size']}px, "
          f"{r['compute_dtype']}, {r['device_count']} x {r['device_kind']}; {malloc.describe()}")
    print(f"  data pipeline    {r['data_pipeline']} ({r['data_pipeline_reason']})")
    print(f"  compile          {r['compile_seconds']:.2f} s")
    print(f"  train step       {r['step_seconds'] * 1e3:.1f} ms  ({r['images_per_second']:.0f} images/s)")
    if r["loader_images_per_second"]:
        ld = r["loader"]
        print(f"  loader           {r['loader_images_per_second']:.0f} images/s ({ld['source_kind']}, "
              f"{ld['workers']} workers x {ld['threads']} threads); a run goes at "
              f"{r['bound_images_per_second']:.0f} images/s (the slower)")
    print(f"  input pipeline   {(r['data_seconds_device'] + r['data_seconds_host']) * 1e3:.2f} ms "
          f"(device {r['data_seconds_device'] * 1e3:.2f} + host {r['data_seconds_host'] * 1e3:.3f}) "
          f"= {r['pipeline_share']:.2%} of step time")
    print(f"  eval             {r['eval_seconds_per_example'] * 1e6:.1f} us/example")
    print(f"  FLOPs/example    {r['flops_per_example'] / 1e9:.4f} GFLOP analytic (2xMAC, fwd+bwd)"
          + (f", {xla / 1e9:.4f} by XLA cost analysis ({xla / r['flops_per_example']:.3f}x)" if xla else ""))
    print(f"  achieved         {r['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s")
    if r["mfu"] is not None:
        print(f"  MFU              {r['mfu']:.1%} of {r['peak_flops_per_device'] / 1e12:.0f} TFLOP/s dense bf16 peak")
    elif "measured_peak_flops" in r:
        print(f"  MFU              {r['mfu_vs_measured_peak']:.1%} of the measured fp32 matmul peak "
              f"({r['measured_peak_flops'] / 1e9:.0f} GFLOP/s)")
    else:
        print("  MFU              unknown: no published peak for this device (try --measure-peak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
