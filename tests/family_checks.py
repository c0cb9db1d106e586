"""Helpers shared by the model-family tests (ResNet, CCT, DeiT, Swin, MobileViT).

Shapes and parameter counts without running an initialiser, random values in
a model's parameter shapes (XLA:CPU compiles random-number ops slowly), a PRNG
key whose random ops compile in seconds, XLA's forward FLOP count, and the
torch/timm import that skips a parity test cleanly where they are missing.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def shapes(model, image_size: int, channels: int = 3):
    """The parameter tree of ``model`` as ShapeDtypeStructs (traced, nothing computed)."""
    x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)["params"]


def count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def param_count(spec, num_classes: int, image_size: int, **kw) -> int:
    return count(shapes(spec.build(num_classes, image_size, **kw), image_size))


def random_params(model, image_size: int, seed: int = 0, scale: float = 0.1):
    """Random N(0, scale^2) values in the shapes of ``model``'s parameters, without compiling its initialiser."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        shapes(model, image_size))


def fast_key(seed: int):
    """A PRNG key whose random ops XLA:CPU compiles in seconds (threefry dropout masks take a minute)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def cost(fn, *args) -> float:
    """XLA's FLOP count of ``fn`` on these (abstract) arguments, from the lowered program (not compiled)."""
    c = jax.jit(fn).lower(*args).cost_analysis()
    return (c[0] if isinstance(c, list) else c)["flops"]


def xla_flops(model, image_size: int) -> float:
    """XLA's forward FLOPs of one example (valid conv taps only, elementwise ops included)."""
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return cost(lambda v, x: model.apply(v, x), variables, x)


def torch_and_timm():
    """(torch, timm), or skip the test where either cannot be imported."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    return torch, timm


def assert_close_to_reference(got, expected, rtol: float = 1e-4):
    got, expected = np.asarray(got), np.asarray(expected)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
