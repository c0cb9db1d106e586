"""ResNet family: exact timm parameter counts, v1.5 strides, FLOPs (analytic and XLA), ladder, recipe, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from family_checks import (assert_close_to_reference, count, fast_key, random_params, shapes, torch_and_timm,
                           xla_flops)
from scaling import config, optim
from scaling.errors import UserError
from scaling.models import registry, resnet


def _tiny(**kw):
    return resnet.ResNet(num_classes=10, block="basic", depths=(1, 1), widths=(8, 16), stem="cifar", **kw)


# timm resnet{18,34,50,101,152} (= torchvision), 1000 classes, sum of p.numel().
TIMM_PARAMS = {"18": 11_689_512, "34": 21_797_672, "50": 25_557_032, "101": 44_549_160, "152": 60_192_808}


@pytest.mark.parametrize("depth", list(TIMM_PARAMS))
def test_param_count_equals_timm(depth):
    assert count(shapes(registry.get(f"resnet-{depth}").build(1000, 224), 224)) == TIMM_PARAMS[depth]


def test_forward_flops_resnet50_analytic_and_xla():
    spec = registry.get("resnet-50")
    analytic = spec.forward_flops(224, 1000)
    assert analytic / 2 / 1e9 == pytest.approx(4.09, abs=0.01)  # torchvision: 4.09 GMAC
    assert analytic / 2 / 1e9 == pytest.approx(4.1, rel=0.03)
    xla = xla_flops(spec.build(1000, 224), 224)  # valid taps only, plus elementwise ops
    assert xla == pytest.approx(analytic, rel=0.03), (xla, analytic)
    assert registry.get("resnet-18").forward_flops(224, 1000) / 2e9 == pytest.approx(1.81, abs=0.01)


def test_v1_5_stride_sits_in_the_3x3_and_shortcut_is_projected():
    model = registry.get("resnet-50").build(10, 64)
    x = jnp.zeros((1, 64, 64, 3))
    _, state = jax.eval_shape(lambda x: model.init_with_output(
        jax.random.key(0), x, capture_intermediates=True, mutable=["params", "intermediates"]), x)
    inter = state["intermediates"]
    block = inter["layer2_0"]
    assert block["conv1"]["__call__"][0].shape == (1, 16, 16, 128)  # 1x1, stride 1
    assert block["conv2"]["__call__"][0].shape == (1, 8, 8, 128)  # 3x3, stride 2
    assert block["downsample_conv"]["__call__"][0].shape == (1, 8, 8, 512)
    assert "downsample_conv" not in inter["layer2_1"]
    assert inter["layer4_2"]["__call__"][0].shape == (1, 2, 2, 2048)


def test_zero_init_last_norm_and_init_scales():
    params = jax.jit(_tiny().init)(fast_key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    blk = params["layer1_0"]
    assert not np.any(np.asarray(blk["norm2"]["scale"])) and np.all(np.asarray(blk["norm1"]["scale"]) == 1)
    # Kaiming normal, fan-out: var = 2 / (k * k * out).
    k = np.asarray(params["layer2_0"]["conv2"]["kernel"])
    assert np.var(k) == pytest.approx(2 / (9 * k.shape[-1]), rel=0.1)
    assert np.abs(np.asarray(params["head"]["kernel"])).max() <= 1 / math.sqrt(params["head"]["kernel"].shape[0])


def test_group_norm_groups():
    assert resnet.gn_groups(64) == 32 and resnet.gn_groups(2048) == 32
    assert resnet.gn_groups(16) == 8 and resnet.gn_groups(8) == 4  # at least 2 channels a group
    assert resnet.gn_groups(1) == 1


def test_ladder_ranks_sizes_and_cifar_stem():
    ladder = registry.ladder("resnet")
    assert [s.name for s in ladder] == list(resnet.LADDER)
    counts = [count(shapes(s.build(10, 32), 32)) for s in ladder]
    flops = [s.forward_flops(32, 10) for s in ladder]
    assert all(a < b for a, b in zip(flops, flops[1:])) and all(a < b for a, b in zip(counts, counts[1:]))
    assert 0.1e6 <= counts[0] <= 0.3e6 and 9e6 <= counts[-1] <= 12e6
    assert counts[-1] == 11_173_962  # the usual CIFAR ResNet-18
    params = shapes(ladder[0].build(10, 32), 32)
    assert params["conv1"]["kernel"].shape == (3, 3, 3, 8)  # 3x3 stem, no max-pool: stage 1 at 32 px
    assert resnet.resnet_forward_macs(32, 10, "basic", (2, 2, 2, 2), (64, 128, 256, 512), "cifar") == 555_422_720


def test_forward_shapes_dtype_and_drop_path_rng():
    model = _tiny(drop_path_rate=0.5, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    variables = {"params": random_params(model, 16)}
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    # Random (non-zero) residual branches: stochastic depth must depend on the 'dropout' RNG.
    train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, b = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True), variables, x)


def test_recipe():
    cfg = config.resolve(config.TrainConfig(model="resnet-50", batch_size=512))
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.2, 0.9, 1e-4)
    assert (cfg.weight_decay_mode, cfg.label_smoothing) == ("coupled", 0.1)
    small = config.resolve(config.TrainConfig(model="resnet-c2", batch_size=128))
    assert small.lr == 0.05 and small.weight_decay == resnet.LADDER_WEIGHT_DECAY
    params = shapes(registry.get("resnet-c0").build(10, 32), 32)
    decayed = {jax.tree_util.keystr(p) for p, d in jax.tree_util.tree_leaves_with_path(optim.decay_mask(params)) if d}
    assert all(k.endswith("['kernel']") for k in decayed) and any("conv" in k for k in decayed)


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'resnet-99'"):
        registry.get("resnet-99")
    with pytest.raises(UserError, match="fixed by the variant"):
        config.resolve(config.TrainConfig(model="resnet-c0", model_kwargs={"depths": [1, 1, 1, 1]}))
    with pytest.raises(UserError, match="do not fit resnet-c0"):
        config.resolve(config.TrainConfig(model="resnet-c0", model_kwargs={"drop_path": 0.1}))


def test_forward_matches_timm_with_copied_weights():
    torch, timm = torch_and_timm()
    import functools

    ref = timm.create_model("resnet50", pretrained=False, num_classes=1000,
                            norm_layer=functools.partial(torch.nn.GroupNorm, 32)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # random norm affines too (zero-init would hide mistakes)
            base = 1.0 if (p.ndim == 1 and name.endswith("weight")) else 0.0
            p.copy_(base + 0.05 * torch.randn(p.shape, generator=gen))
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}

    def conv(name):
        return np.transpose(sd[f"{name}.weight"], (2, 3, 1, 0))

    def norm(name):
        return {"scale": sd[f"{name}.weight"], "bias": sd[f"{name}.bias"]}

    params = {"conv1": {"kernel": conv("conv1")}, "norm1": norm("bn1"),
              "head": {"kernel": sd["fc.weight"].T, "bias": sd["fc.bias"]}}
    for stage, depth in enumerate(resnet.VARIANTS["50"][1], 1):
        for j in range(depth):
            t = f"layer{stage}.{j}"
            blk = {f"conv{i}": {"kernel": conv(f"{t}.conv{i}")} for i in (1, 2, 3)}
            blk.update({f"norm{i}": norm(f"{t}.bn{i}") for i in (1, 2, 3)})
            if j == 0:
                blk["downsample_conv"] = {"kernel": conv(f"{t}.downsample.0")}
                blk["downsample_norm"] = norm(f"{t}.downsample.1")
            params[f"layer{stage}_{j}"] = blk
    model = registry.get("resnet-50").build(1000, 224)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = np.asarray(model.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1))))
    assert_close_to_reference(got, expected)
