"""Optimizer chains: masks, schedule, and equivalence with Optax's reference optimizers."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scaling import optim, schedules
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


def _wsd_formula(step, peak, warmup, total, fraction, shape):
    """Warmup-stable-decay written out: linear warmup, constant, then the last
    round(fraction x total) steps (at least 1) decay to 0 (never before the warmup ends)."""
    start = max(total - max(1, round(fraction * total)), warmup)
    if step < warmup:
        return peak * step / max(warmup, 1)
    if step < start:
        return peak
    done = (step - start) / max(total - start, 1)
    return peak * (1 - math.sqrt(done) if shape == "1-sqrt" else 1 - done)


def test_wsd_lr_at_every_step_equals_the_formula():
    lr = jax.jit(optim.learning_rate)
    steps = jnp.arange(0, 1001)
    for total, warm, frac, shape in ((1000, 0.05, 0.2, "1-sqrt"), (1000, 0.05, 0.2, "linear"), (137, 0.0, 0.1, "1-sqrt"),
                                     (50, 0.1, 1.0, "linear"), (7, 0.05, 0.5, "1-sqrt"), (1, 0.05, 0.2, "linear")):
        cfg = _cfg(lr=0.4, warmup_fraction=warm, schedule="wsd", cooldown_fraction=frac, cooldown_shape=shape)
        warmup = schedules.warmup_steps(cfg, total)
        got = np.asarray(lr(steps[: total + 1], **optim.schedule_args(cfg, total)))
        want = np.array([_wsd_formula(s, 0.4, warmup, total, frac, shape) for s in range(total + 1)])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{total} {warm} {frac} {shape}")
        sched = optim.schedule(cfg, total)  # the Optax-style schedule gives the same numbers
        assert abs(float(sched(total // 2)) - want[total // 2]) < 1e-6


def test_wsd_shape_by_hand():
    """1000 steps, 5% warmup, 20% (1 - sqrt) cooldown: warmup to step 50, peak to 800, then down to 0."""
    cfg = _cfg(lr=1.0, warmup_fraction=0.05, schedule="wsd", cooldown_fraction=0.2)
    args = optim.schedule_args(cfg, 1000)
    at = lambda s: float(optim.learning_rate(s, **args))  # noqa: E731
    assert schedules.run_cooldown_start(cfg, 1000) == 800
    assert at(0) == 0.0 and abs(at(25) - 0.5) < 1e-6 and at(50) == 1.0 and at(799) == 1.0
    assert abs(at(900) - (1 - math.sqrt(0.5))) < 1e-6  # halfway through the cooldown
    assert 0 < at(999) < 0.08 and at(1000) == 0.0
    linear = optim.schedule_args(dataclasses.replace(cfg, cooldown_shape="linear"), 1000)
    assert abs(float(optim.learning_rate(900, **linear)) - 0.5) < 1e-6


def test_constant_schedule_is_every_branch_before_its_cooldown():
    """A stem (constant, any length) and the WSD branches cut from it agree on every step
    before a branch's cooldown, given one warmup."""
    stem = _cfg(lr=0.3, schedule="constant", warmup_steps=20)
    for total in (100, 200, 400):
        branch = _cfg(lr=0.3, schedule="wsd", warmup_steps=20)
        start = schedules.run_cooldown_start(branch, total)
        for stem_len in (start, 400 * 0.8):
            s_args, b_args = optim.schedule_args(stem, int(stem_len)), optim.schedule_args(branch, total)
            for step in range(0, start, 7):
                assert float(optim.learning_rate(step, **s_args)) == float(optim.learning_rate(step, **b_args))
        assert float(optim.learning_rate(start + 1, **b_args)) < 0.3


def test_one_compiled_program_serves_every_schedule():
    """The schedule is data, not program: cosine, WSD (both shapes) and constant runs of any
    length share one compilation of a function of the traced arguments."""
    lr = jax.jit(lambda step, args: optim.learning_rate(step, **args))  # a fresh cache, this test's calls only
    for sched, shape, total in (("cosine", "1-sqrt", 100), ("wsd", "1-sqrt", 300), ("wsd", "linear", 50),
                                ("constant", "1-sqrt", 70)):
        lr(3, optim.schedule_args(_cfg(schedule=sched, cooldown_shape=shape), total))
    assert lr._cache_size() == 1


def test_cosine_is_unchanged_by_the_wsd_fields():
    """Cooldown settings do not touch a cosine run; ``warmup_steps`` overrides the fraction."""
    ref = optim.schedule_args(_cfg(lr=0.3, warmup_fraction=0.1), 100)
    other = optim.schedule_args(_cfg(lr=0.3, warmup_fraction=0.1, cooldown_fraction=0.7, cooldown_shape="linear"), 100)
    for step in range(0, 101, 5):
        assert float(optim.learning_rate(step, **ref)) == float(optim.learning_rate(step, **other))
    assert schedules.warmup_steps(_cfg(warmup_fraction=0.1, warmup_steps=3), 100) == 3
