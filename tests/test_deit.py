"""DeiT family: exact timm parameter counts, FLOPs (analytic and XLA), the two heads in training and evaluation, ladder, recipe, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_checks import assert_close_to_reference, cost, count, random_params, shapes, torch_and_timm, xla_flops
from scaling import config, optim
from scaling.errors import UserError
from scaling.models import deit, layers, registry


def _tiny(**kw):
    return deit.DeiT(**{**dict(num_classes=10, patch=4, width=32, depth=2, num_heads=2), **kw})


# timm deit_{tiny,small,base}_distilled_patch16_224, 1000 classes.
TIMM_PARAMS = {"ti": 5_910_800, "s": 22_436_432, "b": 87_338_192}


@pytest.mark.parametrize("variant", list(TIMM_PARAMS))
def test_param_count_equals_timm(variant):
    params = shapes(registry.get(f"deit-{variant}/16").build(1000, 224), 224)
    assert count(params) == TIMM_PARAMS[variant]
    assert params["pos_embedding"].shape[1] == 14 * 14 + 2 and set(params["head_dist"]) == {"kernel", "bias"}


def test_forward_flops_deit_s_analytic_and_xla():
    spec = registry.get("deit-s/16")
    analytic = spec.forward_flops(224, 1000)
    assert analytic / 2e9 == pytest.approx(4.6, rel=0.03)  # DeiT Table 1 / timm: 4.6 GMAC
    xla = xla_flops(spec.build(1000, 224), 224)
    # XLA also counts elementwise work, and the exact (erf) GELU costs it 66 FLOPs
    # an element: +2.6% here. Without the GELUs (counted the same way) XLA agrees.
    gelus = 12 * cost(layers.gelu, jax.ShapeDtypeStruct((1, 198, 1536), jnp.float32))
    assert xla - gelus == pytest.approx(analytic, rel=0.01) and (xla - gelus) / 2e9 == pytest.approx(4.6, rel=0.03)
    assert xla == pytest.approx(analytic, rel=0.04)


def test_heads_split_in_training_and_average_in_evaluation():
    model = _tiny(drop_path_rate=0.0)
    params = random_params(model, 16)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, capture_intermediates=True,
                                             mutable=["intermediates"]))
    evals, inter = apply(params, x)
    tokens = inter["intermediates"]["norm"]["__call__"][0]
    head = lambda name, t: t @ params[name]["kernel"] + params[name]["bias"]  # noqa: E731
    cls, dist = head("head", tokens[:, 0]), head("head_dist", tokens[:, 1])
    np.testing.assert_allclose(evals, (cls + dist) / 2, rtol=1e-5, atol=1e-5)
    train = jax.jit(lambda p, x: model.apply({"params": p}, x, train=True))  # no dropout: no RNG needed
    split = np.asarray(train(params, x))
    np.testing.assert_allclose(split[0::2], cls[0::2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split[1::2], dist[1::2], rtol=1e-5, atol=1e-5)
    assert not np.allclose(cls, dist, atol=1e-3)  # the two heads differ, so the test can fail
    avg = model.clone(train_heads="average")
    np.testing.assert_allclose(jax.jit(lambda p, x: avg.apply({"params": p}, x, train=True))(params, x), evals,
                               rtol=1e-5, atol=1e-5)


def test_stochastic_depth_uses_the_dropout_rng_and_dtype():
    model = _tiny(drop_path_rate=0.5, dtype=jnp.bfloat16)
    params = random_params(model, 16)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    train = jax.jit(lambda p, x, k: model.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    a = train(params, x, jax.random.key(1, impl="unsafe_rbg"))
    b = train(params, x, jax.random.key(2, impl="unsafe_rbg"))
    assert a.dtype == jnp.float32 and not np.allclose(np.asarray(a), np.asarray(b))
    assert deit.DeiT(10).drop_path_rate == 0.1


def test_init_follows_timm():
    params = jax.jit(_tiny(width=256, num_heads=4).init)(jax.random.key(0, impl="unsafe_rbg"),
                                                         jnp.zeros((1, 16, 16, 3)))["params"]
    assert np.std(np.asarray(params["block0"]["mlp"]["fc1"]["kernel"])) == pytest.approx(0.02, rel=0.05)
    assert np.std(np.asarray(params["pos_embedding"])) == pytest.approx(0.02, rel=0.1)
    assert np.abs(np.asarray(params["cls"])).max() < 1e-5
    assert not np.any(np.asarray(params["block0"]["attn"]["qkv"]["bias"]))
    mask = optim.decay_mask(params)
    assert mask["head_dist"]["kernel"] and not mask["pos_embedding"] and not mask["dist"] and not mask["cls"]


def test_ladder_and_recipe():
    ladder = registry.ladder("deit")
    assert [s.name for s in ladder] == [f"deit-{k}/4" for k in deit.LADDER]
    counts = [count(shapes(s.build(10, 32), 32)) for s in ladder]
    assert all(a < b for a, b in zip(counts, counts[1:])) and counts[0] < 0.2e6 and 9e6 < counts[-1] < 11e6
    for width, heads in deit.LADDER.values():
        assert width // heads <= 64 and width % heads == 0
    cfg = config.resolve(config.TrainConfig(model="deit-s/16", batch_size=1024))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.weight_decay_mode) == ("adamw", 1e-3, 0.05, "decoupled")
    assert cfg.label_smoothing == 0.1 and cfg.warmup_fraction == pytest.approx(5 / 300) and cfg.grad_clip_norm == 0


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        registry.get("deit-xl/16")
    with pytest.raises(UserError, match="not a multiple of patch 16"):
        registry.get("deit-s/16").build(1000, 200)
    with pytest.raises(UserError, match="deit-c0/4.*not a multiple of patch 4"):
        config.resolve(config.TrainConfig(model="deit-c0/4", image_size=30, model_kwargs={"drop_path_rate": 0.0}))
    with pytest.raises(UserError, match="train_heads"):
        config.resolve(config.TrainConfig(model="deit-c0/4", model_kwargs={"train_heads": "teacher"}))


def test_forward_matches_timm_with_copied_weights():
    torch, timm = torch_and_timm()
    ref = timm.create_model("deit_small_distilled_patch16_224", pretrained=False).eval()
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    lin = lambda n: {"kernel": sd[f"{n}.weight"].T, "bias": sd[f"{n}.bias"]}  # noqa: E731
    ln = lambda n: {"scale": sd[f"{n}.weight"], "bias": sd[f"{n}.bias"]}  # noqa: E731
    params = {
        "embedding": {"kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "bias": sd["patch_embed.proj.bias"]},
        "cls": sd["cls_token"], "dist": sd["dist_token"], "pos_embedding": sd["pos_embed"],
        "norm": ln("norm"), "head": lin("head"), "head_dist": lin("head_dist"),
    }
    for i in range(12):
        t = f"blocks.{i}"
        params[f"block{i}"] = {"norm1": ln(f"{t}.norm1"), "norm2": ln(f"{t}.norm2"),
                               "attn": {"qkv": lin(f"{t}.attn.qkv"), "proj": lin(f"{t}.attn.proj")},
                               "mlp": {"fc1": lin(f"{t}.mlp.fc1"), "fc2": lin(f"{t}.mlp.fc2")}}
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = registry.get("deit-s/16").build(1000, 224).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close_to_reference(got, expected)
