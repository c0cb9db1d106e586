"""Optimizer chains: masks, schedule, and equivalence with Optax's reference optimizers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling import optim
from scaling.config import FALLBACKS, TrainConfig

PARAMS = {
    "conv": {"kernel": jnp.ones((3, 3, 4, 8)), "gain": jnp.ones(8), "bias": jnp.zeros(8)},
    "block": {"skip_gain": jnp.zeros(()), "se": {"kernel": jnp.ones((8, 4)), "bias": jnp.zeros(4)}},
    "head": {"kernel": jnp.ones((8, 10)), "bias": jnp.zeros(10)},
}


def _cfg(**kw) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), **{**FALLBACKS, **kw})


def test_decay_mask_only_kernels():
    mask = optim.decay_mask(PARAMS)
    assert mask["conv"] == {"kernel": True, "gain": False, "bias": False}
    assert mask["block"] == {"skip_gain": False, "se": {"kernel": True, "bias": False}}
    assert mask["head"] == {"kernel": True, "bias": False}


def test_agc_mask_excludes_only_classifier_weight():
    mask = optim.agc_mask(PARAMS)
    flat = {"/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert flat.pop("head/kernel") is False
    assert all(flat.values()) and len(flat) == 7


def test_agc_can_leave_skip_gains_unclipped():
    """The ladder's deviation: a zero-initialised SkipInit gain is free to grow."""
    cfg = _cfg(agc_clip=0.01, agc_skip_gains=False, weight_decay=0.0, momentum=0.0)
    tx = optim.direction(cfg)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), PARAMS)
    out, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert float(out["block"]["skip_gain"]) == 0.5  # unclipped (its bound would be 1e-5)
    clipped, _ = optim.direction(_cfg(agc_clip=0.01, weight_decay=0.0, momentum=0.0)).update(grads, tx.init(PARAMS), PARAMS)
    assert abs(float(clipped["block"]["skip_gain"]) - 1e-5) < 1e-9  # lambda * eps
    np.testing.assert_allclose(out["conv"]["kernel"], clipped["conv"]["kernel"])  # everything else unchanged


def test_schedule_warmup_then_cosine_to_zero():
    sched = optim.schedule(_cfg(lr=0.4, warmup_fraction=0.1), total_steps=100)
    assert float(sched(0)) == 0.0
    assert abs(float(sched(10)) - 0.4) < 1e-6
    assert abs(float(sched(55)) - 0.2) < 1e-2  # halfway down the cosine
    assert abs(float(sched(100))) < 1e-7
    values = np.array([float(sched(s)) for s in range(10, 101)])
    assert np.all(np.diff(values) <= 1e-7)


def _run(tx, steps=3):
    params = PARAMS
    state = tx.init(params)
    for i in range(steps):
        grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1 * (i + 1)) + 0.01 * p, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_adamw_chain_equals_optax_adamw():
    cfg = _cfg(optimizer="adamw", lr=1e-3, weight_decay=0.1, weight_decay_mode="decoupled", warmup_fraction=0.0)
    ours = _run(optim.build(cfg, total_steps=10))
    ref = _run(optax.adamw(optim.schedule(cfg, 10), b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, mask=optim.decay_mask))
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sgd_chain_is_nesterov_with_coupled_decay():
    cfg = _cfg(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2, weight_decay_mode="coupled", warmup_fraction=0.0)
    ours = _run(optim.build(cfg, total_steps=10))
    ref = _run(optax.chain(optax.add_decayed_weights(1e-2, mask=optim.decay_mask),
                           optax.sgd(optim.schedule(cfg, 10), momentum=0.9, nesterov=True)))
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_traced_learning_rate_equals_optax_schedule():
    """The trainer's runtime-argument schedule gives the same numbers as ``schedule``."""
    for total, warm in ((100, 0.05), (7, 0.0), (1000, 0.1), (1, 0.05)):
        cfg = _cfg(lr=0.3, warmup_fraction=warm)
        ref = optim.schedule(cfg, total)
        args = optim.schedule_args(cfg, total)
        lr = jax.jit(optim.learning_rate)
        for step in range(0, total + 1, max(total // 50, 1)):
            assert abs(float(lr(step, **args)) - float(ref(step))) < 1e-6, (total, warm, step)


def test_direction_times_learning_rate_equals_build():
    cfg = _cfg(optimizer="sgd", lr=0.1, weight_decay=1e-2, warmup_fraction=0.2, agc_clip=0.01)
    ours_tx, args = optim.direction(cfg), optim.schedule_args(cfg, 10)
    params, state = PARAMS, ours_tx.init(PARAMS)
    for i in range(4):
        grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1 * (i + 1)) + 0.01 * p, params)
        updates, state = ours_tx.update(grads, state, params)
        lr = optim.learning_rate(i, **args)
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
    ref = _run(optim.build(cfg, total_steps=10), steps=4)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
