"""NFNets: normalizer-free ResNets (Brock et al. 2021, "NF21"), as the DeepMind reference.

Faithful to ``deepmind-research/nfnets`` (``nfnet.py``, ``base.py``):

- Scaled weight-standardised convs (``WSConv``): per output channel over the
  fan-in of the HWIO ``kernel``, ``scale = rsqrt(max(var * fan_in, 1e-4)) * gain``,
  learnable ``gain`` (init 1) and ``bias`` (init 0); TF-style SAME padding.
- GELU (tanh form, ``jax.nn.gelu``'s default, as DM) scaled by gamma = 1.7015.
- Pre-activation bottleneck blocks with two grouped 3x3 convs (group width
  128; mid = int(0.5 * out) rounded down to a multiple of the group width),
  squeeze-excite (ratio 0.5, ReLU, sigmoid, x2; plain Dense), per-example
  stochastic depth without 1/keep rescaling (rate rising linearly to 0.25),
  SkipInit ``skip_gain`` (init 0), residual scale alpha = 0.2 and input scale
  beta = 1 / expected_std. The first block of every stage is a transition
  block: its shortcut is [2x2 avg-pool] -> 1x1 WS conv on act(h) * beta.
- Stem: 3x3 convs to 16, 32, 64, width0/2 with strides 2, 1, 1, 2, no
  activation after the last. Head: 1x1 WS conv to 2x the last width, act,
  global average pool, dropout, ``head`` Dense with N(0, 0.01) kernel init.

Parameter names follow the repo's optimizer masks: every weight matrix is a
leaf called ``kernel`` (WS convs, SE, ``head``) and is weight-decayed; gains,
biases and ``skip_gain`` are not; AGC clips all but ``head/kernel``.

Besides F0-F7 and the "+" variants (ImageNet sizes, ``ladder_rank=None``), a
CIFAR-sized ladder (see ``LADDER``) keeps the block design and the F-variant
depth patterns but multiplies every width (stem, stages, group width) by a
factor, and uses the ``"small"`` stem (only the last stem conv strided) for 32x32 inputs
(``"small-early"``, only the first strided, is a cheaper option; see STEM_STRIDES).
Deliberate deviations, each a named option: ``Arch.stem`` (``"imagenet"`` is
the reference), ``Arch.scaled(width_mult)`` (the reference is unscaled),
``drop_rate`` / ``stochdepth_rate`` (the ladder uses reduced values, see
``LADDER_REGULARIZATION``), all overridable through ``build(**overrides)``;
and ``conv_impl`` (how grouped convs are lowered, same numbers; see
``scaling.models.grouped_conv``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scaling.models import grouped_conv
from scaling.models.registry import ModelSpec, register

GELU_GAMMA = 1.7015043497085571  # std(gamma * gelu(N(0,1))) = 1 (DM base.nonlinearities)
ALPHA = 0.2
SE_RATIO = 0.5
GROUP_WIDTH = 128
STOCHDEPTH_RATE = 0.25  # NF21 App. A.1 (all variants)
WS_EPS = 1e-4
HEAD_INIT_STD = 0.01
STEM_WIDTHS = (16, 32, 64)  # the fourth stem conv has width0 / 2 channels
# "small": for 32x32 inputs only the last stem conv is strided, so the stages
# run at 16, 8, 4, 2 px (the reference stem would leave 1x1 maps at 32 px).
# "small-early": the same 2x reduction, taken by the first conv instead (the
# ImageNet stem without its last stride), so three of the four stem convs run
# at 16 px. On the 2-core CPU, nfnet-f0-w0.125 at batch 128 (stem [8, 8, 8]):
# 242 -> 207 ms per train step, or 218 ms with a [16, 16, 16] stem (in-process
# A/B). Its CIFAR-10 accuracy is not yet measured; the ladder keeps "small".
STEM_STRIDES = {"imagenet": (2, 1, 1, 2), "small": (1, 1, 1, 2), "small-early": (2, 1, 1, 1)}
STAGE_STRIDES = (1, 2, 2, 2)
BASE_WIDTHS = (256, 512, 1536, 1536)
PLUS_WIDTHS = (384, 768, 2048, 2048)


def scaled_gelu(x):
    return jax.nn.gelu(x) * GELU_GAMMA


def _haiku_linear_init(key, shape, dtype=jnp.float32):
    """hk.Linear's default: truncated normal (+-2 std, uncorrected), std 1/sqrt(fan_in)."""
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) / np.sqrt(shape[0])


def _ws_stats(kernel):
    """Per output channel: the mean, and fan_in * var (two-pass variance)."""
    fan_in = math.prod(kernel.shape[:-1])
    mean = jnp.mean(kernel, axis=(0, 1, 2))
    centred = kernel - mean
    return mean, jnp.mean(centred * centred, axis=(0, 1, 2)) * fan_in


@jax.custom_vjp
def standardize(kernel: jax.Array, gain: jax.Array) -> jax.Array:
    """Scaled WS: (W - mean) * gain / sqrt(fan_in * var), per output channel.

    The backward pass is written out (``_standardize_bwd``) because it runs over
    every weight each step: autodiff's version made XLA:CPU take several slow
    reductions; this one is two sums and one elementwise pass. Measured on the
    2-core CPU, NFNet-F0 train step at 64 px: batch 2 455 -> 343 ms, batch 32
    1624 -> 1526 ms. Same values as autodiff (tested in float64).
    """
    mean, fan_in_var = _ws_stats(kernel)
    return (kernel - mean) * (jax.lax.rsqrt(jnp.maximum(fan_in_var, WS_EPS)) * gain)


def _standardize_fwd(kernel, gain):
    mean, fan_in_var = _ws_stats(kernel)
    r = jax.lax.rsqrt(jnp.maximum(fan_in_var, WS_EPS))
    return (kernel - mean) * (r * gain), (kernel, gain, mean, r, fan_in_var < WS_EPS)


def _standardize_bwd(residuals, g):
    # With c = W - mean, S = sum_fan_in(g * c):
    #   dW = r * gain * (g - mean_fan_in(g) - r^2 * S * c),  d gain = r * S;
    # where the eps floor is active r is a constant and the r^2 term drops.
    kernel, gain, mean, r, floored = residuals
    centred = kernel - mean
    sum_g = jnp.sum(g, axis=(0, 1, 2))
    sum_gc = jnp.sum(g * centred, axis=(0, 1, 2))
    r2 = jnp.where(floored, 0.0, r * r)
    fan_in = math.prod(kernel.shape[:-1])
    d_kernel = (r * gain) * (g - sum_g / fan_in - r2 * sum_gc * centred)
    return d_kernel, r * sum_gc


standardize.defvjp(_standardize_fwd, _standardize_bwd)


class WSConv(nn.Module):
    """Conv2D with scaled weight standardisation, affine gain and bias (DM ``WSConv2D``)."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    groups: int = 1
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
            (k, k, cin // self.groups, self.features),
        )
        gain = self.param("gain", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        w = standardize(kernel, gain).astype(self.dtype)
        y = grouped_conv.conv2d(x.astype(self.dtype), w, self.stride, self.groups, self.conv_impl)
        return y + bias.astype(self.dtype)


class SqueezeExcite(nn.Module):
    """x * 2 * sigmoid(fc1(relu(fc0(mean_hw(x))))), hidden = int(ratio * channels)."""

    se_ratio: float = SE_RATIO
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        ch = x.shape[-1]
        hidden = max(1, int(ch * self.se_ratio))
        h = jnp.mean(x, axis=(1, 2))
        h = nn.Dense(hidden, kernel_init=_haiku_linear_init, dtype=self.dtype, name="fc0")(h)
        h = nn.Dense(ch, kernel_init=_haiku_linear_init, dtype=self.dtype, name="fc1")(nn.relu(h))
        return x * (2.0 * jax.nn.sigmoid(h)[:, None, None, :])


def block_mid_width(out_ch: int, group_width: int) -> int:
    """Bottleneck width: int(0.5 * out) rounded down to whole groups (at least one)."""
    return max(int(0.5 * out_ch) // group_width, 1) * group_width


class NFBlock(nn.Module):
    """Pre-activation NF bottleneck; returns h + alpha * skip_gain * branch(act(h) * beta)."""

    out_ch: int
    group_width: int = GROUP_WIDTH
    stride: int = 1
    beta: float = 1.0
    alpha: float = ALPHA
    stochdepth_rate: float = 0.0
    se_ratio: float = SE_RATIO
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda *a, **kw: WSConv(*a, dtype=self.dtype, conv_impl=self.conv_impl, **kw)  # noqa: E731
        in_ch = x.shape[-1]
        mid = block_mid_width(self.out_ch, self.group_width)
        groups = mid // self.group_width
        out = scaled_gelu(x) * self.beta
        if self.stride > 1 or in_ch != self.out_ch:  # transition block
            shortcut = out
            if self.stride > 1:  # haiku's SAME avg-pool averages over valid pixels only
                shortcut = nn.avg_pool(out, (2, 2), (2, 2), padding="SAME", count_include_pad=False)
            shortcut = conv(self.out_ch, 1, name="conv_shortcut")(shortcut)
        else:
            shortcut = x
        out = conv(mid, 1, name="conv0")(out)
        out = conv(mid, 3, self.stride, groups, name="conv1")(scaled_gelu(out))
        out = conv(mid, 3, 1, groups, name="conv1b")(scaled_gelu(out))
        out = conv(self.out_ch, 1, name="conv2")(scaled_gelu(out))
        out = SqueezeExcite(self.se_ratio, dtype=self.dtype, name="se")(out)
        if train and 0.0 < self.stochdepth_rate < 1.0:
            # Per-example Bernoulli keep mask, no 1/keep rescale (DM StochDepth).
            r = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1, 1, 1), out.dtype)
            out = out * jnp.floor(1.0 - self.stochdepth_rate + r)
        skip_gain = self.param("skip_gain", nn.initializers.zeros, ())
        return out * (skip_gain.astype(out.dtype) * self.alpha) + shortcut


@dataclasses.dataclass(frozen=True)
class Arch:
    """Everything that fixes an NFNet's shape (and its regularisation defaults)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...] = BASE_WIDTHS
    group_width: int = GROUP_WIDTH
    stem_widths: tuple[int, ...] = STEM_WIDTHS
    stem: str = "imagenet"
    drop_rate: float = 0.2
    stochdepth_rate: float = STOCHDEPTH_RATE
    final_conv_mult: int = 2
    se_ratio: float = SE_RATIO

    def __post_init__(self):
        # Checked here because a wrong-length list from --model-kwargs would
        # otherwise be zipped short against the stem strides, silently.
        for name in ("depths", "widths", "stem_widths"):
            value = tuple(getattr(self, name))
            if not value or not all(isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f"{name} must be positive integers, got {list(value)}")
            object.__setattr__(self, name, value)
        if len(self.depths) != len(self.widths) or len(self.depths) > len(STAGE_STRIDES):
            raise ValueError(f"depths and widths need the same number of stages, at most {len(STAGE_STRIDES)}")
        if self.stem not in STEM_STRIDES:
            raise ValueError(f"unknown stem {self.stem!r}; choose from {sorted(STEM_STRIDES)}")
        if len(self.stem_widths) != len(STEM_STRIDES[self.stem]) - 1:
            raise ValueError(
                f"stem_widths needs {len(STEM_STRIDES[self.stem]) - 1} entries (the last stem conv "
                f"has widths[0] // 2 channels), got {list(self.stem_widths)}"
            )

    def scaled(self, width_mult: float) -> "Arch":
        """Every channel count (stem, stages, group width) times ``width_mult``."""
        r = lambda c: max(1, int(round(c * width_mult)))  # noqa: E731
        return dataclasses.replace(
            self,
            widths=tuple(r(c) for c in self.widths),
            group_width=r(self.group_width),
            stem_widths=tuple(r(c) for c in self.stem_widths),
        )


class BlockPlan(NamedTuple):
    out_ch: int
    stride: int
    beta: float  # 1 / expected std of the block's input at init
    expected_var_out: float  # predicted variance of the block's output (skip_gain = 1)
    stochdepth_rate: float


def block_plan(arch: Arch, alpha: float = ALPHA) -> list[BlockPlan]:
    """Per-block settings, as DM's NFNet constructor derives them.

    beta = 1 / expected_std; expected_std is reset to 1 after a stage's first
    (transition) block and grows as sqrt(std^2 + alpha^2) after every block.
    The stochastic-depth rate rises linearly from 0 with the global block index.
    """
    plan, index, expected_std, num_blocks = [], 0, 1.0, sum(arch.depths)
    for width, depth, stride in zip(arch.widths, arch.depths, STAGE_STRIDES):
        for j in range(depth):
            beta = 1.0 / expected_std
            if j == 0:  # a transition block resets the variance, then grows it once
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + alpha**2)
            plan.append(
                BlockPlan(width, stride if j == 0 else 1, beta, expected_std**2, arch.stochdepth_rate * index / num_blocks)
            )
            index += 1
    return plan


class NFNet(nn.Module):
    num_classes: int
    arch: Arch
    alpha: float = ALPHA
    dtype: jnp.dtype = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool = False):
        a = self.arch
        conv = lambda *args, **kw: WSConv(*args, dtype=self.dtype, conv_impl=self.conv_impl, **kw)  # noqa: E731
        x = x.astype(self.dtype)
        stem_ch = (*a.stem_widths, a.widths[0] // 2)
        for i, (ch, s) in enumerate(zip(stem_ch, STEM_STRIDES[a.stem])):
            if i:
                x = scaled_gelu(x)
            x = conv(ch, 3, s, name=f"stem_conv{i}")(x)
        for index, b in enumerate(block_plan(a, self.alpha)):
            x = NFBlock(
                out_ch=b.out_ch,
                group_width=a.group_width,
                stride=b.stride,
                beta=b.beta,
                alpha=self.alpha,
                stochdepth_rate=b.stochdepth_rate,
                se_ratio=a.se_ratio,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                name=f"block{index}",
            )(x, train)
            self.sow("intermediates", "residual", x)
        x = scaled_gelu(conv(a.final_conv_mult * a.widths[-1], 1, name="final_conv")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(a.drop_rate, deterministic=not train)(x)
        head = nn.Dense(
            self.num_classes, kernel_init=nn.initializers.normal(HEAD_INIT_STD), dtype=self.dtype, name="head"
        )
        return head(x).astype(jnp.float32)


def forward_macs(arch: Arch, image_size: int, num_classes: int) -> int:
    """Multiply-accumulates of one forward pass, counted like DM ``count_flops``.

    Convs: k*k*C_in/groups*C_out per output pixel (padding taps included),
    SE: its two matmuls, head: final conv + classifier. Output sizes use
    ceil(size / stride) (DM divides as floats; equal for sizes divisible by 32).
    """
    conv = lambda cin, cout, k, size, g=1: k * k * (cin // g) * cout * size * size  # noqa: E731
    macs, size, ch = 0, image_size, 3
    for cout, s in zip((*arch.stem_widths, arch.widths[0] // 2), STEM_STRIDES[arch.stem]):
        size = -(-size // s)
        macs += conv(ch, cout, 3, size)
        ch = cout
    for b in block_plan(arch):
        mid = block_mid_width(b.out_ch, arch.group_width)
        g = mid // arch.group_width
        macs += conv(ch, mid, 1, size)
        out_size = -(-size // b.stride)
        macs += 2 * conv(mid, mid, 3, out_size, g)
        if b.stride > 1 or ch != b.out_ch:
            macs += conv(ch, b.out_ch, 1, out_size)
        hidden = max(1, int(b.out_ch * arch.se_ratio))
        macs += 2 * hidden * b.out_ch
        macs += conv(mid, b.out_ch, 1, out_size)
        size, ch = out_size, b.out_ch
    final = arch.final_conv_mult * ch
    return macs + conv(ch, final, 1, size) + final * num_classes


# --- The reference variants (DM base.nfnet_params). ---------------------------

VARIANTS: dict[str, tuple[Arch, int, int]] = {}  # name -> (arch, train px, test px)
for _k, (_d, _px, _drop) in {
    "f0": ((1, 2, 6, 3), (192, 256), 0.2),
    "f1": ((2, 4, 12, 6), (224, 320), 0.3),
    "f2": ((3, 6, 18, 9), (256, 352), 0.4),
    "f3": ((4, 8, 24, 12), (320, 416), 0.4),
    "f4": ((5, 10, 30, 15), (384, 512), 0.5),
    "f5": ((6, 12, 36, 18), (416, 544), 0.5),
    "f6": ((7, 14, 42, 21), (448, 576), 0.5),
    "f7": ((8, 16, 48, 24), (480, 608), 0.5),
}.items():
    VARIANTS[f"nfnet-{_k}"] = (Arch(depths=_d, drop_rate=_drop), *_px)
    VARIANTS[f"nfnet-{_k}+"] = (Arch(depths=_d, widths=PLUS_WIDTHS, drop_rate=_drop), *_px)

# --- The CIFAR-sized ladder. ---------------------------------------------------

# Short budgets (fractions of an epoch to tens of epochs) underfit rather than
# overfit, so the ladder runs with much lighter regularisation than ImageNet's
# 360-epoch recipe (dropout 0.2-0.5, stochastic depth 0.25). Override with
# model_kwargs drop_rate / stochdepth_rate.
LADDER_REGULARIZATION = dict(drop_rate=0.0, stochdepth_rate=0.0)

# name -> (F-variant depth pattern, width multiplier); all use the small stem.
LADDER: dict[str, tuple[str, float]] = {
    "nfnet-f0-w0.125": ("f0", 0.125),
    "nfnet-f1-w0.125": ("f1", 0.125),
    "nfnet-f0-w0.25": ("f0", 0.25),
    "nfnet-f1-w0.25": ("f1", 0.25),
    "nfnet-f0-w0.5": ("f0", 0.5),
    "nfnet-f1-w0.5": ("f1", 0.5),
}


def ladder_arch(depth_pattern: str, width_mult: float) -> Arch:
    base = VARIANTS[f"nfnet-{depth_pattern}"][0]
    return dataclasses.replace(base.scaled(width_mult), stem="small", **LADDER_REGULARIZATION)


def agc_clip_for_batch(batch_size: int) -> float:
    """AGC lambda: NF21's 0.01 at batch >= 1024, growing as 1/sqrt(batch) below.

    NF21 (section 4.1, Fig. 3) finds the best lambda shrinks as the batch grows
    and uses 0.01 for batches 1024-4096. Below 1024 the minibatch gradient norm
    is dominated by noise, which grows as 1/sqrt(batch); scaling lambda the
    same way keeps the fraction of clipped units roughly constant instead of
    clipping nearly every unit at small batches. Batch 256 -> 0.02, 128 -> 0.028,
    32 -> 0.057 (inside NF21's ablation grid 0.01-0.16).
    """
    return 0.01 * math.sqrt(max(1024 / batch_size, 1.0))


def recipe(batch_size: int) -> dict:
    """NF21 ImageNet recipe: SGD-Nesterov 0.9, lr 0.1*B/256, coupled wd 2e-5, LS 0.1, AGC."""
    return dict(
        optimizer="sgd",
        lr=0.1 * batch_size / 256,
        momentum=0.9,
        weight_decay=2e-5,
        weight_decay_mode="coupled",
        label_smoothing=0.1,
        agc_clip=agc_clip_for_batch(batch_size),
        warmup_fraction=0.05,
    )


def _builder(arch: Arch):
    def build(num_classes: int, image_size: int, *, dtype=jnp.float32, conv_impl: str = "auto", **overrides):
        """``overrides``: any ``Arch`` field (e.g. drop_rate, stochdepth_rate, stem)."""
        return NFNet(num_classes=num_classes, arch=dataclasses.replace(arch, **overrides), dtype=dtype, conv_impl=conv_impl)

    return build


def _register(name: str, arch: Arch, image_size: int, description: str, ladder_rank: int | None) -> None:
    register(
        ModelSpec(
            name=name,
            family="nfnet",
            build=_builder(arch),
            forward_flops=lambda image_size, num_classes, _a=arch: 2 * forward_macs(_a, image_size, num_classes),
            recipe=recipe,
            default_image_size=image_size,
            description=description,
            ladder_rank=ladder_rank,
        )
    )


for _name, (_arch, _train_px, _test_px) in VARIANTS.items():
    _register(
        _name,
        _arch,
        _train_px,
        f"NFNet-{_name[6:].upper()} (NF21/DM), depths {_arch.depths}, widths {_arch.widths}, "
        f"train/test {_train_px}/{_test_px} px",
        None,
    )

for _rank, (_name, (_pattern, _mult)) in enumerate(LADDER.items()):
    _arch = ladder_arch(_pattern, _mult)
    _register(
        _name,
        _arch,
        32,
        f"NFNet-{_pattern.upper()} depths {_arch.depths}, widths x{_mult} {_arch.widths}, "
        f"group width {_arch.group_width}, small stem, no dropout/stoch-depth (CIFAR ladder)",
        _rank,
    )
