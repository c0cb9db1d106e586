"""Per-device memory of a sharded train step, from the compiled program, without running it.

``python -m scaling.memory --model nfnet-f7+ --mesh fsdp=8 --batch-size 4096
--device-memory-gb 80`` builds the train step of ``scaling.sharding`` for the
mesh, lowers and compiles it on abstract inputs (``jax.ShapeDtypeStruct``s
from ``jax.eval_shape``: no parameter is ever allocated) and reads XLA's
buffer assignment (``Compiled.memory_analysis()``), which is per device for
an SPMD program. It reports, per device:

- ``params`` and ``opt_state``: the bytes of each device's shards (exact,
  from the shardings);
- ``batch``: the device's slice of the input batch;
- ``temporaries``: XLA's temp allocation: activations kept for the backward
  pass, gradients, gathered FSDP weights and workspace;
- ``peak``: arguments + outputs - donated (aliased) bytes + temporaries, the
  program's live bytes; compared with ``--device-memory-gb`` (GiB).

By default the program is compiled for XLA:CPU with as many forced host
devices as the mesh has (any machine can answer, no accelerator needed); the
sizes of params, optimizer state and batch do not depend on the backend, the
temporaries do a little (a GPU or TPU compiler fuses differently, and XLA:CPU
may keep bfloat16 intermediates in float32), so treat them as an estimate.
``--target local`` compiles for this machine's own devices instead (the mesh
must fit them).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from scaling.errors import OneLineParser, UserError
from scaling.platform.entrypoint import entrypoint, run

GIB = 2**30


def force_host_devices(n: int) -> None:
    """Make XLA:CPU expose ``n`` devices; works only before JAX initialises its backends
    (the caller checks ``jax.device_count()`` afterwards)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
    os.environ["JAX_PLATFORMS"] = "cpu"


def analyse(model: str, mesh: str, batch_size: int, image_size: int | None = None, num_classes: int = 1000,
            compute_dtype: str = "float32", device_memory_gb: float | None = None,
            model_kwargs: dict | None = None, compile: bool = True) -> dict:
    """The per-device memory report of ``model``'s train step on ``mesh`` (see the module docstring).

    JAX must already see at least the mesh's number of devices (``force_host_devices``).
    ``compile=False``: only the exact shard sizes (params, optimizer state, batch), no
    temporaries or peak (for models too large to compile on this machine).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from scaling import optim, sharding
    from scaling.config import TrainConfig, resolve
    from scaling.models import registry

    spec = registry.get(model)
    size = image_size or spec.default_image_size
    cfg = resolve(TrainConfig(model=model, batch_size=batch_size, image_size=size, compute_dtype=compute_dtype,
                                  model_kwargs=dict(model_kwargs or {})))
    mspec = sharding.parse_mesh(mesh)
    if jax.device_count() < mspec.size:
        raise UserError(f"mesh {mspec} needs {mspec.size} devices; this process has {jax.device_count()}")
    devices = jax.devices()[: mspec.size]
    if batch_size % mspec.size:
        raise UserError(f"--batch-size {batch_size} is not divisible by the mesh's {mspec.size} devices")
    m = sharding.make_mesh(mspec, devices)
    s = sharding.build(cfg, m, num_classes=num_classes, image_size=size)

    def per_device(tree, shardings) -> int:
        leaves, shs = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(shardings)
        return int(sum(np.prod(sh.shard_shape(x.shape)) * x.dtype.itemsize for x, sh in zip(leaves, shs)))

    def total(tree) -> int:
        return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))

    state = s.abstract_state
    sds = lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)  # noqa: E731
    abstract_state = jax.tree_util.tree_map(sds, state, s.state_shardings)
    images = jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32, sharding=s.batch)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=s.batch)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=s.replicated)
    lr_args = {k: jax.ShapeDtypeStruct((), jnp.float32, sharding=s.replicated)
               for k in optim.schedule_args(cfg, 1)}
    params = per_device(state["params"], s.state_shardings["params"])
    opt = per_device(state["opt_state"], s.state_shardings["opt_state"])
    n = mspec.size
    batch = (batch_size // n) * (size * size * 3 * 4 + 4)
    out = dict(
        model=model, model_kwargs=dict(model_kwargs or {}), mesh=str(mspec), devices=n,
        backend=jax.default_backend(), device_kind=devices[0].device_kind, batch_size=batch_size,
        per_device_batch=batch_size // n, image_size=size, num_classes=num_classes, compute_dtype=compute_dtype,
        optimizer=cfg.optimizer,
        param_count=int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state["params"]))),
        params_total_bytes=total(state["params"]), opt_state_total_bytes=total(state["opt_state"]),
        per_device=dict(params=params, opt_state=opt, batch=batch),
        compiled=compile,
    )
    if not compile:
        return out
    t0 = time.monotonic()
    lowered = s.train_step.lower(abstract_state, images, labels, key, lr_args)
    compiled = lowered.compile()
    seconds = time.monotonic() - t0
    ma = compiled.memory_analysis()
    if ma is None:
        raise UserError(f"the {jax.default_backend()} compiler gives no memory analysis")
    peak = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    out["per_device"].update(temporaries=int(ma.temp_size_in_bytes), arguments=int(ma.argument_size_in_bytes),
                             outputs=int(ma.output_size_in_bytes), aliased=int(ma.alias_size_in_bytes),
                             code=int(ma.generated_code_size_in_bytes), peak=int(peak))
    out["compile_seconds"] = seconds
    if device_memory_gb is not None:
        out["device_memory_bytes"] = int(device_memory_gb * GIB)
        out["fits"] = bool(peak <= device_memory_gb * GIB)
    return out


def _fmt(b: float) -> str:
    for unit, n in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= n:
            return f"{b / n:9.2f} {unit}"
    return f"{b:9.0f} B  "


def format_report(r: dict) -> str:
    d = r["per_device"]
    g = _fmt
    lines = [
        f"{r['model']} ({r['param_count']:,} parameters, {r['optimizer']}), mesh {r['mesh']} on "
        f"{r['devices']} {r['backend']} devices, batch {r['batch_size']} ({r['per_device_batch']} per device) "
        f"at {r['image_size']} px, {r['compute_dtype']} activations; per device:",
        f"  params        {g(d['params'])}   (of {_fmt(r['params_total_bytes']).strip()} in all)",
        f"  optimizer     {g(d['opt_state'])}   (of {_fmt(r['opt_state_total_bytes']).strip()} in all)",
        f"  batch         {g(d['batch'])}",
    ]
    if not r["compiled"]:
        return "\n".join(lines + ["  (not compiled: temporaries and peak unknown)"])
    lines += [
        f"  temporaries   {g(d['temporaries'])}   (activations, gradients, gathered weights)",
        f"  peak          {g(d['peak'])}   (arguments + outputs - donated + temporaries)",
    ]
    if "fits" in r:
        lines.append(f"  {'fits' if r['fits'] else 'does NOT fit'} in {r['device_memory_bytes'] / GIB:g} GiB "
                     f"per device")
    lines.append(f"  (compiled in {r['compile_seconds']:.0f} s, nothing run)")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m scaling.memory",
                      description="Per-device memory of params, optimizer state and activations of a sharded "
                                  "train step, from the compiled program (nothing is run or allocated).")
    p.add_argument("--model", required=True, help="a registry name (python -m scaling.models)")
    p.add_argument("--mesh", required=True, help="data=D,fsdp=F (an axis left out is 1)")
    p.add_argument("--batch-size", type=int, required=True, help="global batch size")
    p.add_argument("--image-size", type=int, help="default: the model's")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device-memory-gb", type=float, help="say whether the step fits this much per device (GiB)")
    p.add_argument("--target", choices=["cpu", "local"], default="cpu",
                   help="cpu: compile for forced XLA:CPU host devices (default); local: this machine's devices")
    p.add_argument("--model-kwargs", default="{}", help='model options as JSON, e.g. \'{"scan": true}\'')
    p.add_argument("--no-compile", action="store_true",
                   help="only the exact shard sizes of params, optimizer state and batch (no temporaries)")
    p.add_argument("--json", action="store_true")
    return p


@entrypoint
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from scaling import sharding

    mspec = sharding.parse_mesh(args.mesh)
    for name in ("batch_size", "image_size", "num_classes"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    if args.device_memory_gb is not None and not args.device_memory_gb > 0:
        raise UserError("--device-memory-gb must be positive")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise UserError(f"--model-kwargs is not JSON: {e}") from None
    if not isinstance(kwargs, dict):
        raise UserError("--model-kwargs must be a JSON object")
    if args.target == "cpu":
        force_host_devices(mspec.size)
    import jax

    if jax.device_count() < mspec.size:
        raise UserError(f"mesh {mspec} needs {mspec.size} devices; this process has {jax.device_count()}")
    r = analyse(args.model, args.mesh, args.batch_size, args.image_size, args.num_classes,
                args.compute_dtype, args.device_memory_gb, kwargs, compile=not args.no_compile)
    print(json.dumps(r, indent=1) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    run(main)
