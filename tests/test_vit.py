"""ViT family: exact parameter counts vs timm, FLOPs vs SViT, init, posemb, scan, recipe."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scaling import config, optim
from scaling.errors import UserError
from scaling.models import registry
from scaling.models.kernels import LN_EPS, Dense, LayerNorm, heads_major_attention, resolve_attention_impl
from scaling.models.vit import (
    LADDER,
    VARIANTS,
    VisionTransformer,
    cost_analysis_twin,
    posemb_sincos_2d,
    scan_params_from_unrolled,
    vit_forward_flops,
)


def _param_shapes(model, image_size):
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _tiny(**kw) -> VisionTransformer:
    base = dict(num_classes=10, patch=4, width=32, depth=3, mlp_dim=64, num_heads=2)
    return VisionTransformer(**{**base, **kw})


# timm vit_{tiny,small,base,large}_patch16_224, 1000 classes (sum of p.numel()).
TIMM_PARAMS = {"ti": 5_717_416, "s": 22_050_664, "b": 86_567_656, "l": 304_326_632}


@pytest.mark.parametrize("variant", sorted(TIMM_PARAMS))
@pytest.mark.parametrize("scan", [False, True])
def test_original_config_param_count_equals_timm(variant, scan):
    model = registry.get(f"vit-{variant}/16").build(1000, 224, pool="cls", posemb="learn", scan=scan)
    assert _count(_param_shapes(model, 224)) == TIMM_PARAMS[variant]


def test_simple_config_has_no_learned_posemb_or_cls():
    params = _param_shapes(registry.get("vit-s/16").build(1000, 224), 224)
    assert "pos_embedding" not in params and "cls" not in params
    # The fixed posemb and missing token remove exactly 197 x 384 + 384 parameters.
    assert _count(params) == TIMM_PARAMS["s"] - 197 * 384 - 384


def test_variant_table_matches_reference():
    # big_vision decode_variant / SViT Table 2; heads divide width.
    assert VARIANTS["s"] == (384, 12, 1536, 6) and VARIANTS["G"] == (1664, 48, 8192, 16)
    assert VARIANTS["so400m"] == (1152, 27, 4304, 16)
    for width, _, _, heads in VARIANTS.values():
        assert width % heads == 0 and width % 4 == 0


def test_only_matrices_are_named_kernel():
    model = _tiny(pool="cls", posemb="learn", rep_size=16)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    mask = optim.decay_mask(params)
    for (path, leaf), decayed in zip(jax.tree_util.tree_leaves_with_path(params),
                                     jax.tree_util.tree_leaves(mask)):
        assert decayed == (leaf.ndim >= 2 and path[-1].key not in ("pos_embedding", "cls")), path
    assert params["pos_embedding"].shape == (1, 17, 32)  # N + 1 positions (ViT20 eq. 1, timm)
    assert set(params["head"]) == {"kernel", "bias"}


@pytest.mark.parametrize("name,reference", [("vit-s/16", 9.2e9), ("vit-b/16", 35.1e9)])
def test_analytic_flops_match_svit(name, reference):
    spec = registry.get(name)
    assert spec.forward_flops(224, 1000) == pytest.approx(reference, rel=0.02)
    w, d, m, _ = VARIANTS[name[4]]
    cls = vit_forward_flops(224, 1000, patch=16, width=w, depth=d, mlp_dim=m, pool="cls")
    assert cls == pytest.approx(reference, rel=0.02)


def test_analytic_flops_counts_every_matmul():
    # 2 x MACs: patch embedding, qkv + out projections, QK^T and AV, MLP, head.
    w, m, t = 64, 128, 64  # 32px with patch 4 -> 64 tokens
    per_token = 48 * w + 4 * w * w + 2 * w * m
    expected = 2 * (t * per_token + 2 * t * t * w + w * 10)
    assert vit_forward_flops(32, 10, patch=4, width=w, depth=1, mlp_dim=m) == expected
    # 4x the tokens: per-token terms x4, attention matmuls x16.
    expected4 = 2 * (4 * t * per_token + 2 * (4 * t) ** 2 * w + w * 10)
    assert vit_forward_flops(64, 10, patch=4, width=w, depth=1, mlp_dim=m) == expected4


def _xla_forward_flops(model, image_size):
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x)
    return lowered.compile().cost_analysis()["flops"]


@pytest.mark.parametrize("name,reference", [("vit-s/16", 9.2e9), ("vit-b/16", 35.1e9)])
def test_xla_flops_match_svit_with_and_without_scan(name, reference):
    spec = registry.get(name)
    plain = _xla_forward_flops(spec.build(1000, 224), 224)
    assert plain == pytest.approx(reference, rel=0.02)
    assert plain == pytest.approx(spec.forward_flops(224, 1000), rel=0.02)
    scanned = spec.build(1000, 224, scan=True)
    # XLA counts the scanned body once (documented undercount) ...
    assert _xla_forward_flops(scanned, 224) < plain / 6
    # ... and the unrolled twin gives the true count.
    assert _xla_forward_flops(cost_analysis_twin(scanned), 224) == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("pool,posemb", [("gap", "sincos2d"), ("cls", "learn"), ("cls", "sincos2d")])
def test_output_shape_dtype(pool, posemb):
    model = _tiny(pool=pool, posemb=posemb, dtype=jnp.bfloat16)
    x = jnp.ones((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    logits = model.apply(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))


def test_head_zero_init_gives_zero_logits():
    model = _tiny()
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert not np.any(np.asarray(variables["params"]["head"]["kernel"]))
    np.testing.assert_allclose(model.apply(variables, x), 0.0, atol=1e-5)  # head bias ~0
    # Without zero-init the logits are not zero (the test can fail).
    other = _tiny(head_zeroinit=False)
    assert np.abs(other.apply(other.init(jax.random.PRNGKey(0), x), x)).max() > 1e-2


def test_initialisers_follow_big_vision():
    width = 256
    model = VisionTransformer(num_classes=10, patch=4, width=width, depth=1, mlp_dim=512, num_heads=4)
    p = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"]["block_0"]
    # Each of q, k, v is Xavier-uniform on (width, width): variance 2 / (2 width).
    qkv = np.asarray(p["attn"]["qkv"]["kernel"])
    for block in np.split(qkv, 3, axis=1):
        assert np.var(block) == pytest.approx(1 / width, rel=0.05)
        assert np.abs(block).max() <= math.sqrt(3 / width)
    assert np.var(p["mlp"]["fc1"]["kernel"]) == pytest.approx(2 / (width + 512), rel=0.05)
    assert 0 < np.abs(p["mlp"]["fc1"]["bias"]).max() < 1e-5  # N(0, 1e-6)
    assert not np.any(np.asarray(p["attn"]["qkv"]["bias"]))


def test_sincos_posemb_properties():
    h, w, width = 4, 6, 32
    pe = np.asarray(posemb_sincos_2d(h, w, width))[0]
    assert pe.shape == (h * w, width)
    q = width // 4
    omega = 1e4 ** -(np.arange(q) / (q - 1))
    # Row-major grid: position (y=2, x=3) is row 2*w+3; channels sin x, cos x, sin y, cos y.
    np.testing.assert_allclose(pe[2 * w + 3], np.concatenate(
        [np.sin(3 * omega), np.cos(3 * omega), np.sin(2 * omega), np.cos(2 * omega)]), atol=1e-6)
    assert omega[0] == 1.0 and omega[-1] == pytest.approx(1e-4)
    # Dot products depend only on the relative offset (translation invariance).
    gram = pe @ pe.T
    idx = lambda y, x: y * w + x  # noqa: E731
    assert gram[idx(0, 0), idx(1, 2)] == pytest.approx(gram[idx(2, 3), idx(3, 5)], abs=1e-4)
    assert np.allclose(np.diag(gram), width / 2)
    assert len(np.unique(pe.round(5), axis=0)) == h * w  # all positions distinct
    with pytest.raises(ValueError):
        posemb_sincos_2d(2, 2, 30)


@pytest.mark.parametrize("pool,posemb", [("gap", "sincos2d"), ("cls", "learn")])
def test_scan_and_unrolled_agree(pool, posemb):
    unrolled = _tiny(pool=pool, posemb=posemb, head_zeroinit=False)
    scanned = unrolled.clone(scan=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    params = unrolled.init(jax.random.PRNGKey(0), x)["params"]
    mapped = scan_params_from_unrolled(params, unrolled.depth)
    assert jax.tree_util.tree_structure(mapped) == jax.tree_util.tree_structure(
        scanned.init(jax.random.PRNGKey(0), x)["params"])
    np.testing.assert_allclose(scanned.apply({"params": mapped}, x),
                               unrolled.apply({"params": params}, x), rtol=1e-5, atol=1e-5)


def test_dropout_uses_dropout_rng_only_when_training():
    model = _tiny(dropout=0.5, head_zeroinit=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    evals = model.apply(variables, x, train=False)
    np.testing.assert_allclose(evals, _tiny(head_zeroinit=False).apply(variables, x), atol=1e-6)
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, x, train=True)
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(a, b) and not np.allclose(a, evals)
    # Scanned blocks draw a different mask per layer from the same stream.
    s = model.clone(scan=True)
    sv = {"params": scan_params_from_unrolled(variables["params"], model.depth)}
    assert not np.allclose(s.apply(sv, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}),
                           s.apply(sv, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)}))


def test_registry_names_and_ladder():
    assert registry.get("vit-s/16").default_image_size == 224
    with pytest.raises(UserError, match="multiple of patch"):
        registry.get("vit-s/16").build(10, 200)
    for name in ("vit-ti/16", "vit-s/4", "vit-b/8", "vit-l/14", "vit-G/14", "vit-so400m/14"):
        assert registry.get(name).family == "vit"
    ladder = registry.ladder("vit")
    assert [s.name for s in ladder] == [f"vit-{k}/4" for k in LADDER]
    flops = [s.forward_flops(32, 10) for s in ladder]
    assert all(a < b for a, b in zip(flops, flops[1:]))
    assert 20 <= flops[-1] / flops[0] <= 40  # ~30x range of training compute
    for width, depth, mlp, heads in LADDER.values():
        assert 32 <= width // heads <= 64 and width % heads == 0 and width % 4 == 0


def test_ladder_shapes_follow_sovit_exponents():
    # Dimension k grows as u^s_k, so log(depth) / log(MLP) ~ 0.45/0.6 and
    # log(width) / log(MLP) ~ 0.22/0.6 across the ladder (up to rounding).
    w, d, m = (np.log([s[i] for s in LADDER.values()]) for i in range(3))
    slope = lambda a, b: np.polyfit(b - b[0], a - a[0], 1)[0]  # noqa: E731
    assert slope(d, m) == pytest.approx(0.45 / 0.6, abs=0.1)
    assert slope(w, m) == pytest.approx(0.22 / 0.6, abs=0.1)
    assert m[-1] - m[0] > d[-1] - d[0] > w[-1] - w[0] > 0  # MLP fastest, then depth, then width


def test_recipe_and_optimizer_equal_optax_adamw():
    cfg = config.resolve(config.TrainConfig(model="vit-c0/4", batch_size=256))
    assert (cfg.optimizer, cfg.b1, cfg.b2, cfg.grad_clip_norm) == ("adamw", 0.9, 0.999, 1.0)
    assert (cfg.weight_decay, cfg.weight_decay_mode, cfg.lr) == (0.1, "decoupled", 1e-3)
    big = config.resolve(config.TrainConfig(model="vit-s/16", batch_size=1024))
    assert big.lr == 1e-3 and big.mixup_alpha == 0.2
    assert config.resolve(config.TrainConfig(model="vit-s/16", batch_size=256)).lr == 5e-4

    total = 10
    ours = optim.build(cfg, total)
    ref = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(optim.schedule(cfg, total), b1=0.9, b2=0.999, weight_decay=0.1,
                    mask=optim.decay_mask),
    )
    model = _tiny(pool="cls", posemb="learn", depth=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    grad_fn = jax.grad(lambda p: model.apply({"params": p}, x).sum() + sum(
        (v ** 2).sum() for v in jax.tree_util.tree_leaves(p)))

    @jax.jit
    def steps(p1, p2):
        s1, s2 = ours.init(p1), ref.init(p2)
        for _ in range(3):
            u1, s1 = ours.update(grad_fn(p1), s1, p1)
            u2, s2 = ref.update(grad_fn(p2), s2, p2)
            p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        return p1, p2

    p1, p2 = steps(params, params)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(p1["block_0"]["attn"]["qkv"]["kernel"],
                           params["block_0"]["attn"]["qkv"]["kernel"])


def test_attention_impl_auto_takes_cudnn_only_where_it_applies():
    # cuDNN fused attention: NVIDIA GPU, half-precision activations, head dim a multiple of 8 up to 128.
    assert resolve_attention_impl("auto", jnp.bfloat16, 64, backend="gpu") == "cudnn"
    assert resolve_attention_impl("auto", jnp.float16, 128, backend="cuda") == "cudnn"
    assert resolve_attention_impl("auto", jnp.float32, 64, backend="gpu") is None
    assert resolve_attention_impl("auto", jnp.bfloat16, 64, backend="cpu") == "heads_major"
    assert resolve_attention_impl("auto", jnp.bfloat16, 64, backend="tpu") is None
    assert resolve_attention_impl("auto", jnp.bfloat16, 36, backend="gpu") is None
    assert resolve_attention_impl("auto", jnp.bfloat16, 256, backend="gpu") is None
    assert resolve_attention_impl("xla", jnp.bfloat16, 64, backend="gpu") == "xla"
    assert resolve_attention_impl(None, jnp.bfloat16, 64, backend="gpu") is None
    with pytest.raises(ValueError, match="attention_impl"):
        resolve_attention_impl("flash", jnp.bfloat16, 64, backend="gpu")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layernorm_equals_flax(dtype):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 7, 48)) * 3.0 + 1.5
    ours = LayerNorm(LN_EPS, dtype)
    theirs = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype)
    params = theirs.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(jnp.shape, params)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    y, y_ref = ours.apply(params, x), theirs.apply(params, x)
    assert y.dtype == y_ref.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), atol=tol, rtol=tol)
    g, g_ref = (jax.grad(lambda p, m=m: jnp.sum(jnp.sin(m.apply(p, x).astype(jnp.float32))))(params) for m in (ours, theirs))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=10 * tol, rtol=10 * tol)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_heads_major_attention_equals_dot_product_attention(dtype, tol):
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (3, 9, 4, 16)).astype(dtype) for i in range(3))
    y, y_ref = heads_major_attention(q, k, v), jax.nn.dot_product_attention(q, k, v)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_ref, np.float32), atol=tol, rtol=tol)

    def grads(f):
        return jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a).astype(jnp.float32))), argnums=(0, 1, 2))(q, k, v)

    for a, b in zip(grads(heads_major_attention), grads(jax.nn.dot_product_attention)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol, rtol=tol)


# Compiles the train and eval steps of every ViT code path with the family's
# CPU compiler options, in a child process: an XLA:CPU library that fails to
# compile a partition aborts the process (oneDNN's "DOT" fusion did so on
# jaxlib 0.10.2), which must fail this test, not kill the test run.
_COMPILE_EVERY_PATH = """
import jax
import numpy as np
from scaling import optim, steps
from scaling.config import TrainConfig, resolve
from scaling.models import registry
from scaling.platform import xla_cpu
cases = {
    "defaults": {},
    "original": dict(model_kwargs=dict(pool="cls", posemb="learn", rep_size=32, dropout=0.1),
                     mixup_alpha=0.2, label_smoothing=0.1, ema_decay=0.999),
    "scan-bf16": dict(model_kwargs=dict(scan=True), compute_dtype="bfloat16"),
}
options = xla_cpu.compiler_options(registry.get("vit-c0/4"))
print("options", bool(options), flush=True)
for name, kw in cases.items():
    cfg = resolve(TrainConfig(model="vit-c0/4", batch_size=8, **kw))
    parts = steps.build(cfg, 10, 32, np.zeros(3, np.float32), np.ones(3, np.float32))
    key = jax.random.key(0)
    state = jax.eval_shape(parts.init_state, key)
    images = jax.ShapeDtypeStruct((16, 32, 32, 3), np.uint8)
    labels = jax.ShapeDtypeStruct((16,), np.int32)
    idx = jax.ShapeDtypeStruct((8,), np.int32)
    train = parts.train_step.lower(state, images, labels, idx, key, optim.schedule_args(cfg, 100)).compile()
    mask = jax.ShapeDtypeStruct((16,), np.float32)
    parts.eval_step.lower(state["params"], images, labels, mask).compile()
    libs = sorted({lib for lib in ("onednn", "ynn") if lib + "_fusion" in train.as_text()})
    print("compiled", name, ",".join(libs), flush=True)
"""


def test_cpu_compiler_options_compile_every_vit_code_path():
    r = subprocess.run([sys.executable, "-c", _COMPILE_EVERY_PATH], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "SCALING_JAX_CACHE": "off"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    compiled = [line.split() for line in lines if line.startswith("compiled ")]
    assert [c[1] for c in compiled] == ["defaults", "original", "scan-bf16"]
    if lines[0] == "options True":  # x86-64: the GEMMs really went to oneDNN, reductions to YNNPACK
        assert all(c[2:] == ["onednn,ynn"] for c in compiled), compiled


@pytest.mark.parametrize("d_in,d_out", [(24, 56), (56, 24)])
def test_dense_equals_flax_dense_values_and_gradients(d_in, d_out):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, d_in))
    init = nn.initializers.xavier_uniform()
    ours, theirs = Dense(d_out, kernel_init=init), nn.Dense(d_out, kernel_init=init)
    params = theirs.init(jax.random.PRNGKey(1), x)
    mine = ours.init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(mine) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)):  # same initial values
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)

    def loss(m):
        return jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1)))

    (gp, gx), (gp_ref, gx_ref) = loss(ours)(params, x), loss(theirs)(params, x)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
