"""MobileViT (Mehta & Rastegari 2022), v1, as timm ``mobilevit_{xxs,xs,s}``.

- Stem: 3x3/2 conv -> norm -> SiLU (16 channels).
- Five stages: a MobileNetV2 inverted residual block (stage 1), three of them
  (stage 2, the first strided), and for stages 3-5 one strided inverted
  residual followed by a MobileViT block. Inverted residual: 1x1 conv to
  ``expansion`` x input channels -> norm -> SiLU, depthwise 3x3 (the stride)
  -> norm -> SiLU, 1x1 conv -> norm (linear output); identity shortcut where
  input and output shapes agree (its last norm starts at scale 0, timm
  ``zero_init_last``), none otherwise.
- MobileViT block: local 3x3 conv -> norm -> SiLU, 1x1 conv to the
  transformer width d (no bias, no norm); unfold into 2 x 2 patches, so that
  each of the 4 pixel positions of a patch is one sequence over the N patches;
  L pre-LN transformer blocks (4 heads, qkv bias, MLP ratio 2 with SiLU,
  LayerNorm eps 1e-5) and a LayerNorm; fold back; 1x1 conv to the block's
  channels -> norm -> SiLU; fuse: concat with the block input, 3x3 conv ->
  norm -> SiLU. Where the map is not a multiple of the patch, it is resized
  (bilinear, half-pixel centres) up to the next multiple before unfolding and
  back after folding, as timm does (at 224 px the last stage's 7 x 7 map).
- 1x1 conv to 4x the last width -> norm -> SiLU, global average pool,
  ``head``. Convs have no bias, init as timm's ByobNet: Kaiming normal with
  fan-out k*k*out/groups, Dense N(0, 0.01).

Deviation (as the ResNet family): GroupNorm (up to 32 groups, at least 2
channels a group, eps 1e-5) where the reference has BatchNorm: the train step
has no place for running statistics; parameter counts are unchanged.

CIFAR ladder ``mobilevit-c0`` ... ``mobilevit-c5``: the XXS/XS/S channel
plans scaled by a width multiplier (channels rounded to multiples of 8, as
timm ``make_divisible``), with a small-image stem: stem and stage 2 unstrided,
so 32 px inputs give 32, 32, 16, 8, 4 px stages (the MobileViT blocks see 64,
16 and 4 patches).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scaling.errors import UserError
from scaling.models.layers import Block, block_macs, conv_macs, gn_groups
from scaling.models.registry import ModelSpec, register

NORM_EPS = 1e-5
LN_EPS = 1e-5  # torch's LayerNorm default, as timm's MobileViT
NUM_HEADS = 4
MLP_RATIO = 2.0
PATCH = 2
linear_init = nn.initializers.normal(stddev=0.01)  # timm ByobNet _init_weights


def _conv_init(groups: int):
    """Kaiming normal over fan-out k*k*out/groups (timm ByobNet ``_init_weights``)."""
    def init(key, shape, dtype=jnp.float32):
        kh, kw, _, out = shape
        return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 * groups / (kh * kw * out))
    return init


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm ``make_divisible``: round to the nearest multiple, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvNormAct(nn.Module):
    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: bool = True
    norm: bool = True
    zero_init_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = (self.kernel - 1) // 2
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride, padding=((p, p), (p, p)),
                    feature_group_count=self.groups, use_bias=False, kernel_init=_conv_init(self.groups),
                    dtype=self.dtype, name="conv")(x)
        if self.norm:
            x = nn.GroupNorm(num_groups=gn_groups(self.features), epsilon=NORM_EPS, dtype=self.dtype, name="norm",
                             scale_init=nn.initializers.zeros if self.zero_init_norm else nn.initializers.ones)(x)
        return nn.silu(x) if self.act else x


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, linear 1x1; identity shortcut where shapes agree."""

    features: int
    stride: int
    expansion: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        mid = make_divisible(x.shape[-1] * self.expansion)
        residual = self.stride == 1 and x.shape[-1] == self.features
        y = ConvNormAct(mid, 1, dtype=self.dtype, name="conv1_1x1")(x)
        y = ConvNormAct(mid, 3, self.stride, groups=mid, dtype=self.dtype, name="conv2_kxk")(y)
        y = ConvNormAct(self.features, 1, act=False, zero_init_norm=residual, dtype=self.dtype, name="conv3_1x1")(y)
        return x + y if residual else y


def unfold(x, patch: int):
    """(B, H, W, C) -> (B * patch^2, N, C): one sequence over the N patches per pixel position in a patch."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b * patch * patch, (h // patch) * (w // patch), c)


def fold(x, patch: int, h: int, w: int):
    """Inverse of ``unfold``."""
    bp, _, c = x.shape
    b = bp // (patch * patch)
    x = x.reshape(b, patch, patch, h // patch, w // patch, c).transpose(0, 3, 1, 4, 2, 5)
    return x.reshape(b, h, w, c)


def _resize(x, h: int, w: int):
    """Bilinear, half-pixel centres, no antialiasing (torch ``interpolate(align_corners=False)``)."""
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), "bilinear", antialias=False)


class MobileViTBlock(nn.Module):
    features: int
    dim: int
    depth: int
    patch: int = PATCH
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        shortcut = x
        y = ConvNormAct(x.shape[-1], 3, dtype=self.dtype, name="conv_kxk")(x)
        y = ConvNormAct(self.dim, 1, act=False, norm=False, dtype=self.dtype, name="conv_1x1")(y)
        b, h, w, _ = y.shape
        nh, nw = -(-h // self.patch) * self.patch, -(-w // self.patch) * self.patch
        if (nh, nw) != (h, w):
            y = _resize(y, nh, nw)
        t = unfold(y, self.patch)
        for i in range(self.depth):
            t = Block(NUM_HEADS, int(self.dim * MLP_RATIO), drop=self.drop, attn_drop=self.attn_drop,
                      drop_path=self.drop_path, norm_eps=LN_EPS, act=nn.silu, kernel_init=linear_init,
                      dtype=self.dtype, name=f"transformer{i}")(t, train)
        t = nn.LayerNorm(LN_EPS, dtype=self.dtype, name="norm")(t)
        y = fold(t, self.patch, nh, nw)
        if (nh, nw) != (h, w):
            y = _resize(y, h, w)
        y = ConvNormAct(self.features, 1, dtype=self.dtype, name="conv_proj")(y)
        return ConvNormAct(self.features, 3, dtype=self.dtype, name="conv_fusion")(
            jnp.concatenate([shortcut, y], axis=-1))


class MobileViT(nn.Module):
    """``channels``: stem, then the five stages; ``dims``/``depths``: the three MobileViT blocks."""

    num_classes: int
    channels: Sequence[int] = (16, 32, 64, 96, 128, 160)
    dims: Sequence[int] = (144, 192, 240)
    depths: Sequence[int] = (2, 4, 3)
    expansion: float = 4.0
    num_features: int = 640
    stem: str = "imagenet"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        for d in self.dims:
            if d % NUM_HEADS:
                raise ValueError(f"transformer width {d} is not divisible by {NUM_HEADS} heads")
        cifar = self.stem == "cifar"
        x = ConvNormAct(self.channels[0], 3, 1 if cifar else 2, dtype=self.dtype, name="stem")(x.astype(self.dtype))
        x = InvertedResidual(self.channels[1], 1, self.expansion, self.dtype, name="stage1_ir0")(x)
        for j in range(3):
            stride = 1 if (j or cifar) else 2
            x = InvertedResidual(self.channels[2], stride, self.expansion, self.dtype, name=f"stage2_ir{j}")(x)
        for i, (ch, dim, depth) in enumerate(zip(self.channels[3:], self.dims, self.depths)):
            x = InvertedResidual(ch, 2, self.expansion, self.dtype, name=f"stage{i + 3}_ir0")(x)
            x = MobileViTBlock(ch, dim, depth, drop=self.dropout, attn_drop=self.attn_dropout,
                               drop_path=self.drop_path_rate, dtype=self.dtype, name=f"stage{i + 3}_mvit")(x, train)
        x = ConvNormAct(self.num_features, 1, dtype=self.dtype, name="final_conv")(x).mean(axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=linear_init, dtype=self.dtype, name="head")(x).astype(jnp.float32)


def _out(size: int, stride: int) -> int:
    return (size + 2 - 3) // stride + 1


def mobilevit_forward_macs(image_size: int, num_classes: int, channels, dims, depths, expansion: float,
                           num_features: int, stem: str) -> int:
    """Multiply-accumulates of every conv (padding taps included), transformer block
    (attention over the N patches of each pixel position) and the head; the
    resizes, norms and activations are left out."""
    cifar = stem == "cifar"
    size = _out(image_size, 1 if cifar else 2)
    macs = conv_macs(3, channels[0], 3, size, size)
    ch = channels[0]

    def ir(ch, out, stride, size):
        mid = make_divisible(ch * expansion)
        new = _out(size, stride)
        return (conv_macs(ch, mid, 1, size, size) + conv_macs(mid, mid, 3, new, new, groups=mid)
                + conv_macs(mid, out, 1, new, new)), new

    plan = [(channels[1], 1), (channels[2], 1 if cifar else 2), (channels[2], 1), (channels[2], 1)]
    for out, stride in plan:
        m, size = ir(ch, out, stride, size)
        macs, ch = macs + m, out
    for out, dim, depth in zip(channels[3:], dims, depths):
        m, size = ir(ch, out, 2, size)
        macs, ch = macs + m, out
        side = -(-size // PATCH) * PATCH
        tokens, n = side * side, (side // PATCH) ** 2
        macs += conv_macs(ch, ch, 3, size, size) + conv_macs(ch, dim, 1, size, size)
        macs += depth * block_macs(tokens, dim, int(dim * MLP_RATIO), attn_tokens=n)
        macs += conv_macs(dim, ch, 1, size, size) + conv_macs(2 * ch, ch, 3, size, size)
    return macs + conv_macs(ch, num_features, 1, size, size) + num_features * num_classes


def mobilevit_recipe(batch_size: int) -> dict:
    """MobileViT (ml-cvnets): AdamW (0.9, 0.999), peak lr 2e-3 x batch/1024, decoupled
    weight decay 0.01, warmup 3k of ~375k iterations then cosine (to 0 here; the
    reference stops at 2e-4), label smoothing 0.1, no clipping. The reference's
    multi-scale sampler is off."""
    return dict(optimizer="adamw", lr=2e-3 * batch_size / 1024, b1=0.9, b2=0.999, weight_decay=0.01,
                weight_decay_mode="decoupled", warmup_fraction=0.008, label_smoothing=0.1, grad_clip_norm=0.0,
                agc_clip=0.0, mixup_alpha=0.0)


# name: (stem + five stage channels, transformer dims, expansion, final features); timm model_cfgs.
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float, int]] = {
    "xxs": ((16, 16, 24, 48, 64, 80), (64, 80, 96), 2.0, 320),
    "xs": ((16, 32, 48, 64, 80, 96), (96, 120, 144), 4.0, 384),
    "s": ((16, 32, 64, 96, 128, 160), (144, 192, 240), 4.0, 640),
}
DEPTHS = (2, 4, 3)
# CIFAR ladder, smallest first: (base variant, width multiplier), small-image stem.
LADDER: dict[str, tuple[str, float]] = {
    "c0": ("xxs", 0.25), "c1": ("xxs", 0.5), "c2": ("xxs", 1.0), "c3": ("xs", 1.0), "c4": ("s", 1.0), "c5": ("s", 1.5),
}


def scaled(variant: str, multiplier: float):
    channels, dims, expansion, features = VARIANTS[variant]
    if multiplier == 1.0:
        return channels, dims, expansion, features
    m = lambda c: make_divisible(c * multiplier)  # noqa: E731
    return tuple(map(m, channels)), tuple(map(m, dims)), expansion, m(features)


def _register(name: str, channels, dims, expansion: float, features: int, stem: str, image_size: int,
              rank) -> None:
    def build(num_classes: int, image_size: int, **kw) -> MobileViT:
        fixed = {"channels", "dims", "depths", "expansion", "num_features", "stem"} & set(kw)
        if fixed:
            raise UserError(f"{name}: {', '.join(sorted(fixed))} is fixed by the variant; pick another model")
        if image_size < (8 if stem == "cifar" else 32):
            raise UserError(f"{name}: image size {image_size} is too small for its five stages")
        return MobileViT(num_classes=num_classes, channels=channels, dims=dims, depths=DEPTHS, expansion=expansion,
                         num_features=features, stem=stem, **kw)

    register(ModelSpec(
        name=name, family="mobilevit", build=build,
        forward_flops=lambda image_size, num_classes: 2 * mobilevit_forward_macs(
            image_size, num_classes, channels, dims, DEPTHS, expansion, features, stem),
        recipe=mobilevit_recipe, default_image_size=image_size, ladder_rank=rank,
        description=f"MobileViT channels {list(channels)}, transformer widths {list(dims)}, {stem} stem",
    ))


for _v in VARIANTS:
    _register(f"mobilevit-{_v}", *VARIANTS[_v], "imagenet", 256, None)
for _rank, (_v, (_base, _mult)) in enumerate(LADDER.items()):
    _register(f"mobilevit-{_v}", *scaled(_base, _mult), "cifar", 32, _rank)
