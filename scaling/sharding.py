"""Device meshes and parameter sharding: data parallelism and ZeRO-3-style FSDP.

A mesh has two axes, ``data`` and ``fsdp`` (``--mesh data=D,fsdp=F``; an axis
left out is 1, no mesh at all is ``data=<all devices>``). The batch is split
over both axes (D x F shards of the global batch); parameters and optimizer
state are split over ``fsdp`` only, so each of the F devices of a ``data``
row holds 1/F of them and XLA's SPMD partitioner gathers a weight where a
layer needs it and reduce-scatters its gradient (ZeRO stage 3).

The parameter rule (``param_spec``), a function of the array's shape alone:
an array with at least ``min_elements`` elements is split over ``fsdp`` along
its largest dimension that the fsdp size divides (the last such dimension on
a tie); smaller arrays (biases, gains, norms) and arrays with no divisible
dimension are replicated. Because Optax moments have their parameter's
shape, the optimizer state gets the same placement as the parameters it
mirrors; its scalars (step counts) are replicated.

``build`` makes the jitted init and train step for a model with these
shardings (the same loss, optimizer and schedule as ``scaling.steps``, on
already-standardised float images; augmentation and EMA belong to the
trainer's input pipeline and are left out). ``scaling.memory`` compiles the
same step without running it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import numpy as np

from scaling.errors import UserError

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over every device
MIN_SHARD_ELEMENTS = 1024  # arrays smaller than this are replicated


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """Sizes of the ``data`` and ``fsdp`` axes."""

    data: int = 1
    fsdp: int = 1

    @property
    def size(self) -> int:
        return self.data * self.fsdp

    def __str__(self) -> str:
        return f"data={self.data},fsdp={self.fsdp}"


def parse_mesh(text: str | None, device_count: int | None = None) -> MeshSpec:
    """``"data=2,fsdp=4"`` -> ``MeshSpec(2, 4)``; None or empty: data-parallel over
    ``device_count`` devices. With ``device_count`` the size must equal it."""
    if text is None or not text.strip():
        if device_count is None:
            raise UserError("an empty mesh needs a device count")
        return MeshSpec(data=device_count, fsdp=1)
    sizes: dict[str, int] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*([a-z]+)\s*=\s*(\d+)\s*", part)
        if not m:
            raise UserError(f"bad mesh {text!r}: write AXIS=SIZE pairs, e.g. data=2,fsdp=4")
        axis, size = m.group(1), int(m.group(2))
        if axis not in AXES:
            raise UserError(f"bad mesh {text!r}: unknown axis {axis!r} (axes: {', '.join(AXES)})")
        if axis in sizes:
            raise UserError(f"bad mesh {text!r}: axis {axis!r} given twice")
        if size < 1:
            raise UserError(f"bad mesh {text!r}: axis sizes must be positive")
        sizes[axis] = size
    spec = MeshSpec(**sizes)
    if device_count is not None:
        check_size(spec, device_count)
    return spec


def check_size(spec: MeshSpec, device_count: int) -> None:
    if spec.size != device_count:
        raise UserError(f"mesh {spec} has {spec.size} devices but this run has {device_count}; "
                        f"the product of the axis sizes must equal the device count")


def make_mesh(spec: MeshSpec, devices=None):
    """A ``jax.sharding.Mesh`` of shape (data, fsdp) over ``devices`` (default: all, every host)."""
    import jax
    from jax.sharding import AxisType

    devices = list(jax.devices() if devices is None else devices)
    check_size(spec, len(devices))
    return jax.make_mesh((spec.data, spec.fsdp), AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices)


def param_spec(shape: tuple[int, ...], fsdp: int, min_elements: int = MIN_SHARD_ELEMENTS):
    """The ``PartitionSpec`` of one parameter (or mirrored optimizer) array; see the module docstring."""
    from jax.sharding import PartitionSpec as P

    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_elements:
        return P()
    best = None
    for axis, dim in enumerate(shape):
        if dim % fsdp == 0 and (best is None or dim >= shape[best]):
            best = axis
    if best is None:
        return P()
    return P(*[("fsdp" if a == best else None) for a in range(len(shape))])


def tree_shardings(tree, mesh, min_elements: int = MIN_SHARD_ELEMENTS):
    """``NamedSharding`` for every array leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s)."""
    import jax
    from jax.sharding import NamedSharding

    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp, min_elements)), tree)


def batch_sharding(mesh):
    """Leading (batch) dimension split over every device of the mesh."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
    from jax.sharding import NamedSharding, PartitionSpec as P

    return NamedSharding(mesh, P())


@dataclasses.dataclass
class Sharded:
    """A model's sharded init and train step on one mesh.

    ``init_state(key) -> state`` and ``train_step(state, images, labels, key, lr_args)
    -> (state, metrics)`` are jitted with ``state_shardings`` (a tree like the state)
    for the state and ``batch`` for images (float NHWC, standardised) and labels (int).
    ``abstract_state`` is the state's shapes and dtypes (``jax.eval_shape``, nothing allocated).
    """

    mesh: Any
    init_state: Callable
    train_step: Callable
    abstract_state: Any
    state_shardings: Any
    batch: Any
    replicated: Any
    cfg: Any


def build(cfg, mesh, num_classes: int, image_size: int, min_elements: int = MIN_SHARD_ELEMENTS) -> Sharded:
    """Sharded steps for a resolved ``TrainConfig`` (``scaling.config.resolve``) on ``mesh``.

    The loss (softmax cross-entropy with the config's label smoothing), the
    optimizer (``scaling.optim.direction``) and the runtime learning-rate
    schedule (``scaling.optim.learning_rate``) are the trainer's.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from scaling import optim
    from scaling.models import registry
    from scaling.platform.xla_cpu import compiler_options

    spec = registry.get(cfg.model)
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
    model = spec.build(num_classes=num_classes, image_size=image_size, dtype=dtype, **cfg.model_kwargs)
    tx = optim.direction(cfg)
    batch = batch_sharding(mesh)
    rep = replicated(mesh)

    def init(key):
        x = jnp.zeros((1, image_size, image_size, 3), dtype)
        params = model.init({"params": key, "dropout": key}, x, train=False)["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    state_sh = tree_shardings(abstract, mesh, min_elements)

    def loss_fn(params, x, targets, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
        return loss, logits

    def train_step(state, images, labels, base_key, lr_args):
        key = jax.random.fold_in(base_key, state["step"])
        x = jax.lax.with_sharding_constraint(images.astype(dtype), batch)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), cfg.label_smoothing)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], x, targets, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        lr = optim.learning_rate(state["step"], **lr_args)
        params = jax.tree_util.tree_map(lambda p, u: p - (lr * u).astype(p.dtype), state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
                   "grad_norm": optax.global_norm(grads), "lr": lr}
        return new, metrics

    options = compiler_options(spec)
    return Sharded(
        mesh=mesh,
        init_state=jax.jit(init, in_shardings=rep, out_shardings=state_sh),
        train_step=jax.jit(train_step, in_shardings=(state_sh, batch, batch, rep, rep),
                           out_shardings=(state_sh, rep), donate_argnums=(0,), compiler_options=options),
        abstract_state=abstract,
        state_shardings=state_sh,
        batch=batch,
        replicated=rep,
        cfg=cfg,
    )


def shard_fraction(tree) -> float:
    """Bytes one device holds of ``tree``'s arrays over their total bytes (1.0: replicated)."""
    import jax

    held = total = 0
    for x in jax.tree_util.tree_leaves(tree):
        n = x.dtype.itemsize
        total += int(np.prod(x.shape)) * n
        held += int(np.prod(x.sharding.shard_shape(x.shape))) * n
    return held / max(total, 1)


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, timeout_s: int = 60) -> None:
    """Join a multi-process JAX run (``jax.distributed.initialize``).

    With no arguments JAX detects the cluster (SLURM, Open MPI, TPU). Explicit
    values are checked first; a coordinator that does not answer within
    ``timeout_s`` seconds is a one-line ``UserError``, not a hang.
    """
    import jax

    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise UserError("--coordinator, --num-processes and --process-id go together")
    if num_processes is not None:
        if num_processes < 1:
            raise UserError(f"--num-processes must be positive, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise UserError(f"--process-id {process_id} is out of range for {num_processes} processes "
                            f"(0 to {num_processes - 1})")
        if not re.fullmatch(r"[^\s:]+:\d+", coordinator):
            raise UserError(f"--coordinator {coordinator!r} must be HOST:PORT")
        if process_id != 0:
            _wait_for_coordinator(coordinator, timeout_s)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except Exception as e:  # XLA's runtime error: DEADLINE_EXCEEDED, UNAVAILABLE, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot join the distributed run at {coordinator or '(auto-detected)'} "
                        f"within {timeout_s} s: {first[:200]}") from None


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Until ``address`` accepts TCP connections, at most ``timeout_s`` seconds.

    Why: a JAX process that cannot register with its coordinator aborts (a fatal
    XLA log and a stack trace, nothing Python can catch) instead of raising, so
    an unreachable coordinator is found here and reported as one line.
    """
    import socket
    import time

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, timeout_s)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise UserError(f"the coordinator {address} cannot be reached within {timeout_s:g} s "
                                f"({e.strerror or e}); is process 0 running?") from None
            time.sleep(0.5)


def global_batch(local, sharding_):
    """This process's rows of the global batch -> one global ``jax.Array`` laid out by ``sharding_``."""
    import jax

    return jax.make_array_from_process_local_data(sharding_, local)
