"""Time one ViT training step (forward, backward, AdamW update): ours vs timm.

Model: ViT-S with patch 8 at 64x64 (64 patch tokens), batch 64, float32, on
whatever CPU this runs on. Ours is ``vit-s/8`` in the original configuration
(class token, learned posemb: the same network as timm's) with the project's
optimizer chain (global-norm clip 1.0 + AdamW, ``scaling.optim.build``). timm's
``vit_small_patch16_224(img_size=64, patch_size=8)`` runs with
``torch.optim.AdamW`` and ``clip_grad_norm_(1.0)`` on the same input, in the
same run, when torch and timm import, in alternating blocks of steps. Each
framework gets its own best allocator: ours runs with glibc malloc tuned for
XLA:CPU (``scaling.platform.malloc``), timm in a child process with the platform
default (``--timm-malloc tuned`` runs it in this process instead). Prints
median step times and the ratio. Run it alone on the machine
(``flock /tmp/scaling-cpu.lock ...``).

    python experiments/bench_vit_timm.py [--steps 20] [--batch 64] [--timm-malloc default|tuned]
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling import config, optim, runtime
from scaling.platform import malloc
from scaling.platform.entrypoint import entrypoint
from scaling.interleave import ChildStep, interleaved_medians, restart_if_compiled, serve_steps
from scaling.models import registry
from scaling.steps import compiler_options

IMAGE, PATCH, CLASSES = 64, 8, 1000


def ours_step(x: np.ndarray, y: np.ndarray, scan: bool):
    spec = registry.get(f"vit-s/{PATCH}")
    model = spec.build(CLASSES, IMAGE, pool="cls", posemb="learn", scan=scan)
    cfg = config.resolve(config.TrainConfig(model=spec.name, batch_size=len(x)))
    tx = optim.build(cfg, total_steps=1000)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, IMAGE, IMAGE, 3)))["params"]
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    # As the trainer: update in place, the family's CPU compiler options.
    @functools.partial(jax.jit, donate_argnums=(0, 1), compiler_options=compiler_options(spec))
    def train_step(p, s, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    xb, yb = jnp.asarray(x), jnp.asarray(y)
    state = [params, opt_state]

    def step():
        state[0], state[1], loss = train_step(state[0], state[1], xb, yb)
        loss.block_until_ready()

    with runtime.CacheMisses() as misses:
        step()  # compile (or load from the persistent cache) now
    step.compiled_here = misses.fresh_seconds > 0  # a restart would load it from the cache
    return step


def timm_step(x: np.ndarray, y: np.ndarray):
    try:
        import timm
        import torch
    except ImportError as e:
        print(f"timm comparison skipped: {e}")
        return None
    model = timm.create_model("vit_small_patch16_224", img_size=IMAGE, patch_size=PATCH,
                              num_classes=CLASSES)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1)
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yb = torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    step.info = f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}"
    return step


@entrypoint
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model (median reported)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--scan", action="store_true", help="also time ours with nn.scan over blocks")
    ap.add_argument("--timm-malloc", default="default", choices=["default", "tuned"],
                    help="timm in a child process with the platform's malloc (default), or in this one")
    ap.add_argument("--serve-timm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, IMAGE, IMAGE, 3), dtype=np.float32)
    y = rng.integers(0, CLASSES, args.batch).astype(np.int32)
    if args.serve_timm:  # the child side of --timm-malloc default
        step = timm_step(x, y)
        serve_steps(step, step.info)
        return

    flops = 3 * registry.get(f"vit-s/{PATCH}").forward_flops(IMAGE, CLASSES) * args.batch
    print(f"ViT-S/{PATCH} @ {IMAGE}px, batch {args.batch}, fp32, {jax.devices()[0].device_kind}; "
          f"~{flops / 1e9:.1f} GFLOP per training step (3 x analytic forward); {malloc.describe()}")
    runtime.setup()  # the persistent cache: ours is timed as the trainer runs it (see restart_if_compiled)
    steps = {"ours": ours_step(x, y, scan=False)}
    if args.scan:
        steps["ours (scan)"] = ours_step(x, y, scan=True)
    restart_if_compiled(any(s.compiled_here for s in steps.values()))
    if args.timm_malloc == "tuned":
        theirs = timm_step(x, y)
        if theirs is not None:
            print(f"{theirs.info}; {malloc.describe()}")
    else:
        try:
            import timm  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            print(f"timm comparison skipped: {e}")
            theirs = None
        else:
            theirs = ChildStep([sys.executable, __file__, *sys.argv[1:], "--serve-timm"], malloc.default_environ())
            print(f"{theirs.info}; malloc: platform default (child process)")
    if theirs is not None:
        steps["timm"] = theirs
    results = interleaved_medians(steps, args.steps)
    if isinstance(theirs, ChildStep):
        theirs.close()
    for name, t in results.items():
        print(f"{name:12s} {t * 1e3:8.1f} ms/step  {flops / t / 1e9:6.1f} GFLOP/s")
    if "timm" in results:
        print(f"ratio timm/ours: {results['timm'] / results['ours']:.2f} "
              f"(> 1 means ours is faster)")


if __name__ == "__main__":
    sys.exit(main())
