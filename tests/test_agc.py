"""AGC in the optimizer chain vs. a direct numpy transcription of NF21 section 4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import optim
from scaling.config import TrainConfig

LAMBDA = 0.01
EPS = 1e-3


def agc_numpy(grad: np.ndarray, param: np.ndarray, clip: float = LAMBDA) -> np.ndarray:
    """NF21 eq. 3, unit-wise: a unit is one output unit (last axis of HWIO / (in, out));
    scalars and vectors (biases, gains, skip gains) are one unit."""
    if grad.ndim <= 1:
        axes = None
    else:
        axes = tuple(range(grad.ndim - 1))
    g_norm = np.sqrt(np.sum(grad.astype(np.float64) ** 2, axis=axes, keepdims=True))
    w_norm = np.maximum(np.sqrt(np.sum(param.astype(np.float64) ** 2, axis=axes, keepdims=True)), EPS)
    ratio = g_norm / w_norm
    clipped = clip * w_norm * grad / np.maximum(g_norm, 1e-6)
    return np.where(ratio > clip, clipped, grad)


def _tree(rng):
    """Params/grads shaped like an NFNet's: WS conv (HWIO), SE dense, zero-init
    bias / skip_gain, gains, and the classifier; some units get huge gradients."""
    shapes = {
        "block0": {
            "conv1": {"kernel": (3, 3, 4, 8), "gain": (8,), "bias": (8,)},
            "se": {"fc0": {"kernel": (8, 4), "bias": (4,)}},
            "skip_gain": (),
        },
        "head": {"kernel": (16, 10), "bias": (10,)},
    }
    params, grads = {}, {}

    def fill(shape_tree, p_out, g_out):
        for k, v in shape_tree.items():
            if isinstance(v, dict):
                p_out[k], g_out[k] = {}, {}
                fill(v, p_out[k], g_out[k])
                continue
            p = rng.normal(size=v).astype(np.float32)
            if k in ("bias", "skip_gain"):
                p = np.zeros(v, np.float32)  # zero init: the eps floor decides
            if k == "gain":
                p = np.ones(v, np.float32)
            # Mixed scales along the last axis so some units clip and others do not.
            scale = np.where(np.arange(v[-1]) % 2 == 0, 1.0, 1e-4) if len(v) else 1.0
            g = (rng.normal(size=v) * scale).astype(np.float32)
            p_out[k], g_out[k] = p, g

    fill(shapes, params, grads)
    return params, grads


def _chain(weight_decay=0.0):
    # lr 1, no momentum, no warmup: the update is -(AGC(g) + wd * p) at step 0.
    cfg = TrainConfig(
        optimizer="sgd",
        lr=1.0,
        momentum=0.0,
        weight_decay=weight_decay,
        weight_decay_mode="coupled",
        warmup_fraction=0.0,
        agc_clip=LAMBDA,
        grad_clip_norm=0.0,
    )
    return optim.build(cfg, total_steps=1000)


def _leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_agc_chain_matches_paper_formula(weight_decay):
    params, grads = _tree(np.random.default_rng(0))
    tx = _chain(weight_decay)
    jp, jg = jax.tree_util.tree_map(jnp.asarray, (params, grads))
    updates, _ = tx.update(jg, tx.init(jp), jp)
    got, p, g = _leaves(updates), _leaves(params), _leaves(grads)
    n_clipped = n_kept = 0  # tensors with at least one clipped / one untouched unit
    for key in got:
        is_head_kernel = "'head'" in key and key.endswith("['kernel']")
        expected = g[key] if is_head_kernel else agc_numpy(g[key], p[key])
        if key.endswith("['kernel']"):  # coupled L2 after clipping, only on kernels
            expected = expected + weight_decay * p[key]
        np.testing.assert_allclose(-got[key], expected, rtol=2e-5, atol=1e-8, err_msg=key)
        if not is_head_kernel:
            changed = ~np.isclose(agc_numpy(g[key], p[key]), g[key])
            n_clipped += int(changed.any())
            n_kept += int((~changed).any())
    # The test data must exercise both branches of the formula (kept: conv and SE kernels).
    assert n_clipped >= 6 and n_kept >= 2


def test_head_kernel_is_never_clipped_but_head_bias_is():
    params, grads = _tree(np.random.default_rng(1))
    grads["head"]["kernel"] = grads["head"]["kernel"] * 1e6
    grads["head"]["bias"] = np.full_like(grads["head"]["bias"], 1e3)
    tx = _chain()
    jp, jg = jax.tree_util.tree_map(jnp.asarray, (params, grads))
    updates, _ = tx.update(jg, tx.init(jp), jp)
    np.testing.assert_allclose(-np.asarray(updates["head"]["kernel"]), grads["head"]["kernel"], rtol=1e-6)
    # Zero-init bias: the norm is floored at eps, so the clipped update has norm lambda * eps (DM clips it).
    np.testing.assert_allclose(np.linalg.norm(np.asarray(updates["head"]["bias"])), LAMBDA * EPS, rtol=1e-5)


def test_conv_units_are_output_channels():
    """One huge-gradient output channel is clipped alone; the others pass unchanged."""
    rng = np.random.default_rng(2)
    p = {"conv": {"kernel": rng.normal(size=(3, 3, 4, 6)).astype(np.float32)}}
    g = {"conv": {"kernel": (1e-5 * rng.normal(size=(3, 3, 4, 6))).astype(np.float32)}}
    g["conv"]["kernel"][..., 2] *= 1e6
    tx = _chain()
    updates, _ = tx.update(jax.tree_util.tree_map(jnp.asarray, g), tx.init(p), jax.tree_util.tree_map(jnp.asarray, p))
    u = -np.asarray(updates["conv"]["kernel"])
    others = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(u[..., others], g["conv"]["kernel"][..., others], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(u[..., 2]), LAMBDA * np.linalg.norm(p["conv"]["kernel"][..., 2]), rtol=1e-5)
