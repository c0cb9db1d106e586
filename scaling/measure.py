"""Compile and time one training config's programs on this machine.

``measure_config`` sets up and compiles through the trainer's own
``scaling.programs.Programs``, so what it times is the program a run of that
config trains (same fingerprint); it is ``python -m scaling.bench`` and the
sweep's calibration. The input pipeline is timed on its own, so its share of
the step time is a measured number.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from scaling.config import TrainConfig, check_length, resolve
from scaling.errors import UserError


def timed(fn, repeats: int) -> list[float]:
    import jax

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


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
    step_times = timed(one_step, steps)
    step_seconds = statistics.median(step_times)

    # The input pipeline alone: host index computation + on-device gather/augment.
    mean, std = data.channel_stats()
    batch_fn = jax.jit(make_batch_fn(mean, std, size, cfg.augment))
    batch_fn(images, labels, idx, key)
    data_device = statistics.median(timed(lambda: batch_fn(images, labels, idx, key), max(steps, 3)))
    t = time.perf_counter()
    for s in range(50):
        jax.device_put(stream.indices(s), shard)
    data_host = (time.perf_counter() - t) / 50

    eb = progs.eval_batch(data.val_size)
    eval_step = progs.evals[eb]
    xe, ye = jax.device_put(data.val_images[:eb], shard), jax.device_put(data.val_labels[:eb], shard)
    mask = jax.device_put(np.ones(eb, np.float32), shard)
    eval_step(state["params"], xe, ye, mask)
    eval_seconds = statistics.median(timed(lambda: eval_step(state["params"], xe, ye, mask), 2))

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
    return 2 * n**3 / min(timed(lambda: f(a), repeats))
