"""Swin family: exact timm parameter counts, FLOPs (analytic and XLA), windows, shift mask,
relative positions, patch merging, ladder, recipe, bad input, forward parity with timm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_cli
from family_checks import (assert_close_to_reference, cost, count, fast_key, param_count, random_params, shapes,
                           torch_and_timm, xla_flops)
from scaling import config, optim
from scaling.errors import UserError
from scaling.models import layers, registry, swin

# timm swin_{tiny,small,base}_patch4_window7_224, 1000 classes (timm 1.0.31: sum of p.numel()).
TIMM_PARAMS = {"t": 28_288_354, "s": 49_606_258, "b": 87_768_224}


def _tiny(**kw):
    return swin.Swin(**{**dict(num_classes=10, patch=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                               window_size=2), **kw})


@pytest.mark.parametrize("variant", list(TIMM_PARAMS))
def test_param_count_equals_timm(variant):
    assert param_count(registry.get(f"swin-{variant}"), 1000, 224) == TIMM_PARAMS[variant]


def test_forward_flops_swin_t_analytic_and_xla():
    spec = registry.get("swin-t")
    analytic = spec.forward_flops(224, 1000)
    assert analytic / 2e9 == pytest.approx(4.5, rel=0.03)  # Swin Table 1 / timm: 4.5 GMAC
    assert analytic / 2 == 4_490_566_656
    xla = xla_flops(spec.build(1000, 224), 224)
    # XLA also counts elementwise work; the exact (erf) GELU costs it ~66 FLOPs an
    # element. Without the GELUs (counted the same way) XLA agrees within 1.5%.
    gelus = 0
    for res, dim, depth in ((56, 96, 2), (28, 192, 2), (14, 384, 6), (7, 768, 2)):
        gelus += depth * cost(layers.gelu, jax.ShapeDtypeStruct((1, res * res, 4 * dim), jnp.float32))
    assert xla - gelus == pytest.approx(analytic, rel=0.015), (xla, gelus, analytic)
    assert (xla - gelus) / 2e9 == pytest.approx(4.5, rel=0.03)
    assert xla == pytest.approx(analytic, rel=0.05)


def test_window_partition_and_reverse_round_trip():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 12, 3)), jnp.float32)
    w = swin.window_partition(x, 4)
    assert w.shape == (2, 6, 16, 3)
    # Window 1 (row 0, column 1 of the window grid) holds rows 0..3, columns 4..7, row-major.
    np.testing.assert_array_equal(w[:, 1].reshape(2, 4, 4, 3), x[:, 0:4, 4:8])
    np.testing.assert_array_equal(w[:, 3].reshape(2, 4, 4, 3), x[:, 4:8, 0:4])
    np.testing.assert_array_equal(swin.window_reverse(w, 4, 8, 12), x)


def test_shift_mask_follows_the_regions_of_the_unshifted_map():
    h = w = 8
    window, shift = 4, 2
    mask = swin.shifted_window_mask(h, w, window, shift)
    assert mask.shape == (4, 16, 16) and set(np.unique(mask)) == {0.0, swin.MASK_VALUE}
    # Definition: after rolling by -shift, a token at (r, c) wrapped around in an axis
    # when r >= h - shift (c >= w - shift); two tokens of a window may attend iff they
    # wrapped alike in both axes.
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wrapped = np.stack([rows >= h - shift, cols >= w - shift], -1).astype(np.float32)
    wins = np.asarray(swin.window_partition(jnp.asarray(wrapped)[None], window))[0]  # (nW, 16, 2)
    allowed = (wins[:, :, None, :] == wins[:, None, :, :]).all(-1)
    np.testing.assert_array_equal(mask == 0, allowed)
    assert not np.any(mask[0]) and np.any(mask[3])  # the first window has no wrapped token, the last mixes four


def test_shifted_block_does_not_attend_across_regions():
    """In an 8x8 map, window 4, shift 2, the roll puts original rows/columns 0, 1 at 6, 7:
    original (0, 0) shares the last shifted window with (1, 1), (0, 1) (wrapped alike: visible)
    and with (6, 6), (7, 7), (6, 1) (not wrapped, or in one axis only: masked)."""
    block = swin.SwinBlock(num_heads=2, window=4, shift=2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 8, 16)), jnp.float32)
    variables = jax.eval_shape(lambda x: block.init(jax.random.key(0), x, False), x)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype), variables)
    jac = jax.jacobian(lambda x: block.apply(variables, x, False)[0, 0, 0].sum())(x)
    seen = np.abs(np.asarray(jac[0])).sum(-1) > 0  # which input tokens the output at (0, 0) depends on
    expected = np.zeros((8, 8), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(seen, expected)
    # Without the mask the same shifted window would mix all 16 (the test can fail).
    unmasked = swin.SwinBlock(num_heads=2, window=4, shift=0)
    rolled = lambda x: jnp.roll(x, (-2, -2), axis=(1, 2))  # noqa: E731
    jac = jax.jacobian(lambda x: unmasked.apply(variables, rolled(x), False)[0, 6, 6].sum())(x)
    assert (np.abs(np.asarray(jac[0])).sum(-1) > 0).sum() == 16


def test_relative_position_index_is_the_offset_of_the_two_tokens():
    w = 3
    idx = swin.relative_position_index(w)
    assert idx.shape == (9, 9) and set(idx.ravel()) == set(range((2 * w - 1) ** 2))
    center = (w - 1) * (2 * w - 1) + (w - 1)
    assert np.all(np.diag(idx) == center)
    for i in range(w * w):
        for j in range(w * w):
            dy, dx = i // w - j // w, i % w - j % w
            assert idx[i, j] == (dy + w - 1) * (2 * w - 1) + (dx + w - 1)
    np.testing.assert_array_equal(idx + idx.T, 2 * center)


def test_relative_bias_is_added_per_head_from_the_table():
    attn = swin.WindowAttention(num_heads=2, window=2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 1, 4, 8)), jnp.float32)
    variables = jax.eval_shape(lambda x: attn.init(jax.random.key(0), x, None, False), x)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
    # q = k = 0: uniform attention, unless the bias table says otherwise.
    table = jnp.zeros((9, 2)).at[swin.relative_position_index(2)[0, 3], 1].set(50.0)
    v_kernel = jnp.zeros((8, 24)).at[:, 16:].set(jnp.eye(8))  # qkv -> (q, k, v) = (0, 0, x)
    params = {**zero["params"], "relative_position_bias_table": table,
              "qkv": {"kernel": v_kernel, "bias": jnp.zeros(24)},
              "proj": {"kernel": jnp.eye(8), "bias": jnp.zeros(8)}}
    y = np.asarray(attn.apply({"params": params}, x, None, False))[0, 0]
    xs = np.asarray(x)[0, 0]
    np.testing.assert_allclose(y[0, :4], xs.mean(0)[:4], rtol=1e-5)  # head 0: no bias, the mean
    np.testing.assert_allclose(y[0, 4:], xs[3, 4:], rtol=1e-5)  # head 1: token 0 looks at token 3
    np.testing.assert_allclose(y[1, 4:], xs.mean(0)[4:], rtol=1e-5)


def test_patch_merging_order_and_stage_shapes():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    m = swin.patch_merge(x)
    assert m.shape == (2, 2, 2, 12)
    for k, (dy, dx) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        np.testing.assert_array_equal(m[..., 3 * k:3 * k + 3], x[:, dy::2, dx::2])
    params = shapes(registry.get("swin-t").build(1000, 224), 224)
    assert params["stage1_merge_norm"]["scale"].shape == (384,)
    assert params["stage1_merge_reduction"]["kernel"].shape == (384, 192)
    assert "bias" not in params["stage1_merge_reduction"]
    assert params["stage3_block1"]["attn"]["relative_position_bias_table"].shape == (169, 24)


def test_small_maps_use_one_window_without_shift():
    assert swin.stage_geometry(4, 4, 2) == (4, 0) and swin.stage_geometry(2, 4, 2) == (2, 0)
    assert swin.stage_geometry(8, 4, 2) == (4, 2)
    assert swin.check_geometry(32, 2, 4, 3) == [(16, 4), (8, 4), (4, 4)]
    assert swin.check_geometry(224, 4, 7, 4) == [(56, 7), (28, 7), (14, 7), (7, 7)]
    params = shapes(registry.get("swin-c2").build(10, 32), 32)
    assert params["stage2_block1"]["attn"]["relative_position_bias_table"].shape == (49, 4)


def test_stochastic_depth_uses_the_dropout_rng_and_dtype():
    model = _tiny(drop_path_rate=0.5, dtype=jnp.bfloat16)
    params = random_params(model, 8)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    evals = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    assert evals.shape == (4, 10) and evals.dtype == jnp.float32
    train = jax.jit(lambda p, x, k: model.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    assert not np.allclose(np.asarray(train(params, x, fast_key(1))), np.asarray(train(params, x, fast_key(2))))
    assert registry.get("swin-t").build(1000, 224).drop_path_rate == 0.2
    assert layers.drop_path_rates(0.2, 12)[-1] == 0.2


def test_init_follows_timm():
    params = jax.jit(_tiny(embed_dim=64, num_heads=(2, 4)).init)(fast_key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    blk = params["stage0_block0"]
    assert np.std(np.asarray(blk["mlp"]["fc1"]["kernel"])) == pytest.approx(0.02, rel=0.05)
    assert np.std(np.asarray(blk["attn"]["relative_position_bias_table"])) == pytest.approx(0.02, rel=0.3)
    assert not np.any(np.asarray(blk["attn"]["qkv"]["bias"]))
    mask = optim.decay_mask(params)
    assert mask["stage0_block0"]["attn"]["qkv"]["kernel"]
    assert not mask["stage0_block0"]["attn"]["relative_position_bias_table"]


def test_ladder_and_recipe():
    ladder = registry.ladder("swin")
    assert [s.name for s in ladder] == [f"swin-{k}" for k in swin.LADDER]
    counts = [param_count(s, 10, 32) for s in ladder]
    flops = [s.forward_flops(32, 10) for s in ladder]
    assert all(a < b for a, b in zip(counts, counts[1:])) and all(a < b for a, b in zip(flops, flops[1:]))
    assert 0.1e6 <= counts[0] <= 0.2e6 and 9e6 <= counts[-1] <= 13e6, counts
    cfg = config.resolve(config.TrainConfig(model="swin-t", batch_size=1024))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.weight_decay_mode) == ("adamw", 1e-3, 0.05, "decoupled")
    assert cfg.label_smoothing == 0.1 and cfg.grad_clip_norm == 5.0 and cfg.warmup_fraction == pytest.approx(20 / 300)


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown model 'swin-l'"):
        registry.get("swin-l")
    with pytest.raises(UserError, match="swin-c0: window 5 does not divide the 16x16 feature map of stage 1"):
        registry.get("swin-c0").build(10, 32, window_size=5)
    with pytest.raises(UserError, match="swin-t: image size 225 is not a multiple of patch 4"):
        registry.get("swin-t").build(1000, 225)
    with pytest.raises(UserError, match="window 7 does not divide the 60x60"):
        registry.get("swin-t").build(1000, 240)
    with pytest.raises(UserError, match="the 5x5 feature map of stage 1 cannot be halved"):
        registry.get("swin-t").build(1000, 20)
    with pytest.raises(UserError, match="fixed by the variant"):
        registry.get("swin-c0").build(10, 32, depths=(2, 2))
    with pytest.raises(ValueError, match="window 3 does not divide"):
        jax.eval_shape(lambda x: _tiny(window_size=3).init(jax.random.key(0), x), jnp.zeros((1, 16, 16, 3)))
    for args, message in (
        (["--model-kwargs", '{"window_size": 5}'], "window 5 does not divide the 16x16 feature map of stage 1"),
        (["--image-size", "33", "--model-kwargs", '{"drop_path_rate": 0.0}'], "image size 33 is not a multiple of patch 2"),
        (["--image-size", "30"], "--image-size 30 does not fit swin-c0: swin-c0: window 4 does not divide the 15x15"),
    ):
        r = run_cli("scaling.train", "--model", "swin-c0", *args, "--steps", "1", "--workdir", str(tmp_path / "w"))
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and message in r.stderr, r.stderr
        assert not (tmp_path / "w").exists()


def test_forward_matches_timm_with_copied_weights():
    torch, timm = torch_and_timm()
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random norms, biases and bias tables (their inits would hide mistakes)
        for name, p in ref.named_parameters():
            if p.ndim == 1 or "relative_position_bias_table" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    lin = lambda n: {"kernel": sd[f"{n}.weight"].T, "bias": sd[f"{n}.bias"]}  # noqa: E731
    ln = lambda n: {"scale": sd[f"{n}.weight"], "bias": sd[f"{n}.bias"]}  # noqa: E731
    params = {"patch_embed": {"kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
                              "bias": sd["patch_embed.proj.bias"]},
              "patch_norm": ln("patch_embed.norm"), "norm": ln("norm"), "head": lin("head.fc")}
    for i, depth in enumerate(swin.VARIANTS["t"][1]):
        if i:
            params[f"stage{i}_merge_norm"] = ln(f"layers.{i}.downsample.norm")
            params[f"stage{i}_merge_reduction"] = {"kernel": sd[f"layers.{i}.downsample.reduction.weight"].T}
        for j in range(depth):
            t = f"layers.{i}.blocks.{j}"
            params[f"stage{i}_block{j}"] = {
                "norm1": ln(f"{t}.norm1"), "norm2": ln(f"{t}.norm2"),
                "attn": {"qkv": lin(f"{t}.attn.qkv"), "proj": lin(f"{t}.attn.proj"),
                         "relative_position_bias_table": sd[f"{t}.attn.relative_position_bias_table"]},
                "mlp": {"fc1": lin(f"{t}.mlp.fc1"), "fc2": lin(f"{t}.mlp.fc2")}}
    assert count(params) == TIMM_PARAMS["t"]
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = registry.get("swin-t").build(1000, 224).apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close_to_reference(got, expected)
