"""The pure, jitted pieces of training: state init, the train step and the eval step.

The trainer (``scaling.train``) and the benchmark (``scaling.bench``) build
their steps here, so what is benchmarked is exactly what is trained.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scaling import optim
from scaling.config import TrainConfig
from scaling.data.pipeline import make_batch_fn, preprocess
from scaling.models import registry
from scaling.platform.xla_cpu import compiler_options


@dataclasses.dataclass
class Parts:
    """Everything needed to run steps for one resolved config."""

    train_step: object  # jitted: (state, *batch, key, lr_args) -> (state, metrics); memory batch: images, labels, idx
    eval_step: object  # jitted: (params, images_u8, labels, mask) -> (loss_sum, correct_sum)
    init_state: object  # jitted: (key) -> state
    replicated: NamedSharding
    batch_sharded: NamedSharding


def make_mesh() -> Mesh:
    """A 1-D data-parallel mesh over all local devices."""
    return Mesh(np.array(jax.devices()), ("data",))


def cross_entropy(logits, labels_onehot):
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels_onehot)


def build(cfg: TrainConfig, num_classes: int, image_size: int, mean, std, source=None) -> Parts:
    """Jitted steps for ``cfg``. The learning-rate schedule is a runtime argument
    (``optim.schedule_args``), so one compiled step serves every peak learning
    rate and run length (the persistent compilation cache hits across trials).
    ``source`` (a ``scaling.data.batch_sources.BatchSource``) says what a batch is
    and how it becomes model input; None: the in-memory one (images, labels, idx)."""
    spec = registry.get(cfg.model)
    dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
    model = spec.build(num_classes=num_classes, image_size=image_size, dtype=dtype, **cfg.model_kwargs)
    tx = optim.direction(cfg)
    if source is None:
        memory_fn = make_batch_fn(mean, std, image_size, cfg.augment, dtype)
        batch_fn = lambda batch, key: memory_fn(*batch, key)  # noqa: E731
        eval_fn = lambda images_u8: preprocess(images_u8, mean, std, image_size, dtype)  # noqa: E731
    else:
        batch_fn = source.batch_fn(mean, std, image_size, cfg.augment, dtype)
        eval_fn = source.eval_fn(mean, std, image_size, dtype)
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharded = NamedSharding(mesh, P("data"))
    ema_decay = cfg.ema_decay or 0.0
    options = compiler_options(spec)

    def init_state(key):
        x = jnp.zeros((1, image_size, image_size, 3), dtype)
        params = model.init({"params": key, "dropout": key}, x, train=False)["params"]
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
        if ema_decay:
            state["ema"] = params
        return state

    def loss_fn(params, x, targets, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return cross_entropy(logits, targets).mean(), logits

    def train_step(state, *args):
        *batch, base_key, lr_args = args  # the batch's arrays as positional arguments (one HLO per source)
        key = jax.random.fold_in(base_key, state["step"])
        k_aug, k_drop, k_mix = jax.random.split(key, 3)
        x, y = batch_fn(tuple(batch), k_aug)
        x = jax.lax.with_sharding_constraint(x, batch_sharded)
        targets = optax.smooth_labels(jax.nn.one_hot(y, num_classes), cfg.label_smoothing)
        if cfg.mixup_alpha:
            # big_vision: one lambda per batch, mixed with the batch rolled by one.
            lam = jax.random.beta(k_mix, cfg.mixup_alpha, cfg.mixup_alpha)
            lam = jnp.maximum(lam, 1 - lam)
            x = (lam * x + (1 - lam) * jnp.roll(x, 1, axis=0)).astype(x.dtype)
            targets = lam * targets + (1 - lam) * jnp.roll(targets, 1, axis=0)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], x, targets, k_drop)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        lr = optim.learning_rate(state["step"], **lr_args)
        params = jax.tree_util.tree_map(lambda p, u: p - (lr * u).astype(p.dtype), state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        if ema_decay:
            new["ema"] = optax.incremental_update(params, state["ema"], 1 - ema_decay)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
            "grad_norm": optax.global_norm(grads),
            "lr": lr,
        }
        return new, metrics

    def eval_step(params, images_u8, labels, mask):
        x = eval_fn(images_u8)
        logits = model.apply({"params": params}, x, train=False)
        loss = cross_entropy(logits, jax.nn.one_hot(labels, num_classes))
        correct = jnp.argmax(logits, -1) == labels
        return jnp.sum(loss * mask), jnp.sum(correct * mask)

    return Parts(
        train_step=jax.jit(train_step, donate_argnums=(0,), out_shardings=(replicated, replicated),
                           compiler_options=options),
        eval_step=jax.jit(eval_step, out_shardings=replicated, compiler_options=options),
        init_state=jax.jit(init_state, out_shardings=replicated),
        replicated=replicated,
        batch_sharded=batch_sharded,
    )


def count_params(params) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))
