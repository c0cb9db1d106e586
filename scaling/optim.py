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

Schedules (``TrainConfig.schedule``), all one traced formula selected by
runtime numbers, so one compiled step serves cosine trials, WSD stems and
every cooldown branch:

- ``cosine``: linear warmup from 0, cosine decay to 0 at the last step.
- ``wsd`` (warmup-stable-decay, Hägele et al. 2024): linear warmup, constant
  peak, then a decay to 0 over the last ``cooldown_fraction`` of the run, of
  shape ``1-sqrt`` (lr = peak (1 - sqrt(p))) or ``linear`` (peak (1 - p)),
  p the fraction of the cooldown done.
- ``constant``: linear warmup, then the peak to the end: a WSD stem (the
  WSD schedule before any cooldown; ``scaling.branching``).

The warmup is ``warmup_steps`` when set, else ``warmup_fraction`` of the run.
A WSD stem and its branches must share one warmup (the sweep sets
``warmup_steps`` from the study's shortest epoch budget), or a branch would
not be the run its stem began.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling.config import TrainConfig
from scaling.schedules import run_cooldown_start, warmup_steps

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


def schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """The run's schedule as an Optax schedule (cosine: Optax's own warmup-cosine)."""
    if cfg.schedule != "cosine":
        args = schedule_args(cfg, total_steps)
        return lambda step: learning_rate(step, **args)
    warmup = warmup_steps(cfg, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, 1),
        end_value=0.0,
    )


def schedule_args(cfg: TrainConfig, total_steps: int) -> dict:
    """Runtime arguments of ``learning_rate``: the same keys for every schedule
    (so the compiled step does not depend on which), the same numbers ``schedule`` uses."""
    return {
        "peak": np.float32(cfg.lr),
        "warmup": np.float32(warmup_steps(cfg, total_steps)),
        "total": np.float32(max(total_steps, 1)),
        "wsd": np.float32(cfg.schedule != "cosine"),  # 1: warmup-stable-decay (or constant), 0: cosine
        "decay_start": np.float32(run_cooldown_start(cfg, total_steps)),
        "sqrt": np.float32(cfg.cooldown_shape == "1-sqrt"),  # 1: (1 - sqrt) cooldown, 0: linear
    }


def learning_rate(step, peak, warmup, total, wsd, decay_start, sqrt):
    """``schedule`` as a jittable function of traced arguments (same values)."""
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / jnp.maximum(warmup, 1.0)
    frac = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    cosine = peak * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    done = jnp.clip((step - decay_start) / jnp.maximum(total - decay_start, 1.0), 0.0, 1.0)
    stable_decay = peak * jnp.where(sqrt > 0.5, 1.0 - jnp.sqrt(done), 1.0 - done)
    return jnp.where(step < warmup, warm, jnp.where(wsd > 0.5, stable_decay, cosine))


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
