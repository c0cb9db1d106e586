"""MobileViT family: exact timm parameter counts, FLOPs (analytic and XLA), unfold/fold,
the resize of odd maps, inverted residuals, init, ladder, recipe, bad input, timm parity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_cli
from family_checks import (assert_close_to_reference, count, fast_key, param_count, random_params, shapes,
                           torch_and_timm, xla_flops)
from scaling import config, optim
from scaling.errors import UserError
from scaling.models import layers, mobilevit, registry

# timm mobilevit_{xxs,xs,s}, 1000 classes (timm 1.0.31: sum of p.numel(), as the issue gives them).
TIMM_PARAMS = {"xxs": 1_272_024, "xs": 2_317_848, "s": 5_578_632}


def _tiny(**kw):
    base = dict(num_classes=10, channels=(8, 8, 8, 16, 16, 16), dims=(16, 16, 16), depths=(1, 1, 1),
                expansion=2.0, num_features=32, stem="cifar")
    return mobilevit.MobileViT(**{**base, **kw})


@pytest.mark.parametrize("variant", list(TIMM_PARAMS))
def test_param_count_equals_timm(variant):
    spec = registry.get(f"mobilevit-{variant}")
    assert param_count(spec, 1000, 256) == TIMM_PARAMS[variant]
    assert param_count(spec, 1000, 224) == TIMM_PARAMS[variant]  # the resize adds nothing


def test_forward_flops_analytic_and_xla():
    spec = registry.get("mobilevit-s")
    analytic = spec.forward_flops(256, 1000)
    assert analytic / 2 == 2_000_831_488  # 2.0 GMAC at 256 px; XS 1.03, XXS 0.41
    assert registry.get("mobilevit-xs").forward_flops(256, 1000) / 2e9 == pytest.approx(1.03, abs=0.005)
    assert registry.get("mobilevit-xxs").forward_flops(256, 1000) / 2e9 == pytest.approx(0.41, abs=0.005)
    xla = xla_flops(spec.build(1000, 256), 256)
    # XLA counts valid conv taps only and adds the elementwise work (SiLU, norms, softmax, GELU-free MLPs).
    assert xla == pytest.approx(analytic, rel=0.06), (xla, analytic)
    ladder = xla_flops(registry.get("mobilevit-c2").build(10, 32), 32)
    assert ladder == pytest.approx(registry.get("mobilevit-c2").forward_flops(32, 10), rel=0.08)


def test_unfold_groups_pixel_positions_and_fold_inverts_it():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 4, 3)), jnp.float32)
    t = mobilevit.unfold(x, 2)
    assert t.shape == (2 * 4, 6, 3)  # (batch x 4 pixel positions, 3 x 2 patches, C)
    # Sequence (b, ph, pw) lists pixel (ph, pw) of every patch, patches row-major.
    for b in range(2):
        for ph in range(2):
            for pw in range(2):
                seq = np.asarray(t[b * 4 + ph * 2 + pw])
                np.testing.assert_array_equal(seq.reshape(3, 2, 3), np.asarray(x[b, ph::2, pw::2]))
    np.testing.assert_array_equal(mobilevit.fold(t, 2, 6, 4), x)


def test_odd_maps_are_resized_bilinearly_as_torch():
    # torch interpolate(bilinear, align_corners=False): source = (i + 0.5) * in/out - 0.5, clamped at 0.
    x = np.random.default_rng(0).standard_normal((1, 7, 7, 2)).astype(np.float32)

    def ref(a, n):
        src = np.maximum((np.arange(n) + 0.5) * a.shape[0] / n - 0.5, 0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, a.shape[0] - 1)
        f = (src - lo)[:, None, None]
        return a[lo] * (1 - f) + a[hi] * f

    up = ref(ref(x[0], 8).transpose(1, 0, 2), 8).transpose(1, 0, 2)
    np.testing.assert_allclose(np.asarray(mobilevit._resize(jnp.asarray(x), 8, 8))[0], up, rtol=1e-5, atol=1e-6)
    down = ref(ref(up, 7).transpose(1, 0, 2), 7).transpose(1, 0, 2)
    np.testing.assert_allclose(np.asarray(mobilevit._resize(jnp.asarray(up[None]), 7, 7))[0], down,
                               rtol=1e-5, atol=1e-6)
    block = mobilevit.MobileViTBlock(features=8, dim=16, depth=1)
    out = jax.eval_shape(lambda x: block.init_with_output(jax.random.key(0), x, False)[0], jnp.zeros((1, 7, 7, 8)))
    assert out.shape == (1, 7, 7, 8)


def test_inverted_residual_shortcut_and_mobilevit_block_layout():
    params = shapes(registry.get("mobilevit-s").build(1000, 256), 256)
    assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, 16)
    ir = params["stage2_ir1"]
    assert ir["conv1_1x1"]["conv"]["kernel"].shape == (1, 1, 64, 256)  # expansion 4 on the input
    assert ir["conv2_kxk"]["conv"]["kernel"].shape == (3, 3, 1, 256)  # depthwise
    mv = params["stage3_mvit"]
    assert mv["conv_1x1"]["conv"]["kernel"].shape == (1, 1, 96, 144) and "norm" not in mv["conv_1x1"]
    assert mv["conv_fusion"]["conv"]["kernel"].shape == (3, 3, 192, 96)
    assert mv["transformer1"]["mlp"]["fc1"]["kernel"].shape == (144, 288) and "transformer2" not in mv
    assert params["final_conv"]["conv"]["kernel"].shape == (1, 1, 160, 640)
    # The identity shortcut only where shapes agree: its last norm starts at 0, others at 1.
    init = jax.jit(_tiny(channels=(8, 8, 16, 16, 16, 16)).init)(fast_key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    assert not np.any(np.asarray(init["stage2_ir1"]["conv3_1x1"]["norm"]["scale"]))  # 16 -> 16, stride 1
    assert np.all(np.asarray(init["stage2_ir0"]["conv3_1x1"]["norm"]["scale"]) == 1)  # 8 -> 16 ch
    assert np.all(np.asarray(init["stage3_ir0"]["conv3_1x1"]["norm"]["scale"]) == 1)  # strided: no shortcut


def test_init_follows_timm_byobnet():
    params = jax.jit(_tiny(channels=(8, 8, 64, 64, 64, 64), dims=(64, 64, 64)).init)(
        fast_key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    dw = np.asarray(params["stage2_ir1"]["conv2_kxk"]["conv"]["kernel"])  # depthwise: fan-out 3 x 3
    assert np.std(dw) == pytest.approx(np.sqrt(2 / 9), rel=0.1)
    pw = np.asarray(params["stage2_ir1"]["conv1_1x1"]["conv"]["kernel"])  # 1x1, 128 outputs
    assert np.std(pw) == pytest.approx(np.sqrt(2 / 128), rel=0.1)
    fc1 = np.asarray(params["stage3_mvit"]["transformer0"]["mlp"]["fc1"]["kernel"])
    assert np.std(fc1) == pytest.approx(0.01, rel=0.1)
    mask = optim.decay_mask(params)
    assert mask["stage3_mvit"]["transformer0"]["attn"]["qkv"]["kernel"] and not mask["stem"]["norm"]["scale"]


def test_dropout_rng_dtype_and_silu_mlp():
    model = _tiny(dropout=0.3, dtype=jnp.bfloat16)
    params = random_params(model, 16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    evals = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    assert evals.shape == (2, 10) and evals.dtype == jnp.float32
    train = jax.jit(lambda p, x, k: model.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    assert not np.allclose(np.asarray(train(params, x, fast_key(1))), np.asarray(train(params, x, fast_key(2))))
    assert layers.gn_groups(16) == 8 and layers.gn_groups(640) == 32 and layers.gn_groups(24) == 12


def test_ladder_and_recipe():
    ladder = registry.ladder("mobilevit")
    assert [s.name for s in ladder] == [f"mobilevit-{k}" for k in mobilevit.LADDER]
    counts = [param_count(s, 10, 32) for s in ladder]
    flops = [s.forward_flops(32, 10) for s in ladder]
    assert all(a < b for a, b in zip(counts, counts[1:])) and all(a < b for a, b in zip(flops, flops[1:]))
    assert 0.05e6 <= counts[0] <= 0.15e6 and 9e6 <= counts[-1] <= 12e6, counts
    # Small-image stem: the MobileViT blocks of a 32 px input see 16, 8 and 4 px maps.
    model = ladder[0].build(10, 32)
    _, state = jax.eval_shape(lambda x: model.init_with_output(
        jax.random.key(0), x, capture_intermediates=True, mutable=["params", "intermediates"]), jnp.zeros((1, 32, 32, 3)))
    assert [state["intermediates"][f"stage{i}_mvit"]["__call__"][0].shape[1] for i in (3, 4, 5)] == [16, 8, 4]
    cfg = config.resolve(config.TrainConfig(model="mobilevit-s", batch_size=1024))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.weight_decay_mode) == ("adamw", 2e-3, 0.01, "decoupled")
    assert cfg.label_smoothing == 0.1 and cfg.grad_clip_norm == 0


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown model 'mobilevit-m'"):
        registry.get("mobilevit-m")
    with pytest.raises(UserError, match="fixed by the variant"):
        registry.get("mobilevit-c0").build(10, 32, stem="imagenet")
    with pytest.raises(UserError, match="too small"):
        registry.get("mobilevit-s").build(1000, 16)
    r = run_cli("scaling.train", "--model", "mobilevit-c0", "--model-kwargs", '{"dims": [8, 8, 8]}', "--steps", "1",
                "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "fixed by the variant" in r.stderr, r.stderr


@pytest.mark.parametrize("image_size", [256, 224])  # 224: the last stage's 7 x 7 map is resized
def test_forward_matches_timm_with_copied_weights(image_size):
    torch, timm = torch_and_timm()
    import torch.nn.functional as F

    ref = timm.create_model("mobilevit_xxs", pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # random norm affines (their inits would hide mistakes)
            if p.ndim == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    for m in ref.modules():  # GroupNorm in place of BatchNorm, as this family (same parameters)
        if isinstance(m, torch.nn.BatchNorm2d):
            g = layers.gn_groups(m.num_features)
            m.forward = lambda x, m=m, g=g: m.act(m.drop(F.group_norm(x, g, m.weight, m.bias, m.eps)))
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    lin = lambda n: {"kernel": sd[f"{n}.weight"].T, "bias": sd[f"{n}.bias"]}  # noqa: E731
    ln = lambda n: {"scale": sd[f"{n}.weight"], "bias": sd[f"{n}.bias"]}  # noqa: E731

    def cna(n, norm=True):
        out = {"conv": {"kernel": sd[f"{n}.conv.weight" if norm else f"{n}.weight"].transpose(2, 3, 1, 0)}}
        if norm:
            out["norm"] = ln(f"{n}.bn")
        return out

    ir = lambda n: {k: cna(f"{n}.{k}") for k in ("conv1_1x1", "conv2_kxk", "conv3_1x1")}  # noqa: E731
    params = {"stem": cna("stem"), "final_conv": cna("final_conv"), "head": lin("head.fc"),
              "stage1_ir0": ir("stages.0.0")}
    params.update({f"stage2_ir{j}": ir(f"stages.1.{j}") for j in range(3)})
    for i, depth in zip((3, 4, 5), mobilevit.DEPTHS):
        t = f"stages.{i - 1}.1"
        params[f"stage{i}_ir0"] = ir(f"stages.{i - 1}.0")
        mv = {"conv_kxk": cna(f"{t}.conv_kxk"), "conv_1x1": cna(f"{t}.conv_1x1", norm=False),
              "norm": ln(f"{t}.norm"), "conv_proj": cna(f"{t}.conv_proj"), "conv_fusion": cna(f"{t}.conv_fusion")}
        for k in range(depth):
            b = f"{t}.transformer.{k}"
            mv[f"transformer{k}"] = {"norm1": ln(f"{b}.norm1"), "norm2": ln(f"{b}.norm2"),
                                     "attn": {"qkv": lin(f"{b}.attn.qkv"), "proj": lin(f"{b}.attn.proj")},
                                     "mlp": {"fc1": lin(f"{b}.mlp.fc1"), "fc2": lin(f"{b}.mlp.fc2")}}
        params[f"stage{i}_mvit"] = mv
    assert count(params) == TIMM_PARAMS["xxs"]
    x = np.random.default_rng(0).standard_normal((2, 3, image_size, image_size)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    model = registry.get("mobilevit-xxs").build(1000, image_size)
    got = model.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close_to_reference(got, expected)
