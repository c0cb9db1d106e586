"""Optimizers as small Optax chains, built from a resolved ``TrainConfig``.

The NFNet reference order is kept: AGC on the raw gradient, then coupled L2
weight decay, then SGD with Nesterov momentum. The ViT recipe is global-norm
clipping then AdamW with decoupled weight decay. Masks are decided by
parameter path names (see ``decay_mask`` and ``agc_mask``).

``build`` is the whole optimizer. The trainer uses its two halves instead:
``direction`` (everything but the learning rate) and ``learning_rate`` (the
schedule as a traced function of runtime arguments), so that the compiled
train step does not depend on the peak learning rate or the run length and
the persistent compilation cache serves every trial of a sweep that differs
only in those.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import TrainConfig

# The classifier is always a layer named ``head`` (registry contract).
CLASSIFIER = "head"


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params):
    """Weight decay only on weight matrices and conv kernels (leaves named ``kernel``).

    Gains, biases, SkipInit gains, LayerNorm scales and position embeddings
    are not decayed (NFNet reference and big_vision's ``.*/kernel$`` rule).
    """
    return jax.tree_util.tree_map_with_path(lambda p, _: _path_names(p)[-1] == "kernel", params)


def agc_mask(params, skip_gains: bool = True):
    """AGC on every parameter except the final classifier weight (NF21 section 4.1);
    ``skip_gains=False`` also leaves SkipInit gains (leaves named ``skip_gain``) unclipped."""

    def keep(path, _):
        names = _path_names(path)
        if not skip_gains and names[-1] == "skip_gain":
            return False
        return not (CLASSIFIER in names[:-1] and names[-1] == "kernel")

    return jax.tree_util.tree_map_with_path(keep, params)


def _warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    warmup = int(round(cfg.warmup_fraction * total_steps))
    return min(max(warmup, 0), max(total_steps - 1, 0))


def schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over ``warmup_fraction`` of the run, cosine decay to 0."""
    warmup = _warmup_steps(cfg, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, 1),
        end_value=0.0,
    )


def schedule_args(cfg: TrainConfig, total_steps: int) -> dict:
    """Runtime arguments of ``learning_rate``: the same numbers ``schedule`` uses."""
    warmup = _warmup_steps(cfg, total_steps)
    return {
        "peak": np.float32(cfg.lr),
        "warmup": np.float32(warmup),
        "total": np.float32(max(total_steps, 1)),
    }


def learning_rate(step, peak, warmup, total):
    """``schedule`` as a jittable function of traced arguments (same values)."""
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / jnp.maximum(warmup, 1.0)
    frac = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    cosine = peak * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < warmup, warm, cosine)


def build(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """The whole optimizer: ``direction`` followed by the learning-rate schedule."""
    return optax.chain(direction(cfg), optax.scale_by_learning_rate(schedule(cfg, total_steps)))


def direction(cfg: TrainConfig) -> optax.GradientTransformation:
    """Every transformation except the final multiplication by -learning_rate."""
    parts: list[optax.GradientTransformation] = []
    if cfg.agc_clip:
        mask = functools.partial(agc_mask, skip_gains=cfg.agc_skip_gains is not False)
        parts.append(optax.masked(optax.adaptive_grad_clip(cfg.agc_clip, eps=1e-3), mask))
    if cfg.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.optimizer == "sgd":
        if cfg.weight_decay and cfg.weight_decay_mode == "coupled":
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
        parts.append(optax.trace(decay=cfg.momentum, nesterov=True))
        if cfg.weight_decay and cfg.weight_decay_mode == "decoupled":
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
    else:  # adamw
        if cfg.weight_decay and cfg.weight_decay_mode == "coupled":
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
        parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2))
        if cfg.weight_decay and cfg.weight_decay_mode == "decoupled":
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
