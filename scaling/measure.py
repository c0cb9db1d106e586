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
    **fields,
) -> dict:
    """Compile and time one model's train step, eval step and input pipeline (the recipe's config;
    ``fields``: other ``TrainConfig`` fields, e.g. ``data_pipeline``, ``crop_scale``)."""
    return measure_config(TrainConfig(model=model, dataset=dataset, data_source=data_source, batch_size=batch_size,
                                      image_size=image_size, compute_dtype=compute_dtype,
                                      model_kwargs=model_kwargs or {}, **fields), steps=steps)


def measure_config(cfg: TrainConfig, steps: int = 5, loader_steps: int = 20) -> dict:
    """Compile and time the train step, eval step and input pipeline of exactly ``cfg``
    (a trial's whole config: overrides and model kwargs included), through the
    trainer's own ``Programs`` and batch source. Streaming: the loader's images/s
    (``loader_images_per_second``, over ``loader_steps`` batches) beside the step's;
    a run goes at the slower of the two (``bound_images_per_second``)."""
    t_start = time.monotonic()
    from scaling import runtime

    runtime.setup()
    import jax

    from scaling import compute, steps as steps_lib
    from scaling.data import batch_sources, selection
    from scaling.models import registry
    from scaling.programs import Programs

    if steps < 1:
        raise UserError(f"--steps must be positive, got {steps}")
    cfg = resolve(cfg)
    spec = registry.get(cfg.model)
    choice = selection.choose(cfg)
    source = batch_sources.open_source(cfg, choice)
    devices = compute.device_info()
    check_length(cfg, source.train_size, devices["device_count"])
    progs = Programs(cfg, source, devices["device_count"], total_steps=1000).compile()
    size, batch_size = progs.image_size, cfg.batch_size
    key, lr_args = progs.step_key, progs.lr_args
    shard = progs.parts.batch_sharded
    batches = source.train_batches(0, 1, shard)
    batch, _ = next(batches)
    batches.close()
    train_step = progs.train
    flops_xla = compute.xla_flops(train_step)
    state = progs.init(progs.init_key)

    def one_step():
        nonlocal state
        state, m = train_step(state, *batch, key, lr_args)
        return m["loss"]

    one_step()  # warm-up
    step_times = timed(one_step, steps)
    step_seconds = statistics.median(step_times)
    ips = batch_size / step_seconds

    # The input pipeline alone: on-device batch function (gather/augment/standardise) + host side.
    mean, std = source.channel_stats()
    batch_fn = jax.jit(source.batch_fn(mean, std, size, cfg.augment, jax.numpy.float32))
    batch_fn(batch, key)
    data_device = statistics.median(timed(lambda: batch_fn(batch, key), max(steps, 3)))
    loader = None
    if source.pipeline == "memory":
        t = time.perf_counter()
        for _, (b, _) in zip(range(50), source.train_batches(0, 50, shard)):
            pass
        data_host = (time.perf_counter() - t) / 50
    else:
        from scaling.data import loader_bench

        loader = loader_bench.measure_source(source, steps=loader_steps)
        data_host = batch_size / loader["images_per_second"]

    from scaling.data.feed import to_device

    n_val = source.eval_shape("val")[0]
    eb = progs.eval_batch(n_val)
    eval_step = progs.evals[eb]
    eb_batch = to_device(next(iter(source.eval_batches("val", eb))), shard)
    xe, ye, mask = eb_batch["image"], eb_batch["label"], eb_batch["mask"]
    eval_step(state["params"], xe, ye, mask)
    eval_seconds = statistics.median(timed(lambda: eval_step(state["params"], xe, ye, mask), 2))
    source.close()

    flops_per_example = compute.train_flops_per_example(spec, size, source.num_classes)
    loader_ips = loader["images_per_second"] if loader else None
    bound = min(ips, loader_ips) if loader_ips else ips
    return dict(
        model=cfg.model,
        family=spec.family,
        params=steps_lib.count_params(state["params"]),
        batch_size=batch_size,
        image_size=size,
        compute_dtype=cfg.compute_dtype,
        data_pipeline=source.pipeline,
        data_pipeline_reason=choice.reason,
        program_fingerprint=progs.fingerprint,
        compile_seconds=progs.compile_seconds,
        train_compile_seconds=progs.seconds["train"],
        step_seconds=step_seconds,
        step_seconds_all=step_times,
        images_per_second=ips,
        loader_images_per_second=loader_ips,
        loader=loader,
        bound_images_per_second=bound,
        bound_step_seconds=batch_size / bound,  # what a step of a run costs: the slower of step and loader
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
