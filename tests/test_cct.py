"""CCT family: the repo's parameter counts and MACs, tokenizer, sequence pooling, FLOPs (analytic and XLA), recipe, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_checks import count, fast_key, random_params, shapes, xla_flops
from scaling import config
from scaling.errors import UserError
from scaling.models import cct, registry


def _tiny(**kw):
    base = dict(num_classes=10, num_layers=2, width=32, num_heads=2, mlp_ratio=1.0, kernel=3, n_conv=2)
    return cct.CCT(**{**base, **kw})


# Compact-Transformers README (params, GMACs); 32 px variants with 10 classes, 224 px with 1000.
# The README's CCT-6/3x1 row (3.168M) counts no position embedding (sine): ours with
# posemb="sine" gives it; with the learned embedding it is 256 x 256 more.
PUBLISHED = {
    "cct-2/3x2": (0.284e6, 0.033), "cct-4/3x2": (0.482e6, 0.046), "cct-6/3x2": (3.327e6, 0.241),
    "cct-7/3x2": (3.853e6, 0.275), "cct-7/3x1": (3.760e6, 0.947), "cct-14/7x2": (22.36e6, 5.11),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_macs_match_the_repo(name):
    spec = registry.get(name)
    px = spec.default_image_size
    nc = 10 if px == 32 else 1000
    params, gmacs = PUBLISHED[name]
    assert count(shapes(spec.build(nc, px), px)) == pytest.approx(params, rel=0.005 if px == 32 else 0.001)
    layers, kernel, n_conv, _ = cct.VARIANTS[name]
    # The repo's MACs leave out the attention matmuls; ours count them.
    assert cct.cct_forward_macs(px, nc, layers, kernel, n_conv, attention_matmuls=False) / 1e9 == pytest.approx(
        gmacs, abs=0.0015 if gmacs < 1 else 0.01)
    assert spec.forward_flops(px, nc) > 2 * gmacs * 1e9


def test_cct_7_3x1_exact_count_and_sine_variant():
    assert count(shapes(registry.get("cct-7/3x1").build(10, 32), 32)) == 3_760_139  # README: 3.76M
    sine = shapes(registry.get("cct-6/3x1").build(10, 32, posemb="sine"), 32)
    assert "pos_embedding" not in sine and round(count(sine) / 1e3) == 3168  # README: 3.168M


def test_xla_flops_match_analytic():
    spec = registry.get("cct-7/3x1")
    xla = xla_flops(spec.build(10, 32), 32)
    # XLA also counts the elementwise ops (exact GELU, softmax over 256 x 256
    # attention maps, LayerNorm): measured +3.3% here.
    assert xla == pytest.approx(spec.forward_flops(32, 10), rel=0.05)


def test_tokenizer_geometry_and_sequence_length():
    assert cct.tokenizer_geometry(3) == (1, 1) and cct.tokenizer_geometry(7) == (2, 3)
    assert cct.token_grid(32, 3, 1) == 16 and cct.token_grid(32, 3, 2) == 8  # 256 / 64 tokens
    assert cct.token_grid(224, 7, 2) == 14  # 196 tokens
    params = shapes(registry.get("cct-7/3x2").build(10, 32), 32)
    assert params["tokenizer_conv0"]["kernel"].shape == (3, 3, 3, 64)
    assert params["tokenizer_conv1"]["kernel"].shape == (3, 3, 64, 256)
    assert "bias" not in params["tokenizer_conv0"] and params["pos_embedding"].shape == (1, 64, 256)
    assert "bias" not in params["block0"]["qkv"] and params["attention_pool"]["kernel"].shape == (256, 1)


def test_sequence_pooling_is_a_softmax_weighted_mean():
    model = _tiny(attention_dropout=0.0, stochastic_depth=0.0)
    params = random_params(model, 16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    # A zero pooling kernel weights every token equally: the head sees the token mean.
    flat = params.copy()
    flat["attention_pool"] = {"kernel": jnp.zeros((32, 1)), "bias": jnp.zeros(1)}
    flat["head"] = {"kernel": jnp.eye(32, 10), "bias": jnp.zeros(10)}
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, capture_intermediates=True,
                                             mutable=["intermediates"]))
    out, inter = apply(flat, x)
    tokens = inter["intermediates"]["norm"]["__call__"][0]
    np.testing.assert_allclose(out, tokens.mean(axis=1)[:, :10], rtol=1e-5, atol=1e-5)
    # With a random pooling kernel the result is a convex combination, not the mean.
    out2, _ = apply({**flat, "attention_pool": params["attention_pool"]}, x)
    assert not np.allclose(out2, out, atol=1e-4)


def test_sinusoidal_posemb_is_the_repos_formula():
    pe = cct.sinusoidal_posemb(5, 8)[0]
    p, i = 3, 5
    assert pe[p, i] == pytest.approx(math.cos(p / 10000 ** (2 * (i // 2) / 8)), abs=1e-6)
    assert pe[p, 4] == pytest.approx(math.sin(p / 10000 ** (4 / 8)), abs=1e-6)


def test_dropout_and_stochastic_depth_use_the_dropout_rng():
    model = _tiny(dtype=jnp.bfloat16)
    params = random_params(model, 16)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    evals = jax.jit(model.apply)({"params": params}, x)
    assert evals.shape == (4, 10) and evals.dtype == jnp.float32
    train = jax.jit(lambda p, x, k: model.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    a, b = train(params, x, fast_key(1)), train(params, x, fast_key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    assert registry.get("cct-7/3x1").build(10, 32).stochastic_depth == 0.1  # the repo's defaults
    assert cct.CCT(10).attention_dropout == 0.1


def test_ladder_and_recipe():
    ladder = registry.ladder("cct")
    assert [s.name for s in ladder] == [n for n, v in cct.VARIANTS.items() if v[3] == 32]
    flops = [s.forward_flops(32, 10) for s in ladder]
    assert all(a < b for a, b in zip(flops, flops[1:]))
    cfg = config.resolve(config.TrainConfig(model="cct-7/3x1", batch_size=128))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.weight_decay_mode) == ("adamw", 5.5e-4, 0.06, "decoupled")
    assert cfg.label_smoothing == 0.1 and cfg.warmup_fraction == pytest.approx(1 / 30)
    assert config.resolve(config.TrainConfig(model="cct-2/3x2", batch_size=512)).lr == pytest.approx(1.1e-3)


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        registry.get("cct-5/3x1")
    with pytest.raises(UserError, match="do not fit cct-7/3x1.*heads"):
        config.resolve(config.TrainConfig(model="cct-7/3x1", model_kwargs={"num_heads": 3}))
    with pytest.raises(UserError, match="do not fit cct-2/3x2.*posemb"):
        config.resolve(config.TrainConfig(model="cct-2/3x2", model_kwargs={"posemb": "rope"}))
