"""Throughput, FLOPs and MFU of one model on this machine: ``python -m scaling.bench``.

``measure`` is also the sweep's calibration: it compiles and times the exact
train step the trainer runs (built by ``scaling.steps``), the evaluation step,
and the input pipeline on its own, so the pipeline's share of step time is a
measured number.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np

from scaling.config import TrainConfig, check_length, resolve
from scaling.errors import OneLineParser, UserError
from scaling.platform import malloc
from scaling.platform.entrypoint import entrypoint


def _timed(fn, repeats: int) -> list[float]:
    import jax

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


def interleaved_medians(steps: dict, rounds: int, warmup: int = 2, block: int = 4) -> dict:
    """Median seconds per step of each callable, run in alternating blocks.

    For comparing frameworks in one process (``experiments/bench_*_timm.py``).
    Alternating the contenders makes the ratio robust to other load on a
    shared machine (each sees the same background on average). Each turn runs
    one untimed step, then ``block`` timed ones: the first step after the
    other framework ran is slow for reasons outside either (thread wake-up,
    memory re-faulted after the other's allocations). Switching on every step
    measured ours at 7.1 s/step against 4.7-4.9 s in consecutive steps.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(max(1, -(-rounds // block))):
        for name, step in steps.items():
            step()
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def restart_if_compiled(compiled: bool) -> None:
    """For benchmark CLIs: if this process compiled the step itself (a
    persistent-cache miss, see ``scaling.runtime.CacheMisses``), restart once
    so that the step is timed as the trainer runs it, loaded from the cache
    (``scaling.platform.restart`` says why that is faster on XLA:CPU)."""
    import jax

    if compiled and jax.default_backend() == "cpu":
        from scaling.platform import restart

        restart.restart_clean("compiled in this process: restarting once to time the cached program")


class ChildStep:
    """A training step that runs in a child process, called like a local one.

    For comparing against another framework fairly: the child starts with the
    platform's default malloc (``scaling.platform.malloc.default_environ``), so PyTorch does
    not run under the settings tuned for XLA:CPU (measured slower for it:
    timm's NFNet-F0 step 1727 ms default vs 1822 ms tuned, in one session).
    ``argv`` must start a program that calls ``serve_steps``.
    """

    def __init__(self, argv: list[str], env: dict | None = None):
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self) -> str:
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"benchmark child {self._proc.args!r} exited with status {self._proc.wait()}")
            if line.startswith(_REPLY):
                return line[len(_REPLY) :].strip()
            sys.stderr.write(line)  # the child's own output, passed on

    def __call__(self) -> str:
        self._proc.stdin.write("step\n")
        self._proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


_REPLY = "@scaling.bench.reply "


def serve_steps(step, info: str = "ready") -> None:
    """The child's side of ``ChildStep``: announce ``info``, then run ``step`` once per request."""
    print(_REPLY + info.replace("\n", " "), flush=True)
    for _ in sys.stdin:
        print(f"{_REPLY}{step()}", flush=True)


def measure(
    model: str,
    batch_size: int,
    image_size: int | None = None,
    dataset: str = "cifar10",
    steps: int = 5,
    compute_dtype: str = "float32",
    data_source: str | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Compile and time one model's train step, eval step and input pipeline (the recipe's config)."""
    return measure_config(TrainConfig(model=model, dataset=dataset, data_source=data_source, batch_size=batch_size,
                                      image_size=image_size, compute_dtype=compute_dtype,
                                      model_kwargs=model_kwargs or {}), steps=steps)


def measure_config(cfg: TrainConfig, steps: int = 5) -> dict:
    """Compile and time the train step, eval step and input pipeline of exactly ``cfg``
    (a trial's whole config: overrides and model kwargs included), through the
    trainer's own ``Programs``."""
    t_start = time.monotonic()
    from scaling import runtime

    runtime.setup()
    import jax

    from scaling import compute, steps as steps_lib
    from scaling.data import load
    from scaling.data.pipeline import ExampleStream, make_batch_fn
    from scaling.models import registry
    from scaling.programs import Programs

    if steps < 1:
        raise UserError(f"--steps must be positive, got {steps}")
    cfg = resolve(cfg)
    spec = registry.get(cfg.model)
    data = load(cfg.dataset, cfg.data_source, cfg.val_size)
    devices = compute.device_info()
    check_length(cfg, data.train_size, devices["device_count"])
    progs = Programs(cfg, data, devices["device_count"], total_steps=1000).compile()
    size, batch_size = progs.image_size, cfg.batch_size
    images, labels, key, lr_args = progs.images, progs.labels, progs.step_key, progs.lr_args
    shard = progs.parts.batch_sharded
    stream = ExampleStream(data.train_size, batch_size, cfg.seed)
    idx = jax.device_put(stream.indices(0), shard)
    train_step = progs.train
    flops_xla = compute.xla_flops(train_step)
    state = progs.init(progs.init_key)

    def one_step():
        nonlocal state
        state, m = train_step(state, images, labels, idx, key, lr_args)
        return m["loss"]

    one_step()  # warm-up
    step_times = _timed(one_step, steps)
    step_seconds = statistics.median(step_times)

    # The input pipeline alone: host index computation + on-device gather/augment.
    mean, std = data.channel_stats()
    batch_fn = jax.jit(make_batch_fn(mean, std, size, cfg.augment))
    batch_fn(images, labels, idx, key)
    data_device = statistics.median(_timed(lambda: batch_fn(images, labels, idx, key), max(steps, 3)))
    t = time.perf_counter()
    for s in range(50):
        jax.device_put(stream.indices(s), shard)
    data_host = (time.perf_counter() - t) / 50

    eb = progs.eval_batch(data.val_size)
    eval_step = progs.evals[eb]
    xe, ye = jax.device_put(data.val_images[:eb], shard), jax.device_put(data.val_labels[:eb], shard)
    mask = jax.device_put(np.ones(eb, np.float32), shard)
    eval_step(state["params"], xe, ye, mask)
    eval_seconds = statistics.median(_timed(lambda: eval_step(state["params"], xe, ye, mask), 2))

    flops_per_example = compute.train_flops_per_example(spec, size, data.num_classes)
    ips = batch_size / step_seconds
    return dict(
        model=cfg.model,
        family=spec.family,
        params=steps_lib.count_params(state["params"]),
        batch_size=batch_size,
        image_size=size,
        compute_dtype=cfg.compute_dtype,
        program_fingerprint=progs.fingerprint,
        compile_seconds=progs.compile_seconds,
        train_compile_seconds=progs.seconds["train"],
        step_seconds=step_seconds,
        step_seconds_all=step_times,
        images_per_second=ips,
        eval_seconds_per_example=eval_seconds / eb,
        data_seconds_device=data_device,
        data_seconds_host=data_host,
        pipeline_share=(data_device + data_host) / step_seconds,
        flops_per_example=flops_per_example,
        flops_per_example_xla=flops_xla / batch_size * devices["device_count"] if flops_xla else None,
        achieved_flops_per_second=flops_per_example * ips,
        mfu=compute.mfu(flops_per_example * ips, devices["device_kind"], devices["device_count"]),
        peak_flops_per_device=compute.peak_flops(devices["device_kind"]),
        **devices,
        wall_seconds=time.monotonic() - t_start,
    )


def measure_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of this machine's first device: a CPU's practical peak."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    return 2 * n**3 / min(_timed(lambda: f(a), repeats))


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
    p.add_argument("--measure-peak", action="store_true", help="also measure this device's fp32 matmul peak and report MFU against it")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    r = measure(args.model, args.batch_size, args.image_size, args.dataset, args.steps, args.dtype, args.data_source,
                model_kwargs=args.model_kwargs)
    if args.measure_peak:
        r["measured_peak_flops"] = measure_matmul_peak()
        r["mfu_vs_measured_peak"] = r["achieved_flops_per_second"] / (r["measured_peak_flops"] * r["device_count"])
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    xla = r["flops_per_example_xla"]
    print(f"{r['model']} ({r['family']}), {r['params']:,} params, batch {r['batch_size']} at {r['image_size']}px, "
          f"{r['compute_dtype']}, {r['device_count']} x {r['device_kind']}; {malloc.describe()}")
    print(f"  compile          {r['compile_seconds']:.2f} s")
    print(f"  train step       {r['step_seconds'] * 1e3:.1f} ms  ({r['images_per_second']:.0f} images/s)")
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
