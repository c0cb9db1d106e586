"""Does compiling in a process slow down the XLA:CPU programs it runs? (It does.)

Times the trainer's train step of ``nfnet-f0-w0.125`` (batch 128, real
CIFAR-10) loaded from the persistent compilation cache, in a fresh process,
in one of three arrangements:

- ``cached``: every program loaded from the cache (what the trainer does now);
- ``late``: the parameter initialiser compiled (a cache miss, forced) *after*
  the train step was loaded: what the trainer did before 2026-12-02 in the
  process it restarted into;
- ``early``: the same compile, *before* the train step is loaded.

On the 2-core CPU (2026-12-02, ms per step, three 40-step windows each):
cached 203.6/205.2/202.7, late 229.4/232.6/236.7, early 208.8/208.7/211.0
(an earlier harness: cached 192-196, late 218-224). So a compile after the
step is loaded costs ~14%, one before it ~2%. ``scaling.train`` therefore compiles
every program before it runs any, and restarts once after a fresh compile.

    SCALING_CIFAR10=PATH/cifar10-jpeg.zip python experiments/probe_late_compile.py {cached,late,early}

Run it alone on the machine; the first run of a mode on a cold cache compiles
the train step, restarts once and then measures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from scaling import optim, runtime
from scaling.platform import malloc, restart
from scaling.platform.entrypoint import entrypoint
from scaling import steps as steps_lib
from scaling.config import TrainConfig, resolve
from scaling.data import load
from scaling.data.pipeline import ExampleStream

MODEL, BATCH = "nfnet-f0-w0.125", 128


@entrypoint
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["cached", "late", "early"])
    ap.add_argument("--windows", type=int, default=3, help="40-step windows to time")
    args = ap.parse_args(argv)
    runtime.setup()

    data = load("cifar10")
    mean, std = data.channel_stats()
    cfg = resolve(TrainConfig(model=MODEL, batch_size=BATCH, epochs=18, lr=0.6, weight_decay=1e-4,
                              model_kwargs={"stem_widths": [8, 8, 8]}))
    parts = steps_lib.build(cfg, data.num_classes, data.image_size, mean, std)
    lr = optim.schedule_args(cfg, 6329)
    images = jax.device_put(data.train_images, parts.replicated)
    labels = jax.device_put(data.train_labels, parts.replicated)
    init_key, step_key = jax.random.split(jax.random.key(1))
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parts.replicated),
                            jax.eval_shape(parts.init_state, init_key))
    idx_spec = jax.ShapeDtypeStruct((BATCH,), np.int32, sharding=parts.batch_sharded)

    def init_state():
        if args.mode == "cached":
            return parts.init_state(init_key)
        # A program no cache holds (a random constant in it), so it compiles here.
        salt = random.random()
        return jax.jit(lambda k: (parts.init_state(k), jnp.float32(salt)))(init_key)[0]

    state = init_state() if args.mode == "early" else None
    with runtime.CacheMisses() as misses:
        train_step = parts.train_step.lower(abstract, images, labels, idx_spec, step_key, lr).compile()
    if misses.count:  # the step itself was compiled here: time it in a process that loads it
        restart.restart_clean("train step compiled in this process: restarting to load it from the cache")
    if state is None:
        state = init_state()

    stream = ExampleStream(data.train_size, BATCH, 1)
    step = 0

    def window(n: int) -> float:
        nonlocal state, step
        t = time.perf_counter()
        for _ in range(n):
            idx = jax.device_put(stream.indices(step), parts.batch_sharded)
            state, _ = train_step(state, images, labels, idx, step_key, lr)
            step += 1
        jax.block_until_ready(state)
        return (time.perf_counter() - t) / n * 1e3

    window(5)
    times = [window(40) for _ in range(args.windows)]
    print(f"{args.mode}: {', '.join(f'{t:.1f}' for t in times)} ms/step "
          f"(median {statistics.median(times):.1f}; {malloc.describe()})")


if __name__ == "__main__":
    sys.exit(main())
