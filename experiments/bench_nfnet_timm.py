"""Time one NFNet training step here (JAX) against timm's ``dm_nfnet_f0`` (PyTorch).

A step is forward (train mode: dropout, stochastic depth), label-smoothed
cross-entropy, backward, AGC (all but the classifier), coupled weight decay
and an SGD-Nesterov update, on the same random batch. Ours uses the repo's
optimizer chain (``scaling.optim``) and recipe; timm uses ``torch.optim.SGD``
plus ``timm.utils.agc.adaptive_clip_grad`` on every parameter but the
classifier's. The two run in alternating blocks of steps (``scaling.interleave.interleaved_medians``)
so that background load hits both alike. Each framework gets its own best
allocator: ours runs with glibc malloc tuned for XLA:CPU (``scaling.platform.malloc``),
timm in a child process with the platform default (``--timm-malloc tuned``
runs it in this process, under our settings, instead). Run it alone on the
machine (``flock /tmp/scaling-cpu.lock``).

    python experiments/bench_nfnet_timm.py [--model nfnet-f0] [--image-size 64]
        [--batch-size 32] [--steps 8] [--conv-impl auto|native|split|im2col]
        [--timm-malloc default|tuned] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from scaling.platform import malloc
from scaling.platform.entrypoint import entrypoint
from scaling.interleave import ChildStep, interleaved_medians, restart_if_compiled, serve_steps


def bench_ours(model_name, x_nhwc, labels, num_classes, conv_impl):
    """Our train step as a callable (compiled and run once), and facts about it."""
    import jax
    import jax.numpy as jnp
    import optax

    from scaling import optim
    from scaling.config import TrainConfig, resolve
    from scaling.models import registry

    batch = x_nhwc.shape[0]
    model = registry.get(model_name).build(num_classes, x_nhwc.shape[1], conv_impl=conv_impl)
    cfg = resolve(TrainConfig(model=model_name, batch_size=batch))
    tx = optim.build(cfg, total_steps=1000)
    x, y = jnp.asarray(x_nhwc), jnp.asarray(labels)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])["params"]
    opt_state = tx.init(params)

    def step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
            targets = optax.smooth_labels(jax.nn.one_hot(y, num_classes), cfg.label_smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    key = jax.random.PRNGKey(1)
    state = {"params": params, "opt_state": opt_state, "i": 0}

    def run():
        state["i"] += 1
        state["params"], state["opt_state"], loss = step(
            state["params"], state["opt_state"], x, y, jax.random.fold_in(key, state["i"]))
        return float(loss)

    from scaling import runtime

    t0 = time.perf_counter()
    with runtime.CacheMisses() as misses:
        run()
    info = dict(first_step_s=time.perf_counter() - t0, lr=cfg.lr, agc=cfg.agc_clip, compiled_here=misses.count > 0)
    return run, info


def bench_timm(x_nhwc, labels, num_classes, lr, agc, threads):
    """timm's train step as a callable (run once), and facts about it."""
    import timm
    import torch
    from timm.utils.agc import adaptive_clip_grad

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model("dm_nfnet_f0", num_classes=num_classes, drop_rate=0.2, drop_path_rate=0.25)
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".gain") else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 2e-5}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    head = {id(p) for p in model.get_classifier().parameters() if p.ndim > 1}  # classifier weight
    clipped = [p for p in model.parameters() if id(p) not in head]
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        adaptive_clip_grad(clipped, clip_factor=agc, eps=1e-3)
        opt.step()
        return float(loss)

    t0 = time.perf_counter()
    step()
    return step, dict(first_step_s=time.perf_counter() - t0)


def batch(args):
    """The benchmark's input: the same random batch in every process."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    return x, rng.integers(0, args.num_classes, args.batch_size)


@entrypoint
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="nfnet-f0")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per contender, in alternating blocks of 4")
    ap.add_argument("--conv-impl", default="auto", choices=["auto", "native", "split", "im2col"])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--no-timm", action="store_true")
    ap.add_argument("--timm-malloc", default="default", choices=["default", "tuned"],
                    help="timm in a child process with the platform's malloc (default), or in this one")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-timm", nargs=2, type=float, metavar=("LR", "AGC"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    x, labels = batch(args)
    if args.serve_timm:  # the child side of --timm-malloc default
        step, info = bench_timm(x, labels, args.num_classes, *args.serve_timm, args.threads)
        serve_steps(step, json.dumps(info))
        return
    out = {"setup": vars(args), "malloc": malloc.describe()}
    from scaling import runtime  # imports JAX: not in the timm child

    runtime.setup()  # the persistent cache: ours is timed as the trainer runs it (see restart_if_compiled)
    run_ours, out["ours"] = bench_ours(args.model, x, labels, args.num_classes, args.conv_impl)
    restart_if_compiled(out["ours"]["compiled_here"])
    steps = {"ours": run_ours}
    if not args.no_timm:
        try:
            import timm  # noqa: F401
            import torch  # noqa: F401
        except ImportError as e:
            out["timm"] = f"skipped: {e}"
        else:
            lr, agc = out["ours"]["lr"], out["ours"]["agc"]
            if args.timm_malloc == "tuned":
                steps["timm"], out["timm"] = bench_timm(x, labels, args.num_classes, lr, agc, args.threads)
                out["timm"]["malloc"] = malloc.describe()
            else:
                argv = [sys.executable, __file__, *sys.argv[1:], "--serve-timm", str(lr), str(agc)]
                steps["timm"] = ChildStep(argv, malloc.default_environ())
                out["timm"] = dict(json.loads(steps["timm"].info), malloc="malloc: platform default (child process)")
    medians = interleaved_medians(steps, args.steps)
    if isinstance(steps.get("timm"), ChildStep):
        steps["timm"].close()
    for name, seconds in medians.items():
        out[name]["step_s"] = seconds
    if "timm" in medians:
        out["timm_over_ours"] = medians["timm"] / medians["ours"]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.model} train step, batch {args.batch_size}, {args.image_size}px, fp32, conv_impl={args.conv_impl}")
    print(f"  ours: {malloc.describe()}")
    o = out["ours"]
    print(f"  ours (JAX):  {o['step_s'] * 1e3:8.1f} ms/step  (first step incl. compile {o['first_step_s']:.1f} s)")
    t = out.get("timm")
    if isinstance(t, dict):
        print(f"  timm dm_nfnet_f0 (torch): {t['step_s'] * 1e3:8.1f} ms/step  (first step {t['first_step_s']:.1f} s; "
              f"{t['malloc']})")
        print(f"  timm / ours = {out['timm_over_ours']:.2f}  (>1: ours faster)")
    elif t:
        print(f"  timm: {t}")


if __name__ == "__main__":
    sys.exit(main())
